"""Real-ESRGAN's degradation model: kernels, noise, JPEG and the pipeline against the official code,
OpenCV's JPEG and the configured distributions."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy import stats

from superres.data.degradations import (
    KERNEL_TYPES,
    BlurSettings,
    PairPool,
    RealDegradation,
    StageSettings,
    degrade,
    filter2d,
    gaussian_family_kernels,
    gaussian_noise,
    poisson_noise,
    sample_kernels,
    sample_stage,
    sinc_kernels,
    usm_sharpen,
)
from superres.data.jpeg import jpeg, quality_tables
from superres.errors import SuperresError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _batch(photos, size: int = 96) -> torch.Tensor:
    crops = [photos[name][40:40 + size, 60:60 + size] for name in sorted(photos)]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous().float()


# --- kernels ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("family, isotropic", [(0, True), (0, False), (1, True), (1, False), (2, True), (2, False)])
def test_kernels_match_the_official_formulas(basicsr, family, isotropic):
    from basicsr.data import degradations as ref

    size, sx, sy, theta, beta = 15, 2.2, (2.2 if isotropic else 0.9), (0.0 if isotropic else 0.7), 1.7
    if family == 0:
        expected = ref.bivariate_Gaussian(size, sx, sy, theta, isotropic=isotropic)
    elif family == 1:
        expected = ref.bivariate_generalized_Gaussian(size, sx, sy, theta, beta, isotropic=isotropic)
    else:
        expected = ref.bivariate_plateau(size, sx, sy, theta, beta, isotropic=isotropic)
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    ours = gaussian_family_kernels(torch.tensor([family]), t(sx), t(sy), t(theta), t(beta), torch.tensor([size]))[0]
    np.testing.assert_allclose(ours.numpy(), np.pad(expected, 3), atol=1e-7)


def test_sinc_kernel_matches_the_official_formula(basicsr):
    from basicsr.data.degradations import circular_lowpass_kernel

    for cutoff, size in ((math.pi / 4, 21), (2.5, 9)):
        ours = sinc_kernels(torch.tensor([cutoff], dtype=torch.float64), torch.tensor([size]))[0]
        np.testing.assert_allclose(ours.numpy(), circular_lowpass_kernel(cutoff, size, pad_to=21), atol=1e-7)


def test_sampled_kernels_follow_the_configured_distributions():
    settings = BlurSettings()
    n = 6000
    kernels, p = sample_kernels(n, settings, torch.Generator().manual_seed(0))
    assert kernels.shape == (n, 21, 21)
    torch.testing.assert_close(kernels.sum((1, 2)), torch.ones(n), atol=1e-5, rtol=0)
    types = p["type"].numpy()
    assert abs((types == -1).mean() - settings.sinc_prob) < 0.015
    for i, prob in enumerate(settings.kernel_prob):  # the shares among the non-sinc kernels
        assert abs((types == i).sum() / (types >= 0).sum() - prob) < 0.02, KERNEL_TYPES[i]
    sizes = p["size"].numpy()
    assert sorted(set(sizes)) == settings.kernel_sizes and np.bincount(sizes)[sizes.min()] > n / 8 * 0.85
    low, high = settings.blur_sigma
    assert stats.kstest(p["sigma_x"].numpy(), stats.uniform(low, high - low).cdf).pvalue > 1e-3
    aniso = np.isin(types, [1, 3, 5])
    assert stats.kstest(p["sigma_y"].numpy()[aniso], stats.uniform(low, high - low).cdf).pvalue > 1e-3
    isotropic = np.isin(types, [0, 2, 4])
    assert np.array_equal(p["sigma_x"].numpy()[isotropic], p["sigma_y"].numpy()[isotropic])
    generalized = np.isin(types, [2, 3])
    beta = p["beta"].numpy()[generalized]
    assert beta.min() >= 0.5 and beta.max() <= 4.0 and abs((beta < 1).mean() - 0.5) < 0.05
    # the kernels have the sampled spread: second moment = sigma^2 for isotropic Gaussians well inside the window
    iso = (types == 0) & (p["sigma_x"].numpy() > 0.8) & (p["sigma_x"].numpy() < sizes / 6)  # not grid-limited
    grid = torch.arange(21, dtype=torch.float64) - 10
    var = (kernels[iso].double() * grid[None, None, :] ** 2).sum((1, 2))
    np.testing.assert_allclose(var.sqrt().numpy(), p["sigma_x"].numpy()[iso], rtol=0.02)


# --- filtering and sharpening ------------------------------------------------------------------------

def test_filter2d_and_usm_match_basicsr(basicsr, photos):
    from basicsr.utils.img_process_util import USMSharp, filter2D

    img = _batch(photos, 64)
    kernels, _ = sample_kernels(img.shape[0], BlurSettings(), torch.Generator().manual_seed(1))
    torch.testing.assert_close(filter2d(img, kernels), filter2D(img, kernels), atol=1e-5, rtol=0)
    torch.testing.assert_close(filter2d(img, kernels[0]), filter2D(img, kernels[:1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(usm_sharpen(img), USMSharp()(img), atol=1e-5, rtol=0)


# --- noise -------------------------------------------------------------------------------------------

def test_noise_parameters_follow_the_configured_ranges():
    stage = StageSettings()
    p = sample_stage(20000, stage, torch.Generator().manual_seed(2))
    lo, hi = stage.noise_range
    counts, _ = np.histogram(p["sigma"].numpy(), bins=10, range=(lo, hi))
    assert p["sigma"].min() >= lo and p["sigma"].max() <= hi
    assert stats.chisquare(counts).pvalue > 1e-3  # flat histogram over the configured range
    lo, hi = stage.poisson_scale_range
    assert stats.kstest(p["poisson_scale"].numpy(), stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3
    assert abs(p["gray"].float().mean() - stage.gray_noise_prob) < 0.015
    assert abs(p["gaussian"].float().mean() - stage.gaussian_noise_prob) < 0.015
    assert p["quality"].min() >= 30 and p["quality"].max() <= 95


def test_gaussian_noise_has_the_sampled_level():
    img = torch.full((4, 3, 128, 128), 0.5)
    sigma = torch.tensor([1.0, 5.0, 15.0, 30.0])
    gray = torch.tensor([False, True, False, True])
    noise = gaussian_noise(img, sigma, gray, torch.Generator().manual_seed(3)) - img
    np.testing.assert_allclose(noise.std((1, 2, 3)).numpy() * 255, sigma.numpy(), rtol=0.03)
    assert torch.equal(noise[1, 0], noise[1, 2]) and not torch.equal(noise[0, 0], noise[0, 2])


def test_poisson_noise_matches_basicsr_statistics(basicsr, photos):
    from basicsr.data.degradations import generate_poisson_noise_pt

    img = _batch(photos, 96)
    n = img.shape[0]
    for gray in (False, True):
        flags = torch.full((n,), gray)
        ours = poisson_noise(img, torch.full((n,), 2.0), flags, torch.Generator().manual_seed(4)) - img
        torch.manual_seed(4)
        ref = generate_poisson_noise_pt(img, scale=2.0, gray_noise=float(gray))
        np.testing.assert_allclose(ours.std((1, 2, 3)).numpy(), ref.std((1, 2, 3)).numpy(), rtol=0.05)
        assert torch.allclose(ours[:, 0], ours[:, 1], atol=1e-6) == gray


# --- JPEG --------------------------------------------------------------------------------------------

def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(255 ** 2 / np.mean((a.astype(np.float64) - b) ** 2))


def _real_photos(photos, shared_data=None) -> list[np.ndarray]:
    out = [(photos[name] * 255).round().astype(np.uint8) for name in sorted(photos)]
    if shared_data is not None:
        from superres.io import list_images, read_rgb8

        out += [read_rgb8(f) for f in list_images(shared_data / "BSD200")[:6]]
    return out


@pytest.mark.parametrize("quality", [30, 50, 75, 95])
def test_jpeg_matches_opencv_within_1db(photos, request, quality):
    """Same distortion as a real encode/decode (OpenCV's libjpeg) to within 1 dB, on real photos."""
    try:
        shared = request.getfixturevalue("shared_data")
    except pytest.skip.Exception:
        shared = None
    ours_db, cv_db = [], []
    for img in _real_photos(photos, shared):
        _, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        ref = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
        out = (jpeg(x, quality)[0].permute(1, 2, 0).numpy() * 255).round()
        ours_db.append(_psnr(out, img))
        cv_db.append(_psnr(ref, img))
        assert _psnr(out, ref) > 38  # and close to OpenCV's pixels, not just as lossy
    assert abs(np.mean(ours_db) - np.mean(cv_db)) < 1.0, (np.mean(ours_db), np.mean(cv_db))


def test_jpeg_tables_batches_and_gradients():
    luma, chroma = quality_tables(torch.tensor([50.0, 100.0, 1.0]))
    assert luma[0, 0, 0] == 16 and luma[1].max() == 1 and luma[2].max() == 255 and chroma[0, 7, 7] == 99
    x = torch.rand(2, 3, 21, 37, requires_grad=True)
    out = jpeg(x, torch.tensor([30.0, 90.0]), differentiable=True)
    out.sum().backward()
    assert out.shape == x.shape and x.grad.abs().sum() > 0
    single = jpeg(x[1:].detach(), 90.0)
    torch.testing.assert_close(jpeg(x.detach(), torch.tensor([30.0, 90.0]))[1:], single)


# --- the pipeline -------------------------------------------------------------------------------------

def test_degrade_is_seeded_shaped_and_8_bit(photos):
    gt = usm_sharpen(_batch(photos, 100))
    settings = RealDegradation()
    a, b, c = degrade(gt, 4, settings, 7), degrade(gt, 4, settings, 7), degrade(gt, 4, settings, 8)
    assert a.shape == (gt.shape[0], 3, 25, 25) and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a, (a * 255).round() / 255) and 0 <= a.min() and a.max() <= 1
    bicubic = torch.nn.functional.interpolate(gt, size=(25, 25), mode="bicubic", antialias=True).clamp(0, 1)
    assert (a - bicubic).abs().mean() > 0.01  # degraded well beyond a plain downscale
    odd = degrade(torch.rand(1, 3, 37, 53), 2, settings, 0)
    assert odd.shape == (1, 3, 18, 26)


