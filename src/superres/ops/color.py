"""RGB <-> YCbCr with MATLAB's ``rgb2ycbcr`` coefficients (ITU-R BT.601, studio range).

For R, G, B in [0, 1]: Y = 16 + 65.481 R + 128.553 G + 24.966 B (on the 0-255 scale), the
definition every SR paper's "PSNR on Y" uses. Both directions take and return RGB/YCbCr scaled to
[0, 1] for floats (Y then lies in [16/255, 235/255]); uint8 arrays stay uint8, rounded like
MATLAB. Channels are last for numpy (HxWx3) and at dim -3 for torch (3xHxW or Nx3xHxW).
"""

from __future__ import annotations

import numpy as np

# Rows: R, G, B; columns: Y, Cb, Cr (MATLAB's matrix, transposed for row-vector pixels).
RGB_TO_YCBCR_255 = np.array([[65.481, -37.797, 112.0],
                             [128.553, -74.203, -93.786],
                             [24.966, 112.0, -18.214]])
RGB_TO_YCBCR = RGB_TO_YCBCR_255 / 255.0
YCBCR_OFFSET = np.array([16.0, 128.0, 128.0]) / 255.0
YCBCR_TO_RGB = np.linalg.inv(RGB_TO_YCBCR)


def rgb2ycbcr(img, y_only: bool = False):
    """RGB -> YCbCr (or Y alone with ``y_only``, keeping a channel axis of size 1)."""
    matrix = RGB_TO_YCBCR[:, :1] if y_only else RGB_TO_YCBCR
    return _affine(img, matrix, YCBCR_OFFSET[: matrix.shape[1]], pre_offset=False)


def ycbcr2rgb(img):
    """YCbCr -> RGB, the exact inverse of :func:`rgb2ycbcr` (not clipped)."""
    return _affine(img, YCBCR_TO_RGB, YCBCR_OFFSET, pre_offset=True)


def _affine(img, matrix: np.ndarray, offset: np.ndarray, pre_offset: bool):
    """out = (img - offset) @ matrix if pre_offset else img @ matrix + offset, per pixel."""
    if isinstance(img, np.ndarray):
        if img.shape[-1] != 3:
            raise ValueError(f"expected 3 channels last (HxWx3), got shape {img.shape}")
        integer = not np.issubdtype(img.dtype, np.floating)
        x = img.astype(np.float64) / 255.0 if integer else img
        x = x - offset.astype(x.dtype) if pre_offset else x
        out = x @ matrix.astype(x.dtype)
        out = out if pre_offset else out + offset.astype(x.dtype)
        if integer:
            return np.clip(np.rint(out * 255.0), 0, 255).astype(img.dtype)
        return out
    import torch

    if img.ndim < 3 or img.shape[-3] != 3 or not img.is_floating_point():
        raise ValueError(f"expected a float 3xHxW or Nx3xHxW tensor, got {img.dtype} {tuple(img.shape)}")
    m = torch.from_numpy(matrix).to(img)
    b = torch.from_numpy(offset).to(img).view(-1, 1, 1)
    x = img - b if pre_offset else img
    out = torch.einsum("...chw,cd->...dhw", x, m)
    return out if pre_offset else out + b
