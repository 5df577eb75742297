"""Building blocks of VQGAN (Esser, Rombach and Ommer, "Taming Transformers for High-Resolution Image
Synthesis", CVPR 2021) shared by the codebook face restorers RestoreFormer and CodeFormer: GroupNorm
with 32 groups, swish, the residual block, the resampling convolutions and the nearest-codebook-entry
lookup (Sec. 3.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The networks choose codebook entries, a discrete choice that bf16 changes: on random 512 networks 6.6%
# (RestoreFormer) and 2.3% (CodeFormer) of the 16 x 16 entries differed from fp32's (each a 32 x 32 patch of
# the face; outputs 28.2 and 19.7 dB from fp32's), against 47 / 39 dB for GFPGAN's continuous decoders.
CODEBOOK_PRECISIONS = ("fp32",)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """GroupNorm-swish-conv twice, with a 1x1 shortcut when the channels change, named as the checkpoint
    names it: ``nin_shortcut`` (VQGAN, RestoreFormer) or ``conv_out`` (CodeFormer)."""

    def __init__(self, in_channels: int, out_channels: int, shortcut: str = "nin_shortcut"):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.shortcut = shortcut
        setattr(self, shortcut, nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(swish(self.norm2(self.conv1(swish(self.norm1(x))))))
        shortcut = getattr(self, self.shortcut)
        return h + (x if shortcut is None else shortcut(x))


class Downsample(nn.Module):
    """x1/2: pad one row and column at the bottom and right, 3x3 conv with stride 2."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """x2: nearest neighbour, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class VectorQuantizer(nn.Module):
    """The codebook (``embedding``: entries x dimension); :meth:`nearest` replaces each feature vector by
    the closest entry (squared Euclidean distance), :meth:`lookup` gives the entries of given indices."""

    def __init__(self, num_entries: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(num_entries, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / num_entries, 1.0 / num_entries)

    def nearest(self, z: Tensor) -> Tensor:
        """Distances in fp32 in any precision: in bf16 their cancellation would pick other entries."""
        n, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c).float()
        codes = self.embedding.weight.float()
        dist = flat.pow(2).sum(1, keepdim=True) + codes.pow(2).sum(1) - 2 * flat @ codes.t()
        return self.lookup(dist.argmin(1).view(n, h, w))

    def lookup(self, indices: Tensor) -> Tensor:
        """N x H x W indices -> N x dim x H x W entries."""
        return self.embedding.weight[indices].permute(0, 3, 1, 2).contiguous()


def swish(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)
