"""waifu2x (nagadomi, 2015-2019, "Image Super-Resolution for Anime-Style Art"): the UpConv7 and CUNet
networks of its official models (``upconv_7_anime_style_art_rgb``, ``upconv_7_photo``, ``cunet``),
as the PyTorch port nunif (nagadomi) and the ncnn files of waifu2x-ncnn-vulkan define them.

Both use unpadded convolutions, so their raw output is smaller than scale x input: waifu2x pads the
input by replicating its edge pixels (7 pixels per side for UpConv7, 18 for the x2 CUNet, 28 for the
x1 denoising CUNet), and CUNet also needs the padded size to be a multiple of 2 (x2) or 4 (x1), which
waifu2x-ncnn-vulkan fills by more replication at the bottom and right. Here that padding and the crop
back are the networks' own forward, so an HxW input gives exactly a (scale H)x(scale W) output.

- UpConv7: six 3x3 convs (16, 32, 64, 128, 128, 256 channels, LeakyReLU 0.1) and a 4x4 stride-2
  transposed conv (``net.0`` ... ``net.12``, nunif's layout).
- CUNet: the two-U-Net cascade that Real-CUGAN later took over (``superres.archs.realcugan``; the same
  ``unet1``/``unet2`` layout and blocks): x2 upscales in UNet1's last transposed conv, x1 (denoising
  only) ends UNet1 in a 3x3 conv. The x2 weights have exactly Real-CUGAN's UpCunet2x layout, so a bare
  state dict of them loads as UpCunet2x (the same network with reflect padding); ours record CUNet.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from superres.archs.realcugan import UNet1, UNet2
from superres.archs.spec import ArchSpec, ModelFacts, StateDict


def _pad_replicate(x: Tensor, pad: int, multiple: int) -> Tensor:
    """Replicate ``pad`` pixels per side, and at the bottom/right up to a multiple of ``multiple``."""
    padded = (pad + -x.shape[-1] % multiple, pad + -x.shape[-2] % multiple)
    return F.pad(x, (pad, padded[0], pad, padded[1]), "replicate")


class UpConv7(nn.Module):
    """waifu2x's upconv_7 (x2)."""

    scale, pad = 2, 7

    def __init__(self, in_channels: int = 3, out_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in zip((in_channels, 16, 32, 64, 128, 128), (16, 32, 64, 128, 128, 256), strict=True):
            layers += [nn.Conv2d(c_in, c_out, 3, 1, 0), nn.LeakyReLU(0.1, inplace=True)]
        layers.append(nn.ConvTranspose2d(256, out_channels, 4, 2, 3))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(_pad_replicate(x, self.pad, 1))


class CUNet(nn.Module):
    """waifu2x's CUNet: x2 (``scale=2``, with or without denoising) or denoising only (``scale=1``)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, scale: int = 2):
        super().__init__()
        if scale not in (1, 2):
            raise ValueError(f"CUNet scales by 1 or 2, not {scale}")
        self.scale = scale
        self.pad, self.multiple = (18, 2) if scale == 2 else (28, 4)
        self.unet1 = UNet1(in_channels, out_channels, up=scale)
        self.unet2 = UNet2(out_channels, out_channels)

    def cascade(self, padded: Tensor) -> Tensor:
        """The network of the ncnn files: the padded input -> the output (before cropping)."""
        y = self.unet1(padded)
        return self.unet2(y) + y[:, :, 20:-20, 20:-20]

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        return self.cascade(_pad_replicate(x, self.pad, self.multiple))[:, :, :h * self.scale, :w * self.scale]


def _detect_upconv7(s: StateDict) -> dict | None:
    names = {f"net.{i}.{p}" for i in range(0, 13, 2) for p in ("weight", "bias")}
    if s.keys() != names or s["net.12.weight"].shape[0] != 256 or s["net.12.weight"].shape[2:] != (4, 4):
        return None
    return {"in_channels": s["net.0.weight"].shape[1], "out_channels": s["net.12.weight"].shape[1]}


def _detect_cunet(s: StateDict) -> dict | None:
    """Only the x1 CUNet is told apart from a bare state dict (see the module docstring)."""
    bottom = s.get("unet1.conv_bottom.weight")
    if bottom is None or "unet2.conv_bottom.weight" not in s or bottom.shape[-1] != 3:
        return None
    return {"in_channels": s["unet1.conv1.conv.0.weight"].shape[1], "out_channels": bottom.shape[0], "scale": 1}


def _facts_upconv7(kw: dict) -> ModelFacts:
    return ModelFacts("sr", 2, kw["in_channels"], kw["out_channels"])


def _facts_cunet(kw: dict) -> ModelFacts:
    return ModelFacts("sr", kw["scale"], kw["in_channels"], kw["out_channels"])


ARCHS = (ArchSpec(UpConv7, _detect_upconv7, _facts_upconv7), ArchSpec(CUNet, _detect_cunet, _facts_cunet))
