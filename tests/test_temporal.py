"""Temporal metrics (metrics/temporal.py): tOF and the warping error are 0 where they must be and grow with
flicker; ``superres metrics`` scores folders of clips and ``superres eval --temporal`` adds the columns."""

from __future__ import annotations

import numpy as np
import pytest

from superres.metrics.temporal import GroundTruthFlows, crop_8x8, temporal_scores, tof, tof_per_pair, warping_error


@pytest.fixture(scope="module")
def pan(photos) -> list[np.ndarray]:
    """Eight 48x64 frames of a slow diagonal pan over a bundled photo, uint8 RGB."""
    photo = (photos["chelsea"][..., :3] * 255).round().astype(np.uint8)
    return [np.ascontiguousarray(photo[90 + i:138 + i, 180 + 2 * i:244 + 2 * i]) for i in range(8)]


def _flicker(frames: list[np.ndarray], amount: float, seed: int = 0) -> list[np.ndarray]:
    """Each frame with its own noise (a per-frame GAN's shimmer), ``amount`` levels of 255 at most."""
    rng = np.random.default_rng(seed)
    return [np.clip(f + rng.uniform(-amount, amount, f.shape), 0, 255).round().astype(np.uint8) for f in frames]


def test_tof_is_zero_for_identical_clips_and_grows_with_flicker(pan):
    assert tof(pan, pan) == 0.0 and len(tof_per_pair(pan, pan)) == len(pan) - 2 * 2 - 1  # TecoGAN's cutfr = 2
    scores = [tof(pan, _flicker(pan, amount)) for amount in (4, 16, 48)]
    assert 0 < scores[0] < scores[1] < scores[2], scores
    assert len(tof_per_pair(pan, pan, cut=0)) == len(pan) - 1


def test_warping_error_is_near_zero_for_a_still_clip_and_grows_with_flicker(pan):
    still = [pan[0]] * 5
    assert warping_error(still, still) < 1e-6  # Farneback finds near-zero motion (1e-7 here), not exactly none
    flows = GroundTruthFlows(pan)
    base = warping_error(pan, pan, flows=flows)  # the ground truth's own residual under its flow: small
    scores = [warping_error(pan, _flicker(pan, amount), flows=flows) for amount in (4, 16, 48)]
    assert 0 < base < scores[0] < scores[1] < scores[2], (base, scores)
    assert temporal_scores(pan, pan, flows=flows) == {"tof": 0.0, "warp": base}
    with pytest.raises(ValueError, match="another ground-truth clip"):
        warping_error(still, still, flows=flows)


def test_tecogan_crop_and_clip_checks(pan):
    assert crop_8x8(np.zeros((576, 720))).shape == (544, 704)  # Vid4: 16 and 16 removed, multiples of 32
    assert crop_8x8(np.zeros((48, 64))).shape == (32, 32)
    with pytest.raises(ValueError, match="at least 6 frames"):
        tof(pan[:5], pan[:5])
    with pytest.raises(ValueError, match="7 frames, the ground truth 8"):
        warping_error(pan, pan[:7])


def test_metrics_and_eval_score_clip_folders(pan, tmp_path, capsys):
    import json

    from superres.cli import main
    from superres.io import write_image

    for root, frames in (("gt", pan), ("sr", _flicker(pan, 24))):
        for clip in ("a", "b"):
            (tmp_path / root / clip).mkdir(parents=True)
            for i, f in enumerate(frames):
                write_image(tmp_path / root / clip / f"{i:08d}.png", f)
    assert main(["metrics", str(tmp_path / "gt"), str(tmp_path / "sr"), "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["name", "FRAMES", "PSNR", "SSIM", "TOF", "WARP"]
    records = json.loads((tmp_path / "m.json").read_text())
    assert [r["name"] for r in records] == ["a", "b", "mean"] and records[0]["frames"] == 8
    assert records[0]["tof"] == pytest.approx(tof(pan, _flicker(pan, 24)), rel=1e-6) and records[0]["tof"] > 0

    assert main(["eval", "-m", "bicubic", str(tmp_path / "gt"), "--scale", "2", "--temporal"]) == 0
    header, first = capsys.readouterr().out.splitlines()[:2]
    assert header.split() == ["name", "FRAMES", "PSNR", "SSIM", "TOF", "WARP"] and first.split()[0] == "a"
    assert main(["eval", "-m", "bicubic", str(tmp_path / "gt" / "a"), "--scale", "2", "--temporal"]) == 1
    assert "temporal metrics (tOF, warping error) are for clips" in capsys.readouterr().err
