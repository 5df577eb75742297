"""Pixel losses. Charbonnier: Lai et al., "Deep Laplacian Pyramid Networks for Fast and Accurate
Super-Resolution" (CVPR 2017), a differentiable L1, sqrt((x - y)^2 + eps), as in EDVR/BasicVSR.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CharbonnierLoss(nn.Module):
    """mean(sqrt((pred - target)^2 + eps)); ``eps`` 1e-12 as BasicSR (LapSRN used 1e-6)."""

    def __init__(self, eps: float = 1e-12):
        super().__init__()
        self.eps = eps

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return torch.sqrt((pred - target) ** 2 + self.eps).mean()


def pixel_loss(kind: str, eps: float = 1e-12) -> nn.Module:
    """``L1``, ``MSE`` or ``Charbonnier``, each the mean over all elements."""
    if kind == "L1":
        return nn.L1Loss()
    if kind == "MSE":
        return nn.MSELoss()
    if kind == "Charbonnier":
        return CharbonnierLoss(eps)
    raise ValueError(f"unknown pixel loss {kind!r}: use L1, MSE or Charbonnier")
