"""GFPGAN: Wang, Li, Zhang and Shan, "Towards Real-World Blind Face Restoration with Generative
Facial Prior", CVPR 2021.

A U-Net encodes the degraded face; its deepest features give the latent codes of a StyleGAN2
decoder (the generative facial prior, :mod:`superres.archs.stylegan2`), and its decoder
features, at every resolution from 8 to the output size, give the scale and shift of spatial
feature transforms (SFT, Sec. 3.3) applied to half of the decoder's channels.

- :class:`GFPGANv1`: the paper's network (``GFPGANv1.pth``): StyleGAN2's original layers.
- :class:`GFPGANv1Clean`: the released v1.2-v1.4 networks (``GFPGANCleanv1-NoCE-C2.pth``,
  ``GFPGANv1.3.pth``, ``GFPGANv1.4.pth``): bilinear resampling, no custom ops, twice the
  decoder's channels at 64 and above.

Layouts as the official code (TencentARC/GFPGAN ``gfpganv1_arch.py``, ``gfpganv1_clean_arch.py``),
defaults as its released models. ``forward`` takes and returns N x 3 x S x S RGB in [0, 1] (S =
``out_size``); the official [-1, 1] convention, the clamp and dropping the intermediate RGB
outputs of training are inside it. The decoder's noise is its stored buffers, so the output is
deterministic (the official inference script draws new noise on every call). The official
``weight`` argument does nothing in these networks: a strength is the caller's blend.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from superres.archs.spec import ArchSpec, ModelFacts, StateDict, count_indices
from superres.archs.stylegan2 import (
    SQRT2,
    ConvLayer,
    EqualConv2d,
    EqualLinear,
    FusedLeakyReLU,
    ResBlock,
    ScaledLeakyReLU,
    StyleGAN2Generator,
    stylegan2_channels,
)

FACE_PRECISIONS = ("fp32", "bf16")


def _sft_branch(channels: int, out_channels: int, conv: type[nn.Module], act: nn.Module,
                last_bias: float) -> nn.Sequential:
    if conv is nn.Conv2d:
        return nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), act, nn.Conv2d(channels, out_channels, 3, 1, 1))
    return nn.Sequential(EqualConv2d(channels, channels, 3, padding=1), act,
                         EqualConv2d(channels, out_channels, 3, padding=1, bias_init_val=last_bias))


class _GFPGAN(nn.Module):
    """What both versions share: the U-Net's forward, the SFT conditions and the [0, 1] interface."""

    log_size: int
    different_w: bool
    input_is_latent: bool
    num_style_feat: int
    conv_body_first: nn.Module
    conv_body_down: nn.ModuleList
    final_conv: nn.Module
    final_linear: nn.Module
    conv_body_up: nn.ModuleList
    condition_scale: nn.ModuleList
    condition_shift: nn.ModuleList
    stylegan_decoder: StyleGAN2Generator

    def _encode(self, x: Tensor) -> Tensor:
        return self.conv_body_first(x)

    def _final(self, feat: Tensor) -> Tensor:
        return self.final_conv(feat)

    def restore(self, x: Tensor) -> Tensor:
        """The official function: N x 3 x S x S in [-1, 1] -> the decoder's image (about [-1, 1])."""
        feat = self._encode(x)
        skips = []
        for block in self.conv_body_down:
            feat = block(feat)
            skips.insert(0, feat)
        feat = self._final(feat)
        style = self.final_linear(feat.flatten(1))
        if self.different_w:
            style = style.view(style.shape[0], -1, self.num_style_feat)
        conditions = []
        for skip, up, scale, shift in zip(skips, self.conv_body_up, self.condition_scale, self.condition_shift,
                                          strict=True):
            feat = up(feat + skip)
            conditions += [scale(feat), shift(feat)]
        return self.stylegan_decoder(style, conditions, input_is_latent=self.input_is_latent)

    def forward(self, x: Tensor) -> Tensor:
        return (self.restore(x * 2 - 1).clamp(-1, 1) + 1) / 2


