import numpy as np
import pytest
import torch

from superres.ops import blur_downsample, modcrop, rgb2ycbcr, ycbcr2rgb


def test_ycbcr_coefficients_are_matlab_bt601():
    rgb = np.array([[[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0], [0, 0, 0]]])
    y = rgb2ycbcr(rgb, y_only=True)[0, :, 0] * 255
    np.testing.assert_allclose(y, [16 + 65.481, 16 + 128.553, 16 + 24.966, 235.0, 16.0], atol=1e-9)
    ycc = rgb2ycbcr(rgb) * 255
    np.testing.assert_allclose(ycc[0, 3], [235, 128, 128], atol=1e-9)  # white: Cb = Cr = 128


def test_ycbcr_matches_basicsr_and_round_trips(photos, basicsr):
    from basicsr.utils.color_util import bgr2ycbcr, ycbcr2bgr

    img = photos["astronaut"]
    ours = rgb2ycbcr(img)
    np.testing.assert_allclose(ours, bgr2ycbcr(img[..., ::-1].copy()), atol=1e-6)
    np.testing.assert_allclose(rgb2ycbcr(img, y_only=True)[..., 0], bgr2ycbcr(img[..., ::-1].copy(), True), atol=1e-6)
    np.testing.assert_allclose(ycbcr2rgb(ours), img, atol=1e-6)
    # BasicSR's inverse uses MATLAB's rounded constants; ours is the exact inverse. On YCbCr in [0, 1]
    # the rounding moves a channel by <= sum|dM| + |d_offset| = 5.9e-6 (worst: B), plus float32 in and
    # out (<= (3.2 + 1) * 2^-24).
    np.testing.assert_allclose(ycbcr2rgb(ours)[..., ::-1], ycbcr2bgr(ours.astype(np.float32)), atol=6.2e-6)


def test_ycbcr_torch_matches_numpy_and_uint8(photos):
    img = photos["chelsea"]
    t = torch.from_numpy(img.transpose(2, 0, 1).copy())[None].repeat(2, 1, 1, 1)
    np.testing.assert_allclose(rgb2ycbcr(t)[1].numpy().transpose(1, 2, 0), rgb2ycbcr(img), atol=1e-6)
    np.testing.assert_allclose(rgb2ycbcr(t, y_only=True)[0, 0].numpy(), rgb2ycbcr(img, True)[..., 0], atol=1e-6)
    torch.testing.assert_close(ycbcr2rgb(rgb2ycbcr(t)), t, atol=1e-5, rtol=0)
    u8 = np.rint(img * 255).astype(np.uint8)
    y8 = rgb2ycbcr(u8, y_only=True)
    assert y8.dtype == np.uint8 and 16 <= y8.min() and y8.max() <= 235
    with pytest.raises(ValueError):
        rgb2ycbcr(img[..., :2])


def test_bd_matches_basicsr_duf_downsample(photos, basicsr):
    from basicsr.data.data_util import duf_downsample

    img = photos["chelsea"][:200, :240]
    ours = blur_downsample(img, 4)
    t = torch.from_numpy(img.transpose(2, 0, 1).copy())
    ref = duf_downsample(t[None], kernel_size=13, scale=4)[0].numpy().transpose(1, 2, 0)
    assert ours.shape == ref.shape == (50, 60, 3)
    assert np.abs(ours - ref).max() <= 1e-6
    torch_out = blur_downsample(t[None], 4)[0].numpy().transpose(1, 2, 0)
    assert np.abs(torch_out - ref).max() <= 1e-6


def test_bd_kernel_is_fspecial_gaussian():
    from superres.ops.blur_downsample import gaussian_kernel_1d

    g = gaussian_kernel_1d(13, 1.6)
    k2 = np.outer(g, g)
    x = np.arange(13) - 6
    ref = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.6**2))
    np.testing.assert_allclose(k2, ref / ref.sum(), atol=1e-15)
    flat = np.full((40, 44), 0.3)
    np.testing.assert_allclose(blur_downsample(flat, 4), 0.3, atol=1e-12)
    assert blur_downsample(np.zeros((41, 43)), 4).shape == (11, 11)  # ceil(H / s)


def test_modcrop():
    assert modcrop(np.zeros((228, 344, 3)), 3).shape == (228, 342, 3)
    assert modcrop(torch.zeros(2, 3, 10, 11), 4).shape == (2, 3, 8, 8)
