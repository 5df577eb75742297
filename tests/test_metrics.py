import numpy as np
import pytest
import torch
from scipy import stats

from superres.metrics import niqe, psnr, psnr_torch, ssim, ssim_torch
from superres.ops import imresize


def _degraded_pairs(photos):
    """(ground truth, bicubic x4 round trip) pairs of real photos on the 0-255 scale."""
    pairs = []
    for img in photos.values():
        gt = np.rint(img[: img.shape[0] // 4 * 4, : img.shape[1] // 4 * 4] * 255)
        lr = np.clip(np.rint(imresize(gt / 255, 1 / 4) * 255), 0, 255)
        sr = np.clip(np.rint(imresize(lr / 255, 4) * 255), 0, 255)
        pairs.append((gt, sr))
    return pairs


@pytest.mark.parametrize("crop_border, y_channel", [(0, False), (4, False), (4, True), (3, True)])
def test_psnr_ssim_match_basicsr(photos, basicsr, crop_border, y_channel):
    from basicsr.metrics import calculate_psnr, calculate_ssim

    for gt, sr in _degraded_pairs(photos):
        bgr_gt, bgr_sr = gt[..., ::-1].copy(), sr[..., ::-1].copy()
        ref_p = calculate_psnr(bgr_gt, bgr_sr, crop_border, test_y_channel=y_channel)
        ref_s = calculate_ssim(bgr_gt, bgr_sr, crop_border, test_y_channel=y_channel)
        assert abs(psnr(gt, sr, crop_border, y_channel) - ref_p) <= 1e-6
        assert abs(ssim(gt, sr, crop_border, y_channel) - ref_s) <= 1e-6


def test_gray_images_are_scored_on_gray_values(photos, basicsr):
    from basicsr.metrics import calculate_psnr, calculate_ssim

    gt, sr = _degraded_pairs(photos)[0]
    g1, g2 = gt[..., 1], sr[..., 1]
    assert psnr(g1, g2, 4, y_channel=True) == pytest.approx(calculate_psnr(g1, g2, 4, test_y_channel=True), abs=1e-9)
    assert ssim(g1, g2, 4, y_channel=True) == pytest.approx(calculate_ssim(g1, g2, 4, test_y_channel=True), abs=1e-9)
    assert psnr(g1, g2, 4, y_channel=True) == psnr(g1, g2, 4, y_channel=False)


def test_psnr_ssim_edge_cases():
    a = np.full((20, 20, 3), 100.0)
    assert psnr(a, a) == float("inf")
    assert ssim(a, a) == pytest.approx(1.0)
    b = a + 5
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / 25))
    with pytest.raises(ValueError, match="sizes differ"):
        psnr(a, a[:10])
    with pytest.raises(ValueError, match="crop_border"):
        psnr(a, a, crop_border=10)


def test_torch_batched_versions_match_numpy(photos):
    pairs = [(gt[:200, :200], sr[:200, :200]) for gt, sr in _degraded_pairs(photos)]
    t_gt = torch.from_numpy(np.stack([p[0] for p in pairs]).transpose(0, 3, 1, 2) / 255)
    t_sr = torch.from_numpy(np.stack([p[1] for p in pairs]).transpose(0, 3, 1, 2) / 255)
    # Both compute in float64 (the torch inputs: k / 255 rounded to float32, the same IEEE rounding
    # on every CPU): what varies between CPUs is float64 summation order, ~1e-13 here.
    for crop, y in [(0, False), (4, True)]:
        p = psnr_torch(t_gt, t_sr, crop, y)
        s = ssim_torch(t_gt.float(), t_sr.float(), crop, y)
        for i, (gt, sr) in enumerate(pairs):
            assert p[i].item() == pytest.approx(psnr(gt, sr, crop, y), abs=1e-6)
            assert s[i].item() == pytest.approx(ssim(gt, sr, crop, y), abs=1e-5)


