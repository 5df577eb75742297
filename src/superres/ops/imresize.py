"""MATLAB-compatible bicubic ``imresize``: how SR papers make their low-resolution test images.

Follows MATLAB's ``imresize(img, scale, 'bicubic')``: Keys' cubic kernel (a = -0.5), a kernel
widened by 1/scale when shrinking (antialiasing), pixel centres mapped by
``u = x / scale + 0.5 * (1 - 1 / scale)``, symmetric (edge-including) mirroring at the borders,
output size ``ceil(in * scale)``, and the dimension with the smaller scale resized first.

Each axis is a sparse linear map: every output pixel is a weighted sum of a few input pixels.
The weights and indices are computed once in float64 and applied tap by tap, so memory stays at
the size of the output; numpy arrays and torch tensors (any device, batched) share the weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

_KERNEL_WIDTH = 4.0  # support of the bicubic kernel, in input pixels


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, as MATLAB's ``imresize``."""
    absx = np.abs(x)
    absx2, absx3 = absx**2, absx**3
    return ((1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1)
            + (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * ((absx > 1) & (absx <= 2)))


@lru_cache(maxsize=64)
def contributions(in_length: int, out_length: int, scale: float, antialiasing: bool = True,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Weights (out_length x P, float64, rows sum to 1) and 0-based input indices for one axis."""
    kernel_width = _KERNEL_WIDTH
    shrink = scale < 1 and antialiasing
    if shrink:
        kernel_width /= scale
    x = np.arange(1, out_length + 1, dtype=np.float64)  # 1-based, as in MATLAB
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(taps)[None, :]
    distance = u[:, None] - indices
    weights = scale * cubic(distance * scale) if shrink else cubic(distance)
    weights /= weights.sum(axis=1, keepdims=True)
    # Symmetric padding folded into the indices: ... 2 1 | 1 2 ... n | n n-1 ...
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    indices = mirror[np.mod(indices - 1, 2 * in_length).astype(np.int64)]
    keep = np.any(weights != 0, axis=0)  # MATLAB drops all-zero columns
    weights, indices = weights[:, keep], indices[:, keep]
    weights.flags.writeable = indices.flags.writeable = False  # cached: shared between calls
    return weights, indices


def matlab_round(x: np.ndarray) -> np.ndarray:
    """Round half away from zero, as MATLAB's casts to integer classes do (numpy rounds half to even)."""
    return np.copysign(np.floor(np.abs(x) + 0.5), x)


def output_size(in_size: Sequence[int], scale: float | Sequence[float] | None,
                size: Sequence[int] | None) -> tuple[tuple[int, int], tuple[float, float]]:
    """MATLAB's rule: out = ceil(in * scale) from a scale, or scale = out / in from a size."""
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale and size")
    if size is not None:
        out = (int(size[0]), int(size[1]))
        scales = (out[0] / in_size[0], out[1] / in_size[1])
    else:
        scales = (float(scale), float(scale)) if np.isscalar(scale) else (float(scale[0]), float(scale[1]))
        if min(scales) <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        out = (math.ceil(in_size[0] * scales[0]), math.ceil(in_size[1] * scales[1]))
    if min(out) < 1:
        raise ValueError(f"resizing {tuple(in_size)} by {scale} gives an empty image")
    return out, scales


def imresize(img, scale: float | Sequence[float] | None = None, antialiasing: bool = True,
             size: Sequence[int] | None = None):
    """Resize like MATLAB's ``imresize(img, scale, 'bicubic')``.

    ``img`` is a numpy HxW or HxWxC array (float: any range, computed in its own precision;
    uint8/uint16: each pass computed in float64, then rounded and clipped, like MATLAB) or a float torch
    tensor CxHxW / NxCxHxW (any device). ``scale`` is a factor (or (h, w) factors); ``size`` an
    output (height, width) instead. The result has the input's type, dtype and layout.
    """
    is_numpy = isinstance(img, np.ndarray)
    if is_numpy:
        if img.ndim not in (2, 3):
            raise ValueError(f"expected an HxW or HxWxC array, got shape {img.shape}")
        h_axis, w_axis = 0, 1
    else:
        if img.ndim < 3 or not img.is_floating_point():
            raise ValueError(f"expected a float CxHxW or NxCxHxW tensor, got {img.dtype} {tuple(img.shape)}")
        h_axis, w_axis = img.ndim - 2, img.ndim - 1
    in_size = (img.shape[h_axis], img.shape[w_axis])
    out, scales = output_size(in_size, scale, size)
    # The dimension with the smaller scale first (MATLAB's order; height first on ties).
    order = (0, 1) if scales[0] <= scales[1] else (1, 0)
    resize_axis = _resize_axis_numpy if is_numpy else _resize_axis_torch
    integer = is_numpy and not np.issubdtype(img.dtype, np.floating)
    result = img
    for dim in order:
        axis = (h_axis, w_axis)[dim]
        weights, indices = contributions(in_size[dim], out[dim], scales[dim], antialiasing)
        if integer:  # MATLAB computes each pass in double and casts back to the input class
            limits = np.iinfo(img.dtype)
            # tap by tap: the input is never copied whole into float64 (8x its size)
            result = _resize_axis_numpy(result, axis, weights, indices, np.float64)
            result = np.clip(matlab_round(result), limits.min, limits.max).astype(img.dtype)
        else:
            result = resize_axis(result, axis, weights, indices)
    return result


def _resize_axis_numpy(img: np.ndarray, axis: int, weights: np.ndarray, indices: np.ndarray,
                       dtype: np.dtype | None = None) -> np.ndarray:
    weights = weights.astype(dtype or img.dtype)
    shape = [1] * img.ndim
    shape[axis] = -1
    out = None
    for k in range(weights.shape[1]):
        term = np.take(img, indices[:, k], axis=axis) * weights[:, k].reshape(shape)
        if out is None:
            out = term
        else:
            out += term
    return out


def _resize_axis_torch(img, axis: int, weights: np.ndarray, indices: np.ndarray):
    import torch

    w = torch.tensor(weights, device=img.device, dtype=img.dtype)
    idx = torch.tensor(indices, device=img.device)
    shape = [1] * img.ndim
    shape[axis] = -1
    out = None
    for k in range(w.shape[1]):
        term = img.index_select(axis, idx[:, k]) * w[:, k].reshape(shape)
        out = term if out is None else out + term
    return out
