"""SRVGGNetCompact, Real-ESRGAN's compact network: Wang, Xie, Dong and Shan, "Real-ESRGAN:
Training Real-World Blind Super-Resolution with Pure Synthetic Data", ICCVW 2021 (the compact
model of the official repository, used by realesr-animevideov3 and realesr-general-x4v3).

A plain stack of 3x3 convs with PReLU at LR resolution, a PixelShuffle to HR, plus the input
upsampled by nearest neighbour. Layout as the official code (``body.N``).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from superres.archs.spec import ArchSpec, ModelFacts, StateDict, max_index


def _activation(act_type: str, num_feat: int) -> nn.Module:
    if act_type == "prelu":
        return nn.PReLU(num_parameters=num_feat)
    if act_type == "relu":
        return nn.ReLU(inplace=True)
    if act_type == "leakyrelu":
        return nn.LeakyReLU(negative_slope=0.1, inplace=True)
    raise ValueError(f"act_type must be prelu, relu or leakyrelu, got {act_type!r}")


class SRVGGNetCompact(nn.Module):
    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_conv: int = 16,
                 upscale: int = 4, act_type: str = "prelu"):
        super().__init__()
        self.upscale = upscale
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), _activation(act_type, num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), _activation(act_type, num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(upscale)

    def forward(self, x: Tensor) -> Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        return self.upsampler(out) + F.interpolate(x, scale_factor=self.upscale, mode="nearest")


def _detect(s: StateDict) -> dict | None:
    # Bare ``body.N`` keys and nothing else (every other layout has a conv_first or named parts).
    if "body.0.weight" not in s or any(not k.startswith("body.") for k in s):
        return None
    last = max_index(s, r"body\.(\d+)\.weight")
    if s[f"body.{last}.weight"].ndim != 4 or s["body.0.weight"].ndim != 4:
        return None
    num_in_ch, num_feat = s["body.0.weight"].shape[1], s["body.0.weight"].shape[0]
    upscale = math.isqrt(s[f"body.{last}.weight"].shape[0] // num_in_ch)
    return {"num_in_ch": num_in_ch, "num_out_ch": num_in_ch, "num_feat": num_feat, "num_conv": (last - 2) // 2,
            "upscale": upscale, "act_type": "prelu" if "body.1.weight" in s else "relu"}


def _facts(kw: dict) -> ModelFacts:
    return ModelFacts("sr", kw["upscale"], kw["num_in_ch"], kw["num_out_ch"])


ARCHS = (ArchSpec(SRVGGNetCompact, _detect, _facts),)