def test_pair_pool_mixes_batches_and_keeps_every_pair():
    pool = PairPool(4)
    gen = torch.Generator().manual_seed(0)
    seen = []
    for i in range(6):
        lr = torch.full((2, 1, 1, 1), float(i))
        out, hr = pool(lr, lr * 10, gen)
        assert torch.equal(hr, out * 10)  # pairs stay pairs
        if i >= 2:  # once full, a batch leaves with earlier pairs
            assert out.max() < i
        seen += out.flatten().tolist()
    assert seen[:4] == [0, 0, 1, 1]  # filling: passed through (and kept)
    every = [float(i) for i in range(6) for _ in range(2)]
    assert sorted(seen + pool.lr.flatten().tolist()) == sorted(every + seen[:4])  # nothing lost
    with pytest.raises(ValueError, match="multiple of the batch size"):
        PairPool(5)(torch.zeros(2, 1, 1, 1), torch.zeros(2, 1, 1, 1), gen)


def test_degrade_real_cli_is_seeded_and_reports_bad_settings(tmp_path, photos):
    from conftest import run_main

    from superres.io import read_rgb8, write_image

    src = tmp_path / "hr"
    src.mkdir()
    write_image(src / "a.png", photos["astronaut"][:90, :130])
    (src / "broken.png").write_bytes(b"not an image")

    def run(*extra):  # in this process, as a process reports it (see conftest.run_main)
        return run_main("degrade", src, *extra)

    first = run(str(tmp_path / "a"), "--real", "--seed", "5")
    run(str(tmp_path / "b"), "--real", "--seed", "5")
    assert first.returncode == 1 and "broken.png" in first.stderr  # the bad file is reported, the rest done
    lr = read_rgb8(tmp_path / "a" / "a.png")
    assert lr.shape == (22, 32, 3) and np.array_equal(lr, read_rgb8(tmp_path / "b" / "a.png"))
    run(str(tmp_path / "c"), "--real", "--seed", "6")
    assert not np.array_equal(lr, read_rgb8(tmp_path / "c" / "a.png"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("first: {noise_range: loud}\n")
    result = run(str(tmp_path / "d"), "--real", "--real-config", str(bad))
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "first.noise_range" in result.stderr


def test_degrade_real_config_reads_a_training_config_with_base(tmp_path, monkeypatch):
    # realesrgan_x4plus.yaml names a base file: the settings are its data.real after merging, not an error.
    from superres.cli import main
    from superres.io import read_rgb8, write_image

    hr = tmp_path / "hr"
    hr.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        write_image(hr / f"{name}.png", rng.integers(0, 256, (36, 44, 3), dtype=np.uint8))
    monkeypatch.chdir(CONFIGS.parent)
    assert main(["degrade", str(hr), str(tmp_path / "lr"), "--scale", "4", "--real",
                 "--real-config", "configs/realesrgan_x4plus.yaml", "-q"]) == 0
    assert [read_rgb8(tmp_path / "lr" / f"{name}.png").shape for name in ("a", "b")] == [(9, 11, 3)] * 2


def test_real_settings_of_a_training_config_name_the_key_path(tmp_path):
    from superres.data.degradations import read_real_settings

    assert read_real_settings(CONFIGS / "realesrgan_x4plus.yaml").gt_size == 256  # from its base file
    child = tmp_path / "child.yaml"
    child.write_text(f"base: {CONFIGS / 'realesrgan_x4plus.yaml'}\ndata: {{real: {{first: {{noise_range: loud}}}}}}\n")
    with pytest.raises(SuperresError, match=r"child\.yaml: data\.real\.first\.noise_range: "):
        read_real_settings(child)
    with pytest.raises(SuperresError, match=r"data\.real: not set"):
        read_real_settings(CONFIGS / "edsr_baseline_x2.yaml")
