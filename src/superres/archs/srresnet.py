"""SRResNet: Ledig et al., "Photo-Realistic Single Image Super-Resolution Using a Generative
Adversarial Network", CVPR 2017 (the generator of SRGAN), and BasicSR's MSRResNet.

SRResNet: 9x9 conv + PReLU, 16 residual blocks (conv-BN-PReLU-conv-BN), conv-BN with a long
skip, sub-pixel x2 stages with PReLU, 9x9 output conv. MSRResNet ("modified SRResNet", BasicSR)
drops batch norm, uses 3x3 convs and LeakyReLU, and adds a bilinear upsampling of the input.
"""

from __future__ import annotations

import math
import re

import torch.nn.functional as F
from torch import Tensor, nn

from superres.archs.blocks import ResidualBlockNoBN, Upsample, init_scaled_kaiming, subpixel_scale, trunk_args
from superres.archs.spec import ArchSpec, ModelFacts, StateDict


class ResidualBlockBN(nn.Module):
    """conv-BN-PReLU-conv-BN with an identity skip (SRResNet's residual block)."""

    def __init__(self, num_feat: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(num_feat)
        self.prelu = nn.PReLU(num_feat)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(num_feat)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(x)))))


class SRResNet(nn.Module):
    """The SRGAN paper's generator (x2, x3 or x4)."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_block: int = 16,
                 upscale: int = 4):
        super().__init__()
        if upscale not in (2, 3, 4):
            raise ValueError(f"SRResNet supports x2, x3 and x4, got x{upscale}")
        self.upscale = upscale
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 9, 1, 4)
        self.prelu_first = nn.PReLU(num_feat)
        self.body = nn.Sequential(*[ResidualBlockBN(num_feat) for _ in range(num_block)])
        self.conv_after_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.bn_after_body = nn.BatchNorm2d(num_feat)
        self.upsample = Upsample(upscale, num_feat, activation=lambda: nn.PReLU(num_feat))
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 9, 1, 4)

    def forward(self, x: Tensor) -> Tensor:
        feat = self.prelu_first(self.conv_first(x))
        out = feat + self.bn_after_body(self.conv_after_body(self.body(feat)))
        return self.conv_last(self.upsample(out))


class MSRResNet(nn.Module):
    """BasicSR's modified SRResNet: no BN, LeakyReLU(0.1), residual over bilinear upsampling.

    ``upsample_lrelu=False`` gives MMagic's variant, which has no activation after each
    pixel-shuffle stage (same weights layout once keys are renamed, different function).
    """

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_block: int = 16,
                 upscale: int = 4, upsample_lrelu: bool = True):
        super().__init__()
        if upscale not in (2, 3, 4):
            raise ValueError(f"MSRResNet supports x2, x3 and x4, got x{upscale}")
        self.upscale = upscale
        self.upsample_lrelu = upsample_lrelu
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[ResidualBlockNoBN(num_feat) for _ in range(num_block)])
        if upscale in (2, 3):
            self.upconv1 = nn.Conv2d(num_feat, num_feat * upscale * upscale, 3, 1, 1)
            self.pixel_shuffle = nn.PixelShuffle(upscale)
        else:
            self.upconv1 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
            self.upconv2 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
            self.pixel_shuffle = nn.PixelShuffle(2)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=True)
        init_scaled_kaiming([self.conv_first, self.upconv1, self.conv_hr, self.conv_last, self.body], 0.1)
        if upscale == 4:
            init_scaled_kaiming([self.upconv2], 0.1)

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(self.lrelu(self.conv_first(x)))
        for upconv in (self.upconv1, self.upconv2) if self.upscale == 4 else (self.upconv1,):
            out = self.pixel_shuffle(upconv(out))
            out = self.lrelu(out) if self.upsample_lrelu else out
        out = self.conv_last(self.lrelu(self.conv_hr(out)))
        return out + F.interpolate(x, scale_factor=self.upscale, mode="bilinear", align_corners=False)


def _detect_srresnet(s: StateDict) -> dict | None:
    if not {"conv_first.weight", "body.0.bn1.weight", "bn_after_body.weight", "conv_last.weight"} <= s.keys():
        return None
    args = trunk_args(s)
    return {**args, "upscale": subpixel_scale(s, args["num_feat"])}


def _detect_msrresnet(s: StateDict) -> dict | None:
    if not {"conv_first.weight", "body.0.conv1.weight", "upconv1.weight", "conv_hr.weight"} <= s.keys():
        return None
    args = trunk_args(s)
    upscale = 4 if "upconv2.weight" in s else math.isqrt(s["upconv1.weight"].shape[0] // args["num_feat"])
    return {**args, "upscale": upscale}


def _convert_mmagic_msrresnet(s: StateDict) -> tuple[StateDict, dict] | None:
    """MMagic's MSRResNet (``trunk_net``, ``upsample1.upsample_conv``): no activation after upsampling."""
    if not (any(k.startswith("trunk_net.") for k in s) and "upsample1.upsample_conv.weight" in s):
        return None
    renamed = {re.sub(r"^trunk_net\.", "body.", re.sub(r"^upsample(\d)\.upsample_conv\.", r"upconv\1.", k)): v
               for k, v in s.items()}
    return renamed, {"upsample_lrelu": False}


def _facts(kw: dict) -> ModelFacts:
    return ModelFacts("sr", kw["upscale"], kw["num_in_ch"], kw["num_out_ch"])


ARCHS = (
    ArchSpec(SRResNet, _detect_srresnet, _facts),
    ArchSpec(MSRResNet, _detect_msrresnet, _facts, convert=_convert_mmagic_msrresnet),
)
