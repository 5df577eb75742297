"""SwinIR and DAT: official-layout checkpoints (from spandrel's reference code, random weights) are
detected with no hints, load strictly and compute what the reference computes; DAT-light's real
weights (``superres fetch``) when they are in the user's cache."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from superres.zoo import load_model

# The user's cache as it was before conftest pointed SUPERRES_CACHE_DIR at a fresh folder: files
# fetched there by `superres fetch` are used when present.
USER_CACHE = os.environ.get("SUPERRES_CACHE_DIR")

# Small settings of each paper configuration: classical (pixelshuffle), lightweight (pixelshuffledirect),
# real-world (nearest+conv, 3conv), JPEG artefacts (no upsampler, gray, 7x7 windows and 0-255 range).
SWINIR = [
    {"img_size": 16, "embed_dim": 12, "depths": [2, 2], "num_heads": [2, 3], "window_size": 4, "mlp_ratio": 2.0,
     "upscale": 2, "upsampler": "pixelshuffle"},
    {"img_size": 16, "embed_dim": 12, "depths": [2], "num_heads": [3], "window_size": 4, "mlp_ratio": 2.0,
     "upscale": 3, "upsampler": "pixelshuffledirect"},
    {"img_size": 16, "embed_dim": 16, "depths": [3], "num_heads": [2], "window_size": 4, "mlp_ratio": 2.0,
     "upscale": 4, "upsampler": "nearest+conv", "resi_connection": "3conv"},
    {"img_size": 14, "in_chans": 1, "embed_dim": 12, "depths": [2], "num_heads": [2], "window_size": 7,
     "mlp_ratio": 2.0, "upscale": 1, "img_range": 255.0, "upsampler": ""},
]
# DAT / DAT-2 (pixelshuffle, two groups; shifted windows in both), DAT-light (one group, pixelshuffledirect,
# 3conv), and single-block groups (heads read from the position bias, not the channel attention).
DAT = [
    {"img_size": 16, "embed_dim": 32, "split_size": [2, 4], "depth": [4, 2], "num_heads": [2, 4],
     "expansion_factor": 2.0, "upscale": 2, "upsampler": "pixelshuffle"},
    {"img_size": 16, "embed_dim": 32, "split_size": [4, 8], "depth": [3], "num_heads": [4], "expansion_factor": 2.0,
     "upscale": 3, "upsampler": "pixelshuffledirect", "resi_connection": "3conv"},
    {"img_size": 16, "embed_dim": 32, "split_size": [2, 4], "depth": [1, 1], "num_heads": [2, 2],
     "expansion_factor": 4.0, "upscale": 4, "upsampler": "pixelshuffle"},
]
CASES = [pytest.param("SwinIR", kw, id=f"SwinIR-{i}") for i, kw in enumerate(SWINIR)] + \
        [pytest.param("DAT", kw, id=f"DAT-{i}") for i, kw in enumerate(DAT)]


def _reference(arch: str, kwargs: dict) -> torch.nn.Module:
    architectures = pytest.importorskip("spandrel.architectures")
    cls = architectures.SwinIR.SwinIR if arch == "SwinIR" else architectures.DAT.DAT
    torch.manual_seed(0)
    net = cls(**kwargs).eval()
    with torch.no_grad():  # the initialisation zero-fills biases and sets norms to 1: randomise them all
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net


@pytest.mark.parametrize("arch, kwargs", CASES)
def test_official_layout_is_detected_and_computes_as_the_reference(tmp_path, arch, kwargs):
    reference = _reference(arch, kwargs)
    torch.save({"params": reference.state_dict()}, tmp_path / "net.pth")  # BasicSR's layout, as released
    loaded = load_model(tmp_path / "net.pth")
    assert loaded.arch == arch and loaded.scale == kwargs["upscale"]
    for key in ("embed_dim", "depths", "depth", "num_heads", "window_size", "split_size", "upsampler", "img_size",
                "img_range", "resi_connection"):
        if key in kwargs:
            assert loaded.kwargs[key] == kwargs[key], key
    channels = kwargs.get("in_chans", 3)
    torch.manual_seed(1)
    for size in ((16, 16), (13, 19)):  # the second is not a multiple of the windows: padding inside the network
        x = torch.rand(1, channels, *size)
        with torch.no_grad():
            expected, got = reference(x), loaded.module(x)
        assert got.shape == expected.shape == (1, channels, size[0] * loaded.scale, size[1] * loaded.scale)
        assert (got - expected).abs().max() <= 1e-4


def test_runner_pads_swinir_to_its_window_and_crops_back(photos):
    from superres.runner import Runner
    from superres.runtime import RunOptions

    reference = _reference("SwinIR", SWINIR[0])
    desc = load_model(reference.state_dict())
    assert desc.size_multiple == 4
    image = np.ascontiguousarray(photos["chelsea"][30:43, 40:57, :3])  # 13 x 17
    out = Runner(desc, RunOptions(precision="fp32", tile=0))(image)
    with torch.no_grad():
        expected = reference(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None])[0]
    assert out.shape == (26, 34, 3)
    # the runner's reflection padding is the network's own: the same output
    assert np.abs(out - expected.permute(1, 2, 0).numpy()).max() <= 1e-4


def _fetched(monkeypatch, name: str):
    """The named model from the user's cache (``superres fetch NAME``), or skip."""
    from superres.zoo.pretrained import MODELS, fetched_path

    if USER_CACHE is None:
        pytest.skip("SUPERRES_CACHE_DIR is not set: no fetched weights to test")
    monkeypatch.setenv("SUPERRES_CACHE_DIR", USER_CACHE)
    if not fetched_path(MODELS[name]).is_file():
        pytest.skip(f"{name} is not fetched (superres fetch {name})")
    return load_model(name)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_fetched_dat_light_computes_as_the_reference(monkeypatch, photos, scale):
    spandrel = pytest.importorskip("spandrel")
    desc = _fetched(monkeypatch, f"dat-light-x{scale}")
    assert (desc.arch, desc.scale, desc.kwargs["embed_dim"], desc.kwargs["depth"]) == ("DAT", scale, 60, [18])
    assert sum(p.numel() for p in desc.module.parameters()) == {2: 553_290, 3: 561_405, 4: 572_766}[scale]
    reference = spandrel.ModelLoader().load_from_file(desc.source).model.eval()
    x = torch.from_numpy(np.ascontiguousarray(photos["chelsea"][40:77, 150:191, :3].transpose(2, 0, 1)))[None]
    with torch.no_grad():
        assert (desc.module(x) - reference(x)).abs().max() <= 1e-4


@pytest.mark.slow  # DAT-light x4 on Set5 on two CPU cores: about a minute; skipped unless fetched
def test_fetched_dat_light_x4_reproduces_the_paper_on_set5(monkeypatch, shared_data):
    from superres.metrics.evaluate import evaluate_model

    desc = _fetched(monkeypatch, "dat-light-x4")
    records, _ = evaluate_model(desc, shared_data / "Set5" / "HR", scale=4)
    psnr = float(np.mean([r["psnr"] for r in records]))
    ssim = float(np.mean([r["ssim"] for r in records]))
    # DAT supplementary material, Table 2 (lightweight SR): Set5 x4, Y channel, crop 4
    assert abs(psnr - 32.57) <= 0.05 and abs(ssim - 0.8991) <= 0.0005