class ResUpBlock(nn.Module):
    """GFPGANv1's x2 residual block: bilinear upsampling inside both branches."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3)
        self.conv2 = ConvUpLayer(in_channels, out_channels, 3, padding=1)
        self.skip = ConvUpLayer(in_channels, out_channels, 1, bias=False, activate=False)

    def forward(self, x: Tensor) -> Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / SQRT2


class ConvUpLayer(nn.Module):
    """Bilinear x2, equalised conv, [fused or scaled leaky ReLU]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
                 bias: bool = True, activate: bool = True):
        super().__init__()
        self.padding = padding
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias and not activate else None
        self.activation = (FusedLeakyReLU(out_channels) if bias else ScaledLeakyReLU()) if activate else None

    def forward(self, x: Tensor) -> Tensor:
        out = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        out = F.conv2d(out, self.weight * self.scale, self.bias, padding=self.padding)
        return out if self.activation is None else self.activation(out)


class GFPGANv1(_GFPGAN):
    """The paper's GFPGAN (StyleGAN2's original layers; ``GFPGANv1.pth``: channel_multiplier 1)."""

    def __init__(self, out_size: int = 512, num_style_feat: int = 512, channel_multiplier: int | float = 1,
                 resample_kernel: tuple[int, ...] = (1, 3, 3, 1), num_mlp: int = 8, lr_mlp: float = 0.01,
                 input_is_latent: bool = True, different_w: bool = True, narrow: float = 1, sft_half: bool = True):
        super().__init__()
        self.input_is_latent, self.different_w, self.num_style_feat = input_is_latent, different_w, num_style_feat
        taps = tuple(resample_kernel)
        ch = stylegan2_channels(channel_multiplier, narrow * 0.5)  # the U-Net has half the decoder's channels
        self.log_size = int(math.log2(out_size))
        self.conv_body_first = ConvLayer(3, ch[out_size], 1)
        self.conv_body_down = nn.ModuleList(ResBlock(ch[2**i], ch[2 ** (i - 1)], taps)
                                            for i in range(self.log_size, 2, -1))
        self.final_conv = ConvLayer(ch[4], ch[4], 3)
        self.conv_body_up = nn.ModuleList(ResUpBlock(ch[2 ** (i - 1)], ch[2**i]) for i in range(3, self.log_size + 1))
        self.toRGB = nn.ModuleList(EqualConv2d(ch[2**i], 3, 1) for i in range(3, self.log_size + 1))  # training only
        latents = (2 * self.log_size - 2) if different_w else 1
        self.final_linear = EqualLinear(ch[4] * 16, latents * num_style_feat)
        self.stylegan_decoder = StyleGAN2Generator(out_size, num_style_feat, num_mlp, channel_multiplier, narrow,
                                                   sft_half, taps=taps, lr_mlp=lr_mlp)
        sft = (lambda c: c) if sft_half else (lambda c: 2 * c)
        self.condition_scale = nn.ModuleList(_sft_branch(ch[2**i], sft(ch[2**i]), EqualConv2d, ScaledLeakyReLU(), 1)
                                             for i in range(3, self.log_size + 1))
        self.condition_shift = nn.ModuleList(_sft_branch(ch[2**i], sft(ch[2**i]), EqualConv2d, ScaledLeakyReLU(), 0)
                                             for i in range(3, self.log_size + 1))


