"""Tiled upscaling: seams, blending weights, dtypes and layouts, alpha, precision fallback."""

from __future__ import annotations

import functools
import itertools
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from superres.infer import Upscaler, upscale
from superres.infer.context import measure_margin
from superres.infer.image import fill_transparent
from superres.ops.tiling import TilePlan, axis_weights, plan_overhead, run_tiled, tile_starts
from superres.runner import Runner
from superres.runtime import RunOptions, pick_precision
from superres.zoo import MODELS, ModelDescriptor, load_model


@settings(max_examples=60, deadline=None)
@given(length=st.integers(1, 900), tile=st.integers(40, 400), margin=st.integers(0, 12),
       ramp=st.integers(1, 14), scale=st.sampled_from([1, 2, 4]), align=st.sampled_from([1, 1, 4, 8, 16]))
def test_blend_weights_cover_and_sum_to_one(length, tile, margin, ramp, scale, align):
    overlap = 2 * margin + ramp
    if overlap + align - 1 >= tile < length:
        with pytest.raises(ValueError, match="must be smaller than the tile"):
            tile_starts(length, tile, overlap, align)
        return
    starts, size = tile_starts(length, tile, overlap, align)
    assert size <= tile and starts[0] == 0 and all(a % align == 0 for a in starts)
    assert starts[-1] + size >= length and (align > 1 or starts[-1] + size == length)
    assert all(a + size - b >= overlap for a, b in itertools.pairwise(starts))
    total = np.zeros(length * scale)
    for a, w in zip(starts, axis_weights(starts, size, length, margin, ramp, scale), strict=True):
        total[a * scale:a * scale + len(w)] += w
        if a > 0:  # no weight within the margin of a shared edge
            assert np.all(w[:margin * scale] == 0)
    np.testing.assert_allclose(total, 1.0, atol=1e-12)


def test_tiling_is_exact_for_a_local_model(photos):
    img = photos["chelsea"][:150, :230, :3]

    def nearest_x2(tile):
        return np.repeat(np.repeat(tile, 2, axis=0), 2, axis=1)

    out = np.empty((300, 460, 3), np.float32)
    run_tiled(img, nearest_x2, 2, TilePlan(64, 3, 4), out, lambda rows: rows)
    np.testing.assert_allclose(out, nearest_x2(img), atol=1e-6)


def test_rrdbnet_tiles_match_the_whole_image(photos):
    """Default margin (the measured receptive field) on a real photo: no visible seams."""
    img = (photos["astronaut"][180:356, 200:376, :3] * 255).round().astype(np.uint8)
    whole = Upscaler("realesrgan-x4plus-anime", tile=0, precision="fp32").upscale_array(img)
    tiled_up = Upscaler("realesrgan-x4plus-anime", tile=150, precision="fp32")
    plan = tiled_up.plan(*img.shape[:2])
    assert plan.tile == 150 and plan.margin == MODELS["realesrgan-x4plus-anime"].margin
    tiled = tiled_up.upscale_array(img)
    diff = np.abs(tiled.astype(np.float64) - whole)
    psnr = 10 * np.log10(255**2 / np.mean(diff**2)) if diff.any() else np.inf
    assert diff.max() <= 1 and psnr >= 80  # (margin 41, measured with a 4-pixel tail, gave 3 and 63 dB on chelsea)


def test_auto_tiles_are_big_enough_on_big_images():
    up = Upscaler("realesrgan-x4plus", precision="fp32")
    for side in (2000, 4000, 8000):
        plan = up.plan(side, side)
        assert plan.tile > 0 and plan_overhead(side, side, plan) < 1.6
    assert up.plan(200, 300).tile == 0  # small images run whole
    with pytest.raises(ValueError, match="too small for realesrgan-x4plus"):
        Upscaler("realesrgan-x4plus", tile=64).plan(500, 500)


@pytest.mark.parametrize("name", ["realesr-animevideov3", "realesrgan-x4plus-anime"])
def test_registered_margins_are_the_measured_ones(name):
    desc = load_model(name)
    forward = Runner(desc, RunOptions(precision="fp32", backend="torch")).forward
    assert measure_margin(forward, desc.scale) == MODELS[name].margin


@pytest.mark.parametrize("shape, dtype", [((20, 24), np.uint8), ((20, 24, 1), np.uint16), ((20, 24, 3), np.float32),
                                          ((20, 24, 4), np.uint8), ((20, 24, 2), np.uint16)])
def test_dtype_and_layout_are_kept(shape, dtype):
    rng = np.random.default_rng(0)
    peak = {np.uint8: 255, np.uint16: 65535}.get(dtype, 1)
    img = (rng.random(shape) * peak).astype(dtype)
    out = upscale(img, model="realesr-animevideov3")
    assert out.dtype == dtype and out.shape == (80, 96, *shape[2:])
    small = upscale(img, model="realesr-animevideov3", outscale=1.5)
    assert small.shape == (30, 36, *shape[2:]) and small.dtype == dtype


