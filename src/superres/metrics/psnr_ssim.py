"""PSNR and SSIM the way SR papers report them.

Conventions (those of the papers' MATLAB scripts, BasicSR and MMagic): images on the 0-255
scale, ``crop_border`` pixels removed on every side, and with ``y_channel`` the Y of MATLAB's
BT.601 YCbCr (not rounded) for 3-channel images, while 1-channel (gray) images are scored on
their gray values. SSIM follows Wang et al., "Image Quality Assessment: From Error Visibility to
Structural Similarity" (TIP 2004): 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, valid
region only, float64, computed per channel and averaged. Arrays here are RGB, not BGR.
"""

from __future__ import annotations

import cv2
import numpy as np

from superres.ops.color import rgb2ycbcr

_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


def _prepare(img: np.ndarray, crop_border: int, y_channel: bool) -> np.ndarray:
    """HxW or HxWxC [0, 255] -> cropped float64 HxWxC (Y only if asked and 3 channels)."""
    img = np.asarray(img)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3:
        raise ValueError(f"expected an HxW or HxWxC image, got shape {img.shape}")
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
    img = img.astype(np.float64)
    if y_channel and img.shape[2] == 3:
        img = rgb2ycbcr(img / 255.0, y_only=True) * 255.0
    return img


def _check_pair(shape1: tuple, shape2: tuple, spatial: tuple, crop_border: int) -> None:
    if tuple(shape1) != tuple(shape2):
        raise ValueError(f"image sizes differ: {tuple(shape1)} vs {tuple(shape2)}")
    if crop_border < 0 or 2 * crop_border >= min(spatial):
        raise ValueError(f"crop_border {crop_border} leaves nothing of a {tuple(spatial)} image")


def psnr(img1: np.ndarray, img2: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """Peak signal-to-noise ratio in dB of two RGB (or gray) images in [0, 255]; inf if identical."""
    _check_pair(np.shape(img1), np.shape(img2), np.shape(img1)[:2], crop_border)
    a, b = _prepare(img1, crop_border, y_channel), _prepare(img2, crop_border, y_channel)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def _gaussian_window() -> np.ndarray:
    k = cv2.getGaussianKernel(11, 1.5)
    return k @ k.T


def _ssim_map(a, b, filt):
    """The SSIM map of Wang et al. (Eq. 13) with local statistics from ``filt`` (numpy or torch)."""
    mu1, mu2 = filt(a), filt(b)
    mu1_sq, mu2_sq, mu1_mu2 = mu1**2, mu2**2, mu1 * mu2
    sigma1_sq = filt(a * a) - mu1_sq
    sigma2_sq = filt(b * b) - mu2_sq
    sigma12 = filt(a * b) - mu1_mu2
    return ((2 * mu1_mu2 + _C1) * (2 * sigma12 + _C2)) / ((mu1_sq + mu2_sq + _C1) * (sigma1_sq + sigma2_sq + _C2))


def _ssim_channel(a: np.ndarray, b: np.ndarray, window: np.ndarray) -> float:
    def filt(x: np.ndarray) -> np.ndarray:
        return cv2.filter2D(x, -1, window)[5:-5, 5:-5]  # valid region of the 11x11 window

    return float(_ssim_map(a, b, filt).mean())


def ssim(img1: np.ndarray, img2: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """Structural similarity of two RGB (or gray) images in [0, 255], mean over channels."""
    _check_pair(np.shape(img1), np.shape(img2), np.shape(img1)[:2], crop_border)
    a, b = _prepare(img1, crop_border, y_channel), _prepare(img2, crop_border, y_channel)
    if min(a.shape[:2]) < 11:
        raise ValueError(f"SSIM needs at least 11x11 pixels after cropping, got {a.shape[:2]}")
    window = _gaussian_window()
    return float(np.mean([_ssim_channel(a[..., c], b[..., c], window) for c in range(a.shape[2])]))


# Batched torch versions, for validation during training: N x C x H x W in [0, 1].

def _prepare_torch(img, crop_border: int, y_channel: bool):
    import torch

    if crop_border:
        img = img[..., crop_border:-crop_border, crop_border:-crop_border]
    if y_channel and img.shape[-3] == 3:
        img = rgb2ycbcr(img.to(torch.float64), y_only=True)
    return img.to(torch.float64) * 255.0


def psnr_torch(img1, img2, crop_border: int = 0, y_channel: bool = False):
    """Per-image PSNR (dB, a float64 tensor of length N) of two N x C x H x W batches in [0, 1]."""
    import torch

    _check_pair(img1.shape, img2.shape, img1.shape[-2:], crop_border)
    a, b = _prepare_torch(img1, crop_border, y_channel), _prepare_torch(img2, crop_border, y_channel)
    mse = ((a - b) ** 2).mean(dim=(-3, -2, -1))
    return 10.0 * torch.log10(255.0**2 / mse)


def ssim_torch(img1, img2, crop_border: int = 0, y_channel: bool = False):
    """Per-image SSIM (a float64 tensor of length N) of two N x C x H x W batches in [0, 1]."""
    import torch
    import torch.nn.functional as F

    _check_pair(img1.shape, img2.shape, img1.shape[-2:], crop_border)
    a, b = _prepare_torch(img1, crop_border, y_channel), _prepare_torch(img2, crop_border, y_channel)
    channels = a.shape[-3]
    window = torch.from_numpy(_gaussian_window()).to(a)[None, None].expand(channels, 1, 11, 11)

    def filt(x):
        return F.conv2d(x, window, groups=channels)  # valid region

    return _ssim_map(a, b, filt).mean(dim=(-3, -2, -1))
