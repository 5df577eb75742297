"""EDSR: Lim, Son, Kim, Nah and Lee, "Enhanced Deep Residual Networks for Single Image
Super-Resolution", CVPRW 2017.

Residual blocks without batch norm, a long skip, sub-pixel upsampling, and the DIV2K RGB mean
subtracted at the input. EDSR-baseline: 16 blocks, 64 features; EDSR: 32 blocks, 256 features,
residual scaling 0.1. Layout and ``img_range`` (the network sees [0, 255] - mean) as BasicSR;
MMagic's EDSR is the same network with ``img_range=1`` (it sees [0, 1] - mean).
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from superres.archs.blocks import ResidualBlockNoBN, Upsample, subpixel_scale, trunk_args
from superres.archs.spec import ArchSpec, ModelFacts, StateDict


class EDSR(nn.Module):
    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_block: int = 16,
                 upscale: int = 4, res_scale: float = 1.0, img_range: float = 255.0,
                 rgb_mean: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)):
        super().__init__()
        self.upscale = upscale
        self.img_range = img_range
        self.register_buffer("mean", torch.tensor(rgb_mean).view(1, 3, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[ResidualBlockNoBN(num_feat, res_scale) for _ in range(num_block)])
        self.conv_after_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.upsample = Upsample(upscale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        mean = self.mean.to(x.dtype)
        x = self.conv_first((x - mean) * self.img_range)
        res = self.conv_after_body(self.body(x)) + x
        return self.conv_last(self.upsample(res)) / self.img_range + mean


def _detect(s: StateDict) -> dict | None:
    if not {"conv_first.weight", "body.0.conv1.weight", "conv_after_body.weight", "upsample.0.weight"} <= s.keys():
        return None
    if "bn_after_body.weight" in s:  # SRResNet
        return None
    args = trunk_args(s)
    # Residual scaling is not stored in the weights: EDSR (256 features) used 0.1, the baseline 1.
    return {**args, "upscale": subpixel_scale(s, args["num_feat"]),
            "res_scale": 0.1 if args["num_feat"] >= 256 else 1.0}


def _convert_mmagic(s: StateDict) -> tuple[StateDict, dict] | None:
    """MMagic's EDSRNet (``upsample.N.upsample_conv``): works on [0, 1] images, so ``img_range=1``."""
    if not ("upsample.0.upsample_conv.weight" in s and "conv_after_body.weight" in s):
        return None
    renamed = {re.sub(r"^upsample\.(\d+)\.upsample_conv\.", lambda m: f"upsample.{2 * int(m[1])}.", k): v
               for k, v in s.items()}
    return renamed, {"img_range": 1.0}


def _facts(kw: dict) -> ModelFacts:
    return ModelFacts("sr", kw["upscale"], kw["num_in_ch"], kw["num_out_ch"])


ARCHS = (ArchSpec(EDSR, _detect, _facts, convert=_convert_mmagic),)
