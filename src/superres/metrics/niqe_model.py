"""NIQE: Mittal, Soundararajan and Bovik, "Making a 'Completely Blind' Image Quality Analyzer",
IEEE Signal Processing Letters 2013. Lower is better.

Matches MATLAB's ``niqe`` as re-implemented by BasicSR (which reports 5.7296 for Set14's baboon,
as MATLAB R2021a does): Y channel rounded to integers, 96x96 blocks without overlap, two scales
(the second by MATLAB bicubic x0.5), 18 AGGD features per block and scale, and the distance of
the fitted multivariate Gaussian to the pristine model of the paper (``niqe_pris_params.npz``,
the parameters shipped with MATLAB's NIQE). Like BasicSR, the image path runs in float32, except
the x0.5 resize, computed in float64 (as MATLAB) and rounded once to float32: 0.5 ulp from MATLAB's
values where float32 taps accumulate up to a few ulp. Blocks are processed together as arrays.
"""

from __future__ import annotations

import math
from functools import lru_cache
from importlib import resources

import numpy as np
from scipy.ndimage import convolve
from scipy.special import gamma

from superres.ops.color import RGB_TO_YCBCR_255
from superres.ops.imresize import imresize

BLOCK_SIZE = 96

# Candidate shape parameters of the AGGD fit (as in the paper's MATLAB code) and the ratio
# r(g) = Gamma(2/g)^2 / (Gamma(1/g) Gamma(3/g)) that the moment estimate is matched against.
_GAM = np.arange(0.2, 10.001, 0.001)
_R_GAM = gamma(2 / _GAM) ** 2 / (gamma(1 / _GAM) * gamma(3 / _GAM))


@lru_cache(maxsize=1)
def pristine_model() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu 1x36, cov 36x36, 7x7 Gaussian window) of the pristine model shipped with MATLAB's NIQE."""
    with resources.files("superres.metrics").joinpath("niqe_pris_params.npz").open("rb") as f:
        params = np.load(f)
        return params["mu_pris_param"], params["cov_pris_param"], params["gaussian_window"]


