"""The "BD" degradation of video SR papers: Gaussian blur (sigma 1.6) then x4 subsampling.

Introduced for video SR by DUF (Jo et al., "Deep Video Super-Resolution Network Using Dynamic
Upsampling Filters Without Explicit Motion Compensation", CVPR 2018) and used for Vid4/Vimeo-90K
BDx4 by EDVR, BasicVSR and others. As in BasicSR's ``duf_downsample``: a 13x13 Gaussian kernel,
mirror padding without repeating the edge, and samples taken at rows/columns 0, s, 2s, ...
The output is ``ceil(H / s) x ceil(W / s)``.
"""

from __future__ import annotations

import numpy as np

from superres.ops.imresize import matlab_round


def gaussian_kernel_1d(kernel_size: int = 13, sigma: float = 1.6) -> np.ndarray:
    """Normalised 1-D Gaussian; its outer product is MATLAB's ``fspecial('gaussian', k, sigma)``."""
    x = np.arange(kernel_size, dtype=np.float64) - (kernel_size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def blur_downsample(img, scale: int = 4, sigma: float = 1.6, kernel_size: int = 13):
    """Blur with a Gaussian and keep every ``scale``-th pixel (numpy HxW[xC] or torch ...xHxW)."""
    g = gaussian_kernel_1d(kernel_size, sigma)
    pad = kernel_size // 2
    if isinstance(img, np.ndarray):
        from scipy.ndimage import correlate1d

        x = img if np.issubdtype(img.dtype, np.floating) else img.astype(np.float64)
        if min(x.shape[:2]) <= pad:
            raise ValueError(f"image {x.shape[:2]} is too small for a {kernel_size}x{kernel_size} blur")
        x = correlate1d(x, g.astype(x.dtype), axis=0, mode="mirror")
        x = correlate1d(x, g.astype(x.dtype), axis=1, mode="mirror")
        out = x[::scale, ::scale]
        if x is not img and not np.issubdtype(img.dtype, np.floating):
            limits = np.iinfo(img.dtype)
            out = np.clip(matlab_round(out), limits.min, limits.max).astype(img.dtype)
        return np.ascontiguousarray(out)

    import torch
    import torch.nn.functional as F

    shape = img.shape
    x = img.reshape(-1, 1, shape[-2], shape[-1])
    k = torch.from_numpy(np.outer(g, g)).to(x)[None, None]
    x = F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), k)[..., ::scale, ::scale]
    return x.reshape(*shape[:-2], x.shape[-2], x.shape[-1])


def modcrop(img, scale: int):
    """Crop the bottom/right so both sides are multiples of ``scale`` (numpy HxW[xC] or torch ...xHxW)."""
    if isinstance(img, np.ndarray):
        h, w = img.shape[:2]
        return img[: h - h % scale, : w - w % scale]
    h, w = img.shape[-2:]
    return img[..., : h - h % scale, : w - w % scale]
