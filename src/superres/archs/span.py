"""SPAN: Wan, Yu, Wang, Liu, Guan, Chen and Tao, "Swift Parameter-free Attention Network for Efficient
Super-Resolution", CVPR Workshops (NTIRE) 2024 (the official ``span_arch.py`` of hongyuanyu/SPAN).

Six SPAB blocks of three Conv3XC convolutions each; a block's attention map is parameter-free,
``sigmoid(out) - 0.5`` of its last convolution, multiplied with (out + input). Conv3XC is a 1x1 ->
3x3 -> 1x1 chain plus a 1x1 skip while training, fused into one 3x3 convolution (re-parameterised)
for inference, as the official code does in eval mode: the fused kernel is computed from the chain
on every eval forward, so the stored ``eval_conv`` weights (kept for the official layout) are not
read. The input is shifted by the DIV2K mean and scaled by 255 (``img_range``). Checkpoints that
carry a ``no_norm`` entry (community variants) skip that normalisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from superres.archs.spec import ArchSpec, ModelFacts, StateDict

_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class Conv3XC(nn.Module):
    """A 3x3 convolution trained as 1x1 -> 3x3 -> 1x1 (widened by ``gain1``) plus a 1x1 skip (``sk``)."""

    def __init__(self, c_in: int, c_out: int, gain1: int = 1, s: int = 1, relu: bool = False):
        super().__init__()
        self.stride, self.has_relu = s, relu
        self.sk = nn.Conv2d(c_in, c_out, 1, s, 0)
        self.conv = nn.Sequential(nn.Conv2d(c_in, c_in * gain1, 1, 1, 0),
                                  nn.Conv2d(c_in * gain1, c_out * gain1, 3, s, 0),
                                  nn.Conv2d(c_out * gain1, c_out, 1, 1, 0))
        self.eval_conv = nn.Conv2d(c_in, c_out, 3, s, 1)
        self.eval_conv.requires_grad_(False)

    def fused(self) -> tuple[Tensor, Tensor]:
        """The one 3x3 kernel and bias equal to the chain plus the skip (on zero-padded input)."""
        (w1, b1), (w2, b2), (w3, b3) = ((c.weight.float(), c.bias.float()) for c in self.conv)
        w3 = w3[:, :, 0, 0]
        weight = torch.einsum("om,mnhw,ni->oihw", w3, w2, w1[:, :, 0, 0])
        bias = w3 @ (torch.einsum("mnhw,n->m", w2, b1) + b2) + b3
        weight[:, :, 1, 1] += self.sk.weight[:, :, 0, 0].float()
        return weight, bias + self.sk.bias.float()

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            out = self.conv(F.pad(x, (1, 1, 1, 1))) + self.sk(x)
        else:
            weight, bias = self.fused()
            out = F.conv2d(x, weight.to(x.dtype), bias.to(x.dtype), self.stride, 1)
        return F.leaky_relu(out, 0.05) if self.has_relu else out


class SPAB(nn.Module):
    """Swift parameter-free attention block."""

    def __init__(self, in_channels: int, mid_channels: int | None = None, out_channels: int | None = None):
        super().__init__()
        mid_channels = mid_channels or in_channels
        out_channels = out_channels or in_channels
        self.c1_r = Conv3XC(in_channels, mid_channels, gain1=2)
        self.c2_r = Conv3XC(mid_channels, mid_channels, gain1=2)
        self.c3_r = Conv3XC(mid_channels, out_channels, gain1=2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(block output, SiLU of its first convolution); the network concatenates the latter.

        (The official code applies that SiLU in place, so the tensor it returns is the activated one.)
        """
        out1 = F.silu(self.c1_r(x))
        out3 = self.c3_r(F.silu(self.c2_r(out1)))
        return (out3 + x) * (torch.sigmoid(out3) - 0.5), out1


class SPAN(nn.Module):
    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, feature_channels: int = 48, upscale: int = 4,
                 img_range: float = 255.0, norm: bool = True):
        super().__init__()
        self.img_range, self.upscale = img_range, upscale
        self.register_buffer("mean", torch.tensor(_RGB_MEAN[:num_in_ch] if num_in_ch == 3 else [0.0] * num_in_ch)
                             .view(1, -1, 1, 1), persistent=False)
        self.no_norm: Tensor | None
        if norm:
            self.no_norm = None
        else:  # the marker of checkpoints trained without the mean/range normalisation
            self.register_buffer("no_norm", torch.zeros(1))
        self.conv_1 = Conv3XC(num_in_ch, feature_channels, gain1=2)
        for i in range(1, 7):
            self.add_module(f"block_{i}", SPAB(feature_channels))
        self.conv_cat = nn.Conv2d(feature_channels * 4, feature_channels, 1, 1, 0)
        self.conv_2 = Conv3XC(feature_channels, feature_channels, gain1=2)
        self.upsampler = nn.Sequential(nn.Conv2d(feature_channels, num_out_ch * upscale**2, 3, 1, 1),
                                       nn.PixelShuffle(upscale))

    def forward(self, x: Tensor) -> Tensor:
        if self.no_norm is None:
            x = (x - self.mean.to(x.dtype)) * self.img_range
        feat = self.conv_1(x)
        out_b1, _ = self.block_1(feat)
        out = out_b1
        for block in (self.block_2, self.block_3, self.block_4, self.block_5):
            out, _ = block(out)
        out_b6, out_b6_1 = self.block_6(out)
        out = self.conv_cat(torch.cat([feat, self.conv_2(out_b6), out_b1, out_b6_1], 1))
        return self.upsampler(out)


def _detect(s: StateDict) -> dict | None:
    if not {"conv_1.sk.weight", "block_1.c1_r.eval_conv.weight", "conv_cat.weight", "upsampler.0.weight"} <= s.keys():
        return None
    num_in_ch, feat = s["conv_1.sk.weight"].shape[1], s["conv_1.sk.weight"].shape[0]
    up_out = s["upsampler.0.weight"].shape[0]
    # out channels x scale^2 outputs: the same channels as in first, then the usual image channel counts
    for out_ch in dict.fromkeys((num_in_ch, 3, 1, 4)):
        scale = round((up_out / out_ch) ** 0.5)
        if scale >= 1 and out_ch * scale * scale == up_out:
            return {"num_in_ch": num_in_ch, "num_out_ch": out_ch, "feature_channels": feat, "upscale": scale,
                    "norm": "no_norm" not in s}
    return None


def _facts(kw: dict) -> ModelFacts:
    return ModelFacts("sr", kw["upscale"], kw["num_in_ch"], kw["num_out_ch"])


ARCHS = (ArchSpec(SPAN, _detect, _facts),)
