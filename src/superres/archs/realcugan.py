"""Real-CUGAN (bilibili, "Real Cascade U-Nets for Anime Image Super Resolution", 2022): UpCunet2x,
UpCunet3x and UpCunet4x of the official ``Real-CUGAN/upcunet_v3.py``.

Two U-Nets in cascade on a reflect-padded input: UNet1 (one down/up level, ends in a transposed
conv that upscales x2 or x3) and UNet2 (two levels) refining its output, which is added back.
Convolutions are unpadded, so each stage crops its skip connections; the squeeze-and-excitation
blocks scale channels by a function of their mean over the whole image (superres's tiles share the
whole image's means, as the official tile modes do: ``superres.infer.statistics``). x4 adds a conv, a pixel shuffle
and the nearest-upsampled input. The "pro" models take inputs mapped to [0.15, 0.85]
(``x * 0.7 + 0.15``) and their weights carry a ``pro`` entry (the integer 1 in the official files, a
one-element buffer here). Layout as the official ``.pth`` (``up2x-latest-conservative.pth``,
``pro-denoise3x-up3x.pth``: ``unet1.conv1.conv.0``, ``unet2.conv2.seblock.conv1``, ``conv_final``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from superres.archs.spec import ArchSpec, ModelFacts, StateDict


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.1)


class SEBlock(nn.Module):
    def __init__(self, in_channels: int, reduction: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels // reduction, 1, 1, 0, bias=True)
        self.conv2 = nn.Conv2d(in_channels // reduction, in_channels, 1, 1, 0, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        # the mean in fp32 (as the official code does in half precision: fp16 sums overflow)
        mean = x.float().mean(dim=(2, 3), keepdim=True).to(x.dtype)
        return x * torch.sigmoid(self.conv2(F.relu(self.conv1(mean))))


class UNetConv(nn.Module):
    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, se: bool):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 3, 1, 0), nn.LeakyReLU(0.1),
                                  nn.Conv2d(mid_channels, out_channels, 3, 1, 0), nn.LeakyReLU(0.1))
        self.seblock = SEBlock(out_channels) if se else None

    def forward(self, x: Tensor) -> Tensor:
        z = self.conv(x)
        return self.seblock(z) if self.seblock is not None else z


class UNet1(nn.Module):
    """One level; ends in a transposed conv upscaling by ``up`` (2: UNet1, 3: the official UNet1x3), or for
    ``up=1`` in a 3x3 conv (waifu2x's denoising CUNet, ``superres.archs.waifu2x``)."""

    def __init__(self, in_channels: int, out_channels: int, up: int = 2):
        super().__init__()
        self.conv1 = UNetConv(in_channels, 32, 64, se=False)
        self.conv1_down = nn.Conv2d(64, 64, 2, 2, 0)
        self.conv2 = UNetConv(64, 128, 64, se=True)
        self.conv2_up = nn.ConvTranspose2d(64, 64, 2, 2, 0)
        self.conv3 = nn.Conv2d(64, 64, 3, 1, 0)
        self.conv_bottom: nn.Module
        if up == 1:
            self.conv_bottom = nn.Conv2d(64, out_channels, 3, 1, 0)
        else:
            kernel, padding = {2: (4, 3), 3: (5, 2)}[up]
            self.conv_bottom = nn.ConvTranspose2d(64, out_channels, kernel, up, padding)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.conv1(x)
        x2 = _lrelu(self.conv2_up(self.conv2(_lrelu(self.conv1_down(x1)))))
        x3 = _lrelu(self.conv3(x1[:, :, 4:-4, 4:-4] + x2))
        return self.conv_bottom(x3)


class UNet2(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = UNetConv(in_channels, 32, 64, se=False)
        self.conv1_down = nn.Conv2d(64, 64, 2, 2, 0)
        self.conv2 = UNetConv(64, 64, 128, se=True)
        self.conv2_down = nn.Conv2d(128, 128, 2, 2, 0)
        self.conv3 = UNetConv(128, 256, 128, se=True)
        self.conv3_up = nn.ConvTranspose2d(128, 128, 2, 2, 0)
        self.conv4 = UNetConv(128, 64, 64, se=True)
        self.conv4_up = nn.ConvTranspose2d(64, 64, 2, 2, 0)
        self.conv5 = nn.Conv2d(64, 64, 3, 1, 0)
        self.conv_bottom = nn.Conv2d(64, out_channels, 3, 1, 0)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.conv1(x)
        x2 = self.conv2(_lrelu(self.conv1_down(x1)))
        x3 = _lrelu(self.conv3_up(self.conv3(_lrelu(self.conv2_down(x2)))))
        x4 = _lrelu(self.conv4_up(self.conv4(x2[:, :, 4:-4, 4:-4] + x3)))
        x5 = _lrelu(self.conv5(x1[:, :, 16:-16, 16:-16] + x4))
        return self.conv_bottom(x5)


class _UpCunet(nn.Module):
    scale: int
    pad: int  # reflect padding on each side (the border the cascade's unpadded convs consume)
    multiple: int  # the padded input's size must be a multiple of this (the rest is reflected too)
    nearest_residual = False  # x4: the nearest-upsampled input is added to the output

    @property
    def tile_grid(self) -> int:
        """The input grid the cascade downsamples on (its multiple: UNet2's x4 at x2 or x3 resolution), on
        which tiles must start (``superres.infer.image.tile_alignment``)."""
        return self.multiple

    def __init__(self, in_channels: int = 3, out_channels: int = 3, pro: bool = False):
        super().__init__()
        self.pro: Tensor | None
        if pro:  # the official pro weights carry this entry; its value is unused
            self.register_buffer("pro", torch.zeros(1))
        else:
            self.pro = None

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        least = _min_size(self.pad, self.multiple)
        if not torch.jit.is_tracing() and min(h, w) < least:  # reflect padding needs the room
            raise ValueError(f"{type(self).__name__} needs height and width of at least {least}, got {h}x{w} "
                             "(pad the input)")
        if self.pro is not None:
            x = x * 0.7 + 0.15
        p, m = self.pad, self.multiple
        out = self.cascade(F.pad(x, (p, p + -w % m, p, p + -h % m), "reflect"))[:, :, :h * self.scale, :w * self.scale]
        if self.nearest_residual:
            out = out + F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return (out - 0.15) / 0.7 if self.pro is not None else out

    def cascade(self, padded: Tensor) -> Tensor:
        """The network of the ncnn files: the padded input -> the output (before cropping)."""
        y = self.unet1(padded)
        return self.unet2(y) + y[:, :, 20:-20, 20:-20]


class _TwoCascade(_UpCunet):
    """x2 and x3: UNet1 upscales the image itself, UNet2 refines it."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, pro: bool = False):
        super().__init__(in_channels, out_channels, pro)
        self.unet1 = UNet1(in_channels, out_channels, up=self.scale)
        self.unet2 = UNet2(in_channels, out_channels)


class UpCunet2x(_TwoCascade):
    scale, pad, multiple = 2, 18, 2


class UpCunet3x(_TwoCascade):
    scale, pad, multiple = 3, 14, 4


class UpCunet4x(_UpCunet):
    scale, pad, multiple = 4, 19, 2
    nearest_residual = True

    def __init__(self, in_channels: int = 3, out_channels: int = 3, pro: bool = False):
        super().__init__(in_channels, out_channels, pro)
        self.unet1 = UNet1(in_channels, 64, up=2)
        self.unet2 = UNet2(64, 64)
        self.ps = nn.PixelShuffle(2)
        self.conv_final = nn.Conv2d(64, 4 * out_channels, 3, 1, 0, bias=True)

    def cascade(self, padded: Tensor) -> Tensor:
        y = self.unet1(padded)
        return self.ps(self.conv_final(self.unet2(y) + y[:, :, 20:-20, 20:-20])[:, :, 1:-1, 1:-1])


def _detector(cls: type[_UpCunet]):
    def detect(s: StateDict) -> dict | None:
        if not {"unet1.conv1.conv.0.weight", "unet1.conv_bottom.weight", "unet2.conv_bottom.weight"} <= s.keys():
            return None
        kernel = s["unet1.conv_bottom.weight"].shape[-1]
        if kernel == 3:  # a plain conv: waifu2x's x1 CUNet
            return None
        up = 3 if kernel == 5 else 4 if "conv_final.weight" in s else 2
        if up != cls.scale:
            return None
        out = s["conv_final.weight"].shape[0] // 4 if up == 4 else s["unet2.conv_bottom.weight"].shape[0]
        channels = s["unet1.conv1.conv.0.weight"].shape[1]
        if up == 4 and channels == 4 * out:  # pixel-unshuffled input: the fast 2x network (spandrel's UpCunet2x_fast)
            return None
        return {"in_channels": channels, "out_channels": out, "pro": "pro" in s}
    return detect


def _converter(cls: type[_UpCunet]):
    """The official pro files mark themselves with ``"pro": 1`` (a plain number, not a tensor): it becomes
    the network's one-element ``pro`` buffer."""
    detect = _detector(cls)

    def convert(s: StateDict) -> tuple[StateDict, dict] | None:
        if "pro" not in s or isinstance(s["pro"], torch.Tensor):
            return None
        fixed = {**s, "pro": torch.zeros(1)}
        return (fixed, {}) if detect(fixed) is not None else None
    return convert


def _min_size(pad: int, multiple: int) -> int:
    """The smallest side from which on reflect padding works: each pad shorter than the side."""
    n = pad + multiple  # enough: pad + multiple - 1 < n
    while pad + -(n - 1) % multiple < n - 1:
        n -= 1
    return n


def _facts(cls: type[_UpCunet]):
    least = _min_size(cls.pad, cls.multiple)

    def facts(kw: dict) -> ModelFacts:
        return ModelFacts("sr", cls.scale, kw["in_channels"], kw["out_channels"], min_size=least)
    return facts


ARCHS = tuple(ArchSpec(cls, _detector(cls), _facts(cls), convert=_converter(cls))
              for cls in (UpCunet2x, UpCunet3x, UpCunet4x))