class ResBlockClean(nn.Module):
    """The clean U-Net's residual block: bilinear x2 or x1/2 inside both branches, plain convs."""

    def __init__(self, in_channels: int, out_channels: int, mode: str = "down"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.scale_factor = 0.5 if mode == "down" else 2.0

    def _resize(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=self.scale_factor, mode="bilinear", align_corners=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.leaky_relu(self.conv2(self._resize(F.leaky_relu(self.conv1(x), 0.2))), 0.2)
        return out + self.skip(self._resize(x))


class GFPGANv1Clean(_GFPGAN):
    """GFPGAN v1.2-v1.4 (``GFPGANv1.3.pth``, ``GFPGANv1.4.pth``): no custom ops, channel_multiplier 2."""

    def __init__(self, out_size: int = 512, num_style_feat: int = 512, channel_multiplier: int | float = 2,
                 num_mlp: int = 8, input_is_latent: bool = True, different_w: bool = True, narrow: float = 1,
                 sft_half: bool = True):
        super().__init__()
        self.input_is_latent, self.different_w, self.num_style_feat = input_is_latent, different_w, num_style_feat
        ch = stylegan2_channels(channel_multiplier, narrow * 0.5)
        self.log_size = int(math.log2(out_size))
        self.conv_body_first = nn.Conv2d(3, ch[out_size], 1)
        self.conv_body_down = nn.ModuleList(ResBlockClean(ch[2**i], ch[2 ** (i - 1)], "down")
                                            for i in range(self.log_size, 2, -1))
        self.final_conv = nn.Conv2d(ch[4], ch[4], 3, 1, 1)
        self.conv_body_up = nn.ModuleList(ResBlockClean(ch[2 ** (i - 1)], ch[2**i], "up")
                                          for i in range(3, self.log_size + 1))
        self.toRGB = nn.ModuleList(nn.Conv2d(ch[2**i], 3, 1) for i in range(3, self.log_size + 1))  # training only
        latents = (2 * self.log_size - 2) if different_w else 1
        self.final_linear = nn.Linear(ch[4] * 16, latents * num_style_feat)
        self.stylegan_decoder = StyleGAN2Generator(out_size, num_style_feat, num_mlp, channel_multiplier, narrow,
                                                   sft_half, clean=True)
        sft = (lambda c: c) if sft_half else (lambda c: 2 * c)
        self.condition_scale = nn.ModuleList(_sft_branch(ch[2**i], sft(ch[2**i]), nn.Conv2d, nn.LeakyReLU(0.2), 1)
                                             for i in range(3, self.log_size + 1))
        self.condition_shift = nn.ModuleList(_sft_branch(ch[2**i], sft(ch[2**i]), nn.Conv2d, nn.LeakyReLU(0.2), 0)
                                             for i in range(3, self.log_size + 1))

    def _encode(self, x: Tensor) -> Tensor:
        return F.leaky_relu(self.conv_body_first(x), 0.2)

    def _final(self, feat: Tensor) -> Tensor:
        return F.leaky_relu(self.final_conv(feat), 0.2)


def _common(s: StateDict) -> dict:
    """Arguments both layouts store alike: sizes from the decoder, the SFT half, separate latents."""
    num_levels = count_indices(s, r"stylegan_decoder\.to_rgbs\.(\d+)\.bias")
    num_style_feat = s["stylegan_decoder.to_rgb1.modulated_conv.modulation.weight"].shape[1]
    narrow = s["stylegan_decoder.constant_input.weight"].shape[1] / 512
    out_size = 2 ** (num_levels + 2)
    kw = {"out_size": out_size, "num_style_feat": num_style_feat, "narrow": narrow,
          "different_w": s["final_linear.weight"].shape[0] != num_style_feat,
          "sft_half": s[f"condition_scale.{num_levels - 1}.2.weight"].shape[0]
          == s[f"condition_scale.{num_levels - 1}.0.weight"].shape[0]}
    if num_levels >= 4:  # the 64 x 64 level exists: its channels tell the multiplier
        c64 = s["stylegan_decoder.to_rgbs.3.modulated_conv.weight"].shape[2]
        mult = c64 / (256 * narrow)
        kw["channel_multiplier"] = int(mult) if mult == int(mult) else mult
    return kw


def _detect_v1(s: StateDict) -> dict | None:
    if not {"conv_body_first.0.weight", "conv_body_first.1.bias", "stylegan_decoder.style_conv1.activate.bias",
            "stylegan_decoder.to_rgb1.modulated_conv.modulation.weight", "final_linear.weight",
            "condition_scale.0.2.weight"} <= s.keys():
        return None
    return {**_common(s), "num_mlp": count_indices(s, r"stylegan_decoder\.style_mlp\.(\d+)\.weight")}


def _detect_clean(s: StateDict) -> dict | None:
    if not {"conv_body_first.weight", "stylegan_decoder.style_conv1.bias",
            "stylegan_decoder.to_rgb1.modulated_conv.modulation.weight", "final_linear.weight",
            "condition_scale.0.2.weight"} <= s.keys():
        return None
    return {**_common(s), "num_mlp": count_indices(s, r"stylegan_decoder\.style_mlp\.(\d+)\.weight")}


def _facts(kw: dict) -> ModelFacts:
    size = kw["out_size"]
    return ModelFacts("face", 1, 3, 3, size_multiple=size, min_size=size, precisions=FACE_PRECISIONS)


ARCHS = (ArchSpec(GFPGANv1, _detect_v1, _facts), ArchSpec(GFPGANv1Clean, _detect_clean, _facts))
