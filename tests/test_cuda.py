"""The CUDA paths: half precision chosen from the hardware, the fp32 fallback for non-finite
outputs, and tiles that never put the whole image on the GPU. Skipped where no GPU is present
(CI); run on one with ``python -m pytest tests/test_cuda.py``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from superres.infer import upscale
from superres.metrics import psnr
from superres.runner import Runner
from superres.runtime import RunOptions, pick_precision
from superres.zoo import ModelDescriptor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(scope="module")
def crop(photos) -> np.ndarray:
    image = next(iter(photos.values()))
    return np.ascontiguousarray(image[:128, :128, :3])


def test_auto_precision_follows_the_hardware():
    major, _ = torch.cuda.get_device_capability()
    assert pick_precision("auto", torch.device("cuda")) == ("fp16" if major >= 7 else "fp32")


@pytest.mark.parametrize("model", ["realesr-animevideov3", "realesrgan-x4plus"])
def test_half_precision_matches_fp32(model, crop):
    """fp16 and bf16 on the GPU stay close to fp32 on the CPU (the reference), as images."""
    reference = upscale(crop, model, tile=0, precision="fp32", device="cpu")
    fp32 = upscale(crop, model, tile=0, precision="fp32", device="cuda")
    assert np.abs(fp32 - reference).max() < 1e-4  # fp32 is fp32 on the GPU too: TF32 is off (tf32_disabled)
    for precision, floor in (("fp16", 45.0), ("bf16", 38.0)):
        out = upscale(crop, model, tile=0, precision=precision, device="cuda")
        assert out.shape == reference.shape and np.isfinite(out).all()
        assert psnr(out * 255, reference * 255) > floor, precision


def test_non_finite_half_output_falls_back_to_fp32():
    """Some GPUs give NaN/inf in fp16 (black images): the runner warns and redoes the tile in fp32."""

    class Overflows(torch.nn.Module):  # 1e5 is past fp16's largest value (65504)
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 1e5 / 1e5

    from superres.archs.spec import ModelFacts

    desc = ModelDescriptor(Overflows(), "Overflows", {}, ModelFacts("sr", 1, 3, 3))
    runner = Runner(desc, RunOptions(device="cuda", precision="fp16"))
    tile = np.random.default_rng(0).random((16, 16, 3), dtype=np.float32)
    with pytest.warns(UserWarning, match="non-finite"):
        out = runner(tile)
    assert runner.precision_used == "fp32"
    np.testing.assert_allclose(out, tile, atol=1e-6)


def test_tiles_never_put_the_whole_image_on_the_gpu(photos):
    """A 1024x1024 image x4 in 128-px tiles: the GPU holds tiles, never the 16-megapixel output."""
    image = np.tile(next(iter(photos.values()))[:256, :256, :3], (4, 4, 1))
    upscale(image[:64, :64], "realesr-animevideov3", tile=128, device="cuda")  # load the model first
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = upscale(image, "realesr-animevideov3", tile=128, device="cuda")
    peak = torch.cuda.max_memory_allocated() - base
    whole_output = out.size * 4  # the fp32 output alone, had the image gone through whole
    assert out.shape == (4096, 4096, 3)
    assert peak < whole_output / 4, f"{peak / 2**20:.0f} MiB on the GPU"
