"""ESPCN: Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient
Sub-Pixel Convolutional Neural Network", CVPR 2016.

Three convolutions on the LR image (5x5 64, 3x3 32, 3x3 r^2 C) with tanh, and a sub-pixel
convolution (PixelShuffle) that rearranges the last layer's r^2 channels into an r x larger image.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from superres.archs.spec import ArchSpec, ModelFacts, StateDict


class ESPCN(nn.Module):
    """ESPCN (5-3-3, 64-32, tanh) for ``upscale`` on ``num_channels`` (1 = Y, as the paper)."""

    def __init__(self, upscale: int = 3, num_channels: int = 1, num_feat: tuple[int, int] = (64, 32)):
        super().__init__()
        self.upscale = upscale
        self.conv1 = nn.Conv2d(num_channels, num_feat[0], 5, padding=2)
        self.conv2 = nn.Conv2d(num_feat[0], num_feat[1], 3, padding=1)
        self.conv3 = nn.Conv2d(num_feat[1], num_channels * upscale**2, 3, padding=1)
        self.pixel_shuffle = nn.PixelShuffle(upscale)
        self.tanh = nn.Tanh()

    def forward(self, x: Tensor) -> Tensor:
        out = self.tanh(self.conv1(x))
        out = self.tanh(self.conv2(out))
        return self.pixel_shuffle(self.conv3(out))


_THREE_CONVS = {f"conv{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}  # SRCNN and ESPCN


def _detect(s: StateDict) -> dict | None:
    if set(s) != _THREE_CONVS:
        return None
    channels = s["conv1.weight"].shape[1]
    upscale = math.isqrt(s["conv3.weight"].shape[0] // channels)
    if upscale < 2 or upscale**2 * channels != s["conv3.weight"].shape[0]:  # SRCNN's conv3 has as many as conv1
        return None
    return {"upscale": upscale, "num_channels": channels,
            "num_feat": (s["conv1.weight"].shape[0], s["conv2.weight"].shape[0])}


def _facts(kw: dict) -> ModelFacts:
    return ModelFacts("sr", kw["upscale"], kw["num_channels"], kw["num_channels"])


ARCHS = (ArchSpec(ESPCN, _detect, _facts),)