def test_sixteen_bit_keeps_precision(photos):
    img16 = (photos["chelsea"][:32, :32, :3] * 65535).round().astype(np.uint16)
    out16 = upscale(img16, model="realesr-animevideov3")
    out8 = upscale((img16 // 257).astype(np.uint8), model="realesr-animevideov3", precision="fp32")
    assert len(np.unique(out16 % 257)) > 200  # real 16-bit values, not 8-bit ones scaled
    assert np.abs(out16 / 257.0 - out8).max() < 3
    # auto runs 16-bit and float images in fp32, also where 8-bit ones run in bf16 (native-bf16 CPUs)
    assert np.array_equal(out16, upscale(img16, model="realesr-animevideov3", precision="fp32"))
    as_float = img16.astype(np.float32) / 65535
    assert np.array_equal(upscale(as_float, model="realesr-animevideov3"),
                          upscale(as_float, model="realesr-animevideov3", precision="fp32"))


def test_transparent_color_does_not_bleed():
    """An opaque red disc on transparent black: the upscaled rim must stay red, not darken."""
    yy, xx = np.mgrid[:48, :48]
    alpha = ((yy - 24) ** 2 + (xx - 24) ** 2 < 15**2).astype(np.float32)
    rgba = np.zeros((48, 48, 4), np.float32)
    rgba[..., 0] = alpha  # red inside, black under the transparent part
    rgba[..., 3] = alpha
    filled = fill_transparent(rgba[..., :3], alpha)
    assert np.allclose(filled[alpha == 1], rgba[..., :3][alpha == 1])
    assert filled[..., 0].min() > 0.9  # the hidden color is now the visible one
    for mode in ("model", "bicubic"):
        out = upscale(rgba, model="realesr-animevideov3", alpha=mode)
        visible = out[..., 3] > 0.5
        assert out[..., 0][visible].mean() > 0.9 and out[..., 1][visible].max() < 0.2


def test_gray_image_stays_gray(photos):
    gray = (photos["astronaut"][:32, :32, 0] * 255).astype(np.uint8)
    out = upscale(gray, model="realesr-animevideov3")
    assert out.shape == (128, 128) and out.dtype == np.uint8


def test_bicubic_model_is_matlab_bicubic(photos):
    from superres.ops import imresize

    img = (photos["chelsea"][:30, :40, :3] * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(upscale(img, model="bicubic", outscale=3), imresize(img, 3))


def test_one_channel_models_see_luma(tmp_path):
    from superres.zoo import create_model, save_model

    path = tmp_path / "fsrcnn.safetensors"
    save_model(create_model("FSRCNN", upscale=3), path)
    img = np.random.default_rng(1).random((16, 20, 3)).astype(np.float32)
    assert upscale(img, model=path).shape == (48, 60, 3)


def test_non_finite_half_output_falls_back_to_fp32():
    class HalfBreaks(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            y = torch.nn.functional.interpolate(x * self.w, scale_factor=2)
            return y * torch.nan if x.dtype != torch.float32 else y

    from superres.archs.spec import ModelFacts

    desc = ModelDescriptor(HalfBreaks(), "HalfBreaks", {}, ModelFacts("sr", 2, 3, 3))
    runner = Runner(desc, RunOptions(device="cpu", precision="bf16"))
    with pytest.warns(UserWarning, match="using fp32"):
        out = runner(np.full((4, 4, 3), 128, np.uint8))
    assert runner.precision_used == "fp32" and runner.precision_for(np.uint8) == "fp32"
    assert out.shape == (8, 8, 3) and (out == 128).all()  # reported truthfully, computed in fp32


def test_precision_choice(monkeypatch):
    import superres.runtime as runtime

    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2"}))
    assert pick_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert pick_precision("auto", cpu) == "bf16"
    assert pick_precision("auto", cpu, image_dtype=np.uint8) == "bf16"
    for deep in (np.uint16, np.float32):  # half precision would drop the levels these were saved with
        assert pick_precision("auto", cpu, image_dtype=deep) == "fp32"
    assert pick_precision("auto", cpu, supported=("fp32",)) == "fp32"  # the architecture's facts say so
    with pytest.raises(ValueError, match="fp16 is not supported on the CPU"):
        pick_precision("fp16", cpu)
    with pytest.raises(ValueError, match="computes in fp32 only"):
        pick_precision("bf16", cpu, supported=("fp32",))


def test_backend_choice_and_ncnn_matches_torch(photos, tmp_path):
    from superres.runtime import pick_backend
    from superres.zoo import save_model

    cpu = torch.device("cpu")
    assert pick_backend("auto", cpu, "fp32", has_ncnn_files=True) == "ncnn"
    assert pick_backend("auto", cpu, "bf16", has_ncnn_files=True) == "torch"  # native bf16 CPUs keep PyTorch
    assert pick_backend("auto", cpu, "fp32", has_ncnn_files=False) == "torch"
    with pytest.raises(ValueError, match="named models that ship as ncnn files"):
        pick_backend("ncnn", cpu, "fp32", has_ncnn_files=False)
    crop = photos["chelsea"][40:100, 60:130, :3]
    fast = Upscaler("realesr-animevideov3", precision="fp32", tile=48)
    ref = Upscaler("realesr-animevideov3", precision="fp32", tile=48, backend="torch")
    assert (fast.backend_used, ref.backend_used) == ("ncnn", "torch")
    assert np.abs(fast.upscale_array(crop) - ref.upscale_array(crop)).max() <= 1e-4
    path = tmp_path / "av3.safetensors"
    save_model(load_model("realesr-animevideov3"), path)
    assert Upscaler(str(path)).backend_used == "torch"  # a file: no ncnn graph to run


def test_realesrgan_beats_bicubic_on_niqe(photos):
    """A no-reference check on real photos: sharper, more natural output than bicubic (lower NIQE)."""
    from superres.metrics import niqe
    from superres.ops import imresize

    for name in ("astronaut", "chelsea"):
        hr = photos[name][:, :, :3]
        hr = hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4][:384, :384]
        lr = np.clip(imresize(hr.astype(np.float64), 0.25), 0, 1).astype(np.float32)
        sr = upscale(lr, model="realesrgan-x4plus")
        bic = np.clip(imresize(lr.astype(np.float64), 4), 0, 1)
        assert niqe(sr * 255, 4) < niqe(bic * 255, 4)


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_keep_freed_memory_applies_on_glibc_unless_the_user_set_malloc_env():
    code = "from superres.runtime import keep_freed_memory as k; print(k())"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    run = functools.partial(subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run(env=env).stdout.strip() == "True"  # glibc accepted both thresholds
    assert run(env={**env, "MALLOC_TRIM_THRESHOLD_": "131072"}).stdout.strip() == "False"


@pytest.mark.slow
def test_compile_gives_the_same_image_and_compiles_once_per_process():
    """torch.compile (Inductor; on the CPU it builds C++ kernels) for repeated same-size work."""
    from superres.runner import _COMPILED
    from superres.zoo import create_model

    torch.manual_seed(0)
    desc = create_model("SRVGGNetCompact", num_feat=8, num_conv=1, upscale=2)
    img = np.random.default_rng(0).integers(0, 256, (16, 12, 3), dtype=np.uint8)
    plain = Runner(desc, RunOptions(device="cpu", precision="fp32"))(img)
    compiled = Runner(desc, RunOptions(device="cpu", precision="fp32", compile=True))
    out = compiled(img)
    assert out.shape == plain.shape and np.abs(out.astype(int) - plain).max() <= 1  # summation order only
    again = Runner(desc, RunOptions(device="cpu", precision="fp32", compile=True))
    assert again._net("fp32") is compiled._net("fp32") and len([k for k in _COMPILED if k[0] == id(desc.module)]) == 1


def test_running_a_network_leaves_the_callers_float_state_alone():
    """Denormals are flushed only while a network runs: the caller's own arithmetic keeps subnormals."""
    import sys

    import numpy as np

    from superres.runner import Runner
    from superres.runtime import RunOptions
    from superres.zoo import create_model

    tiny = np.float32(np.finfo(np.float32).tiny)
    Runner(create_model("ESPCN", upscale=2), RunOptions(device="cpu"))(np.zeros((4, 4, 3), np.uint8))
    assert torch.tensor(tiny) / 4 > 0 and sys.float_info.min / 4 > 0


def test_fp32_on_a_gpu_runs_without_tf32():
    """The flags are process-wide: off only while an fp32 network runs on CUDA, restored afterwards
    (checked without a GPU: the context only sets PyTorch's backend flags)."""
    from superres.runtime import tf32_disabled

    flags = torch.backends.cudnn, torch.backends.cuda.matmul
    before = [f.allow_tf32 for f in flags]
    try:
        for f in flags:
            f.allow_tf32 = True
        with tf32_disabled(torch.device("cuda"), "fp32"):
            assert not any(f.allow_tf32 for f in flags)
        assert all(f.allow_tf32 for f in flags)
        for device, precision in (("cuda", "fp16"), ("cuda", "bf16"), ("cpu", "fp32")):
            with tf32_disabled(torch.device(device), precision):
                assert all(f.allow_tf32 for f in flags)
    finally:
        for f, value in zip(flags, before, strict=True):
            f.allow_tf32 = value

