"""Arrays and tensors: the one place that converts image layouts and sample types.

Images travel as numpy arrays, HxWxC (a clip: TxHxWxC), RGB, uint8, uint16 or float in [0, 1];
networks take torch tensors, CxHxW (batched: NxCxHxW; clips: TxCxHxW), float in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch

PEAKS = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def hwc_to_chw(x: torch.Tensor) -> torch.Tensor:
    """... x H x W x C -> ... x C x H x W (a view)."""
    return x.movedim(-1, -3)


def chw_to_hwc(x: torch.Tensor) -> torch.Tensor:
    """... x C x H x W -> ... x H x W x C (a view)."""
    return x.movedim(-3, -1)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWxC -> CxHxW, or TxHxWxC -> TxCxHxW, float32; integer samples are scaled to [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, -3)))
    peak = PEAKS.get(image.dtype)
    return x.float() / peak if peak else x.float()


def to_image(x: torch.Tensor) -> np.ndarray:
    """CxHxW -> HxWxC, or TxCxHxW -> TxHxWxC (float32 numpy, on the CPU), values unchanged."""
    return chw_to_hwc(x.detach().float().cpu()).numpy()


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8, uint16 or float samples -> float32 in [0, 1] (floats are clipped)."""
    peak = PEAKS.get(image.dtype)
    if peak:
        return image.astype(np.float32) / np.float32(peak)
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"image dtype must be uint8, uint16 or float, got {image.dtype}")
    return np.clip(image, 0, 1).astype(np.float32)


def from_float(x: np.ndarray, dtype: np.dtype | type) -> np.ndarray:
    """float samples (overwritten) -> ``dtype``: clipped to [0, 1], then scaled and rounded for integers
    (float32 for float dtypes), without float temporaries."""
    np.clip(x, 0.0, 1.0, out=x)
    peak = PEAKS.get(np.dtype(dtype))
    if peak is None:
        return x.astype(np.float32, copy=False)
    x *= np.float32(peak) if x.dtype == np.float32 else peak
    return np.rint(x, out=x).astype(dtype)