def _aggd_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric generalized Gaussian fit (alpha, beta_l, beta_r) of each row of ``x`` (B x N).

    The moment-matching estimate of Eq. 7, with alpha chosen on the grid ``_GAM``. A row with no
    negative (or positive) values gets NaN betas and alpha = 0.2, as MATLAB's ``min`` gives.
    """
    x = x.astype(np.float64)
    neg, pos = x < 0, x > 0
    sq = x * x
    with np.errstate(invalid="ignore", divide="ignore"):
        left_std = np.sqrt((sq * neg).sum(1) / neg.sum(1))
        right_std = np.sqrt((sq * pos).sum(1) / pos.sum(1))
        gammahat = left_std / right_std
        rhat = np.abs(x).mean(1) ** 2 / sq.mean(1)
        rhatnorm = rhat * (gammahat**3 + 1) * (gammahat + 1) / (gammahat**2 + 1) ** 2
    # r(g) increases with g, so the closest grid value is a neighbour of the insertion point.
    hi = np.clip(np.searchsorted(_R_GAM, rhatnorm), 1, len(_R_GAM) - 1)
    lo = hi - 1
    pick = np.where((_R_GAM[lo] - rhatnorm) ** 2 <= (_R_GAM[hi] - rhatnorm) ** 2, lo, hi)
    pick[np.isnan(rhatnorm)] = 0
    alpha = _GAM[pick]
    ratio = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left_std * ratio, right_std * ratio


def _block_features(blocks: np.ndarray) -> np.ndarray:
    """The 18 NIQE features of each block (B x h x w) -> B x 18."""
    alpha, beta_l, beta_r = _aggd_fit(blocks.reshape(len(blocks), -1))
    feats = [alpha, (beta_l + beta_r) / 2]
    # Products of neighbouring coefficients: horizontal, vertical, two diagonals (block-wise wrap).
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        prod = blocks * np.roll(blocks, shift, axis=(1, 2))
        alpha, beta_l, beta_r = _aggd_fit(prod.reshape(len(blocks), -1))
        mean = (beta_r - beta_l) * gamma(2 / alpha) / gamma(1 / alpha)
        feats += [alpha, mean, beta_l, beta_r]
    return np.stack(feats, axis=1)


def niqe_gray(img: np.ndarray, block_size: int = BLOCK_SIZE) -> float:
    """NIQE of a 2-D gray/Y image in [0, 255] (already rounded, as MATLAB's uint8 input)."""
    _, _, window = pristine_model()
    img = np.asarray(img, dtype=np.float32)
    n_h, n_w = img.shape[0] // block_size, img.shape[1] // block_size
    if n_h < 1 or n_w < 1:
        raise ValueError(f"NIQE needs at least {block_size}x{block_size} pixels, got {img.shape[0]}x{img.shape[1]}")
    img = img[: n_h * block_size, : n_w * block_size]

    features = []
    for scale in (1, 2):
        mu = convolve(img, window, mode="nearest")
        sigma = np.sqrt(np.abs(convolve(np.square(img), window, mode="nearest") - np.square(mu)))
        normalized = (img - mu) / (sigma + 1)  # Eq. 1, the MSCN coefficients
        b = block_size // scale
        blocks = normalized.reshape(n_h, b, n_w, b).transpose(2, 0, 1, 3).reshape(-1, b, b)
        features.append(_block_features(blocks))
        if scale == 1:
            # The AGGD fits snap to a 0.001 grid, so a few float32 ulp here can move a block's
            # feature by a grid step: resize in float64 and round once (img / 255 in float32, as BasicSR).
            img = imresize((img / np.float32(255.0)).astype(np.float64), scale=0.5, antialiasing=True)
            img = img.astype(np.float32) * np.float32(255.0)
    dist = np.concatenate(features, axis=1)
    n_complete = int((~np.isnan(dist).any(axis=1)).sum())
    if n_complete < 2:  # a covariance needs two blocks (MATLAB and BasicSR fail here too)
        raise ValueError(f"NIQE needs at least two textured {block_size}x{block_size} blocks; "
                         f"this {img.shape[0] * scale}x{img.shape[1] * scale} image has {n_complete}")
    return _distance(dist)


def _distance(dist: np.ndarray) -> float:
    """Eq. 10: distance of the MVG fitted to the block features (B x 36) to the pristine model."""
    mu_pris, cov_pris, _ = pristine_model()
    complete = dist[~np.isnan(dist).any(axis=1)]
    mu_dist = np.nanmean(dist, axis=0)
    cov_dist = np.cov(complete, rowvar=False)
    diff = mu_pris - mu_dist
    quality = diff @ np.linalg.pinv((cov_pris + cov_dist) / 2) @ diff.T  # Eq. 10
    return float(math.sqrt(np.squeeze(quality)))


def niqe(img: np.ndarray, crop_border: int = 0) -> float:
    """NIQE of an RGB (HxWx3) or gray (HxW, HxWx1) image in [0, 255]: Y channel, rounded."""
    img = np.asarray(img).astype(np.float32)
    if img.ndim == 3 and img.shape[2] == 3:
        # BasicSR's arithmetic (float32 in, float64 sum, float32 out), so that the values that
        # fall on a rounding tie round the same way as in the numbers it publishes.
        y = (img / np.float32(255.0)) @ RGB_TO_YCBCR_255[:, :1] + 16.0
        img = (y / 255.0).astype(np.float32) * np.float32(255.0)
    if img.ndim == 3:
        img = img[..., 0]
    if img.ndim != 2:
        raise ValueError(f"expected an HxW or HxWx3 image, got shape {img.shape}")
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
    return niqe_gray(np.round(img))
