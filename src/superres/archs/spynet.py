"""SPyNet: Ranjan and Black, "Optical Flow Estimation using a Spatial Pyramid Network", CVPR 2017.

A 6-level image pyramid; at each level, from coarse to fine, a small CNN (five 7x7 convolutions)
sees the reference, the support frame warped by the upsampled flow so far, and that flow, and
predicts a residual flow. Inputs are RGB in [0, 1], normalised with ImageNet statistics; sizes
are padded to multiples of 32 by resizing, as the official PyTorch port does. Key names follow
BasicSR's ``SpyNet`` (used by BasicVSR and IconVSR), or with ``layout="mmedit"`` MMEditing's
(``basic_module.N.basic_module.M.conv``, used by VSR-Transformer), so either's weights load
strictly; the two compute the same function. :func:`flow_warp` is the backward warping all of
them use.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from superres.archs.spec import ArchSpec, ModelFacts, StateDict, count_indices


def flow_warp(x: Tensor, flow: Tensor, mode: str = "bilinear", padding_mode: str = "zeros") -> Tensor:
    """Sample ``x`` (N x C x H x W) at pixel positions + ``flow`` (N x H x W x 2, x then y, in pixels)."""
    h, w = x.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype, device=x.device),
                            torch.arange(w, dtype=x.dtype, device=x.device), indexing="ij")
    pos = torch.stack((xs, ys), dim=2) + flow
    grid = torch.stack((2 * pos[..., 0] / max(w - 1, 1) - 1, 2 * pos[..., 1] / max(h - 1, 1) - 1), dim=3)
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=True)


class _ConvReLU(nn.Module):
    """MMEditing's ``ConvModule`` as SPyNet uses it: ``conv`` then an optional ReLU."""

    def __init__(self, in_ch: int, out_ch: int, relu: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 7, 1, 3)
        self.activate = nn.ReLU() if relu else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.activate(self.conv(x))


class BasicModule(nn.Module):
    """One pyramid level: [reference, warped support, flow] (8 channels) -> residual flow."""

    def __init__(self, layout: str = "basicsr"):
        super().__init__()
        widths = [8, 32, 64, 32, 16, 2]
        layers: list[nn.Module] = []
        for i in range(5):
            if layout == "mmedit":
                layers.append(_ConvReLU(widths[i], widths[i + 1], relu=i < 4))
                continue
            layers.append(nn.Conv2d(widths[i], widths[i + 1], 7, 1, 3))
            if i < 4:
                layers.append(nn.ReLU(inplace=False))
        self.basic_module = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.basic_module(x)


class SpyNet(nn.Module):
    """``SpyNet()(ref, supp)``: the flow (N x 2 x H x W) that warps ``supp`` onto ``ref``."""

    def __init__(self, levels: int = 6, layout: str = "basicsr"):
        super().__init__()
        if layout not in ("basicsr", "mmedit"):
            raise ValueError(f"layout must be 'basicsr' or 'mmedit', got {layout!r}")
        self.basic_module = nn.ModuleList(BasicModule(layout) for _ in range(levels))
        # Untrained, every level predicts zero flow (the identity warp): a video network trained from
        # scratch starts as flow-free propagation and learns its flows from there, not from random warps.
        for module in self.basic_module:
            last = [m for m in module.modules() if isinstance(m, nn.Conv2d)][-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def _pyramid(self, x: Tensor) -> list[Tensor]:
        levels = [(x - self.mean) / self.std]
        for _ in range(len(self.basic_module) - 1):
            levels.insert(0, F.avg_pool2d(levels[0], kernel_size=2, stride=2, count_include_pad=False))
        return levels

    def _flow(self, ref: Tensor, supp: Tensor) -> Tensor:
        refs, supps = self._pyramid(ref), self._pyramid(supp)
        n, _, h, w = refs[0].shape
        flow = ref.new_zeros(n, 2, h, w)  # the coarsest level starts from zero flow
        for level, module in enumerate(self.basic_module):
            up = flow if level == 0 else F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2
            th, tw = refs[level].shape[-2:]
            if up.shape[-2:] != (th, tw):  # odd sizes: repeat the last row / column
                up = F.pad(up, [0, tw - up.shape[-1], 0, th - up.shape[-2]], mode="replicate")
            warped = flow_warp(supps[level], up.permute(0, 2, 3, 1), padding_mode="border")
            flow = module(torch.cat([refs[level], warped, up], 1)) + up
        return flow

    def forward(self, ref: Tensor, supp: Tensor) -> Tensor:
        h, w = ref.shape[-2:]
        step = 2 ** (len(self.basic_module) - 1)
        hp, wp = math.ceil(h / step) * step, math.ceil(w / step) * step
        ref = F.interpolate(ref, size=(hp, wp), mode="bilinear", align_corners=False)
        supp = F.interpolate(supp, size=(hp, wp), mode="bilinear", align_corners=False)
        flow = F.interpolate(self._flow(ref, supp), size=(h, w), mode="bilinear", align_corners=False)
        return torch.stack((flow[:, 0] * (w / wp), flow[:, 1] * (h / hp)), dim=1)


def _detect(s: StateDict) -> dict | None:
    # A SPyNet on its own: nothing but the pyramid levels and the normalisation (not one inside a video network).
    if any(not k.startswith("basic_module.") and k not in ("mean", "std") for k in s):
        return None
    if "basic_module.0.basic_module.0.conv.weight" in s:  # MMEditing / MMagic
        return {"levels": count_indices(s, r"basic_module\.(\d+)\.basic_module\.0\.conv\.weight"), "layout": "mmedit"}
    if "basic_module.0.basic_module.0.weight" not in s:
        return None
    return {"levels": count_indices(s, r"basic_module\.(\d+)\.basic_module\.0\.weight")}


# fp32 only: flow_warp builds its sampling grid from pixel positions, which half precision cannot
# hold (bf16 on CPU: errors of 0.1 at 64 px wide, 0.5 at 1024 px, vs 0.002 input rounding; SPyNet
# on 256x448 frames gives NaN).
FLOW_PRECISIONS = ("fp32",)


def _facts(kw: dict) -> ModelFacts:
    # (reference, support) RGB frames in, a 2-channel flow at the same size out.
    return ModelFacts("optical flow", 1, 3, 2, precisions=FLOW_PRECISIONS)


ARCHS = (ArchSpec(SpyNet, _detect, _facts),)