def test_niqe_matches_basicsr_given_the_same_resize(photos, basicsr, monkeypatch):
    """Every step but the x0.5 resize is compared to 1e-6: float32 image path in both, our AGGD
    moments in float64 against BasicSR's float32 pairwise means (<= log2(9216) * 2^-24 = 8e-7
    relative; measured < 1e-7 on NIQE). The resize differs by a few float32 ulp, which can move an
    AGGD shape parameter by a grid step: see the next test."""
    import basicsr.utils.matlab_functions as mf
    from basicsr.metrics import calculate_niqe

    import superres.metrics.niqe_model as niqe_model

    monkeypatch.setattr(niqe_model, "imresize", lambda img, scale, antialiasing: mf.imresize(img, scale, antialiasing))
    for gt, sr in _degraded_pairs(photos):
        for img in (gt, sr):
            assert abs(niqe(img, 0) - calculate_niqe(img[..., ::-1].copy(), 0)) <= 1e-6
    gt = _degraded_pairs(photos)[0][0]
    assert abs(niqe(gt, 4) - calculate_niqe(gt[..., ::-1].copy(), 4)) <= 1e-6


def _grid_step_effects(img) -> np.ndarray:
    """Largest first: |NIQE change| from moving one scale-2 AGGD fit of one block by one step (0.001)
    of the alpha grid (the worse direction; betas rescaled by the new alpha, as the fit does)."""
    from scipy.special import gamma

    import superres.metrics.niqe_model as niqe_model

    features = []
    block_features = niqe_model._block_features
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(niqe_model, "_block_features", lambda b: features.append(block_features(b)) or features[-1])
        base = niqe(img)
    dist = np.concatenate(features, axis=1)
    ratio = lambda a: np.sqrt(gamma(1 / a) / gamma(3 / a))  # noqa: E731
    effects = []
    for block in range(len(dist)):
        for col in (18, 20, 24, 28, 32):  # the scale-2 alphas: (alpha, beta) then 4x (alpha, mean, bl, br)
            moves = []
            for step in (-0.001, 0.001):
                d = dist[block].copy()
                a, a2 = d[col], d[col] + step
                if col == 18:
                    d[19] *= ratio(a2) / ratio(a)
                else:
                    d[col + 2 : col + 4] *= ratio(a2) / ratio(a)
                    d[col + 1] = (d[col + 3] - d[col + 2]) * gamma(2 / a2) / gamma(1 / a2)
                d[col] = a2
                moved = dist.copy()
                moved[block] = d
                moves.append(abs(niqe_model._distance(moved) - base))
            effects.append(max(moves))
    return np.sort(effects)[::-1]


def test_niqe_end_to_end_close_to_basicsr(photos, basicsr):
    """Ours and BasicSR differ only in the x0.5 resize (the test above): ours is float64 rounded to
    float32, BasicSR's a float32 torch mv whose BLAS kernel (AVX2/AVX-512/AMX) sets the summation order:
    a few ulp apart. NIQE is discontinuous there: each AGGD fit picks alpha on a 0.001 grid, so a fit
    whose moment ratio r lies within the perturbation of a grid midpoint moves by one step."""
    from basicsr.metrics import calculate_niqe

    for gt, sr in _degraded_pairs(photos):
        for img in (gt, sr):
            # A few ulp on the pixels move the moment ratio r of a fit by ~1e-5 relative on average
            # (heavy-tailed: up to ~6e-5 in low-contrast product fits); the grid spacing of r is ~8e-4
            # relative, so a fit flips with p ~ 2 x 1e-5 / 8e-4 ~ 2 % (1.75 % measured on astronaut):
            # ~2.5 of the 5 x 25 scale-2 fits of a 512x512 image. Allow the k flips that would move
            # NIQE most, k with P(Poisson > k) < 1e-3 (9 here), plus the 1e-6 of the same-resize test.
            # (Dropping the antialiasing of that resize moves NIQE by 0.8 and 1.2 on the two originals.)
            effects = _grid_step_effects(img)
            flips = int(stats.poisson.isf(1e-3, 0.02 * len(effects)))
            bound = 1e-6 + effects[:flips].sum()
            assert abs(niqe(img) - calculate_niqe(img[..., ::-1].copy(), 0)) <= bound


def test_niqe_ranks_blur_worse_and_checks_size(photos):
    gt, sr = _degraded_pairs(photos)[0]
    assert niqe(sr) > niqe(gt)  # bicubic x4 round trip is blurrier than the original
    with pytest.raises(ValueError, match="96x96"):
        niqe(gt[:90, :200])
    with pytest.raises(ValueError, match="two textured"):
        niqe(gt[:100, :150])  # a single block: no covariance
    with pytest.raises(ValueError, match="two textured"):
        niqe(np.full((200, 200, 3), 128.0))  # flat: no block has both signs of MSCN coefficients
