"""Building blocks shared by several architectures (names as in BasicSR's ``arch_util``)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import torch
from torch import Tensor, nn

from superres.archs.spec import StateDict, count_indices


class ResidualBlockNoBN(nn.Module):
    """Conv-ReLU-Conv with an identity skip and no batch norm (EDSR, Lim et al. 2017)."""

    def __init__(self, num_feat: int = 64, res_scale: float = 1.0):
        super().__init__()
        self.res_scale = res_scale
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.relu(self.conv1(x))) * self.res_scale


class Upsample(nn.Sequential):
    """Sub-pixel upsampling (Shi et al. 2016): conv to s^2 x channels, then PixelShuffle.

    Scales 2^n use n x2 stages, scale 3 one x3 stage. ``activation`` (e.g. PReLU for SRResNet)
    makes a new activation module after each stage.
    """

    def __init__(self, scale: int, num_feat: int, activation: Callable[[], nn.Module] | None = None):
        if scale & (scale - 1) == 0:
            stages = [2] * int(math.log2(scale))
        elif scale == 3:
            stages = [3]
        else:
            raise ValueError(f"scale {scale} is not supported (2^n or 3)")
        layers: list[nn.Module] = []
        for s in stages:
            layers += [nn.Conv2d(num_feat, s * s * num_feat, 3, 1, 1), nn.PixelShuffle(s)]
            if activation is not None:
                layers.append(activation())
        super().__init__(*layers)


def init_transformer_weights(m: nn.Module) -> None:
    """The Swin-family initialisation (SwinIR, HAT, DAT): truncated normal (0.02) linear weights, zero
    biases, unit/zero norm layers. For ``module.apply``."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def subpixel_scale(s: StateDict, num_feat: int, prefix: str = "upsample") -> int:
    """The scale of an :class:`Upsample` stored under ``prefix`` (x3 once, or x2 n times)."""
    convs = [v for k, v in s.items() if re.fullmatch(rf"{prefix}\.\d+\.weight", k) and v.ndim == 4]
    return 3 if s[f"{prefix}.0.weight"].shape[0] == 9 * num_feat else 2 ** len(convs)


def trunk_args(s: StateDict) -> dict:
    """Arguments shared by EDSR, MSRResNet and SRResNet: conv_first -> body.N -> conv_last."""
    return {"num_in_ch": s["conv_first.weight"].shape[1], "num_out_ch": s["conv_last.weight"].shape[0],
            "num_feat": s["conv_first.weight"].shape[0], "num_block": count_indices(s, r"body\.(\d+)\.conv1\.weight")}


def init_scaled_kaiming(modules: list[nn.Module], scale: float = 0.1) -> None:
    """Kaiming-normal init scaled down (ESRGAN Sec. 3.3: smaller init helps residual nets train)."""
    for module in modules:
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
                m.weight.data *= scale
                if m.bias is not None:
                    m.bias.data.zero_()


def in_row_strips(fn: Callable[[Tensor], Tensor], x: Tensor, scale: int, halo: int, rows: int = 16) -> Tensor:
    """``fn(x)`` computed on horizontal strips of ``rows`` input rows, to bound peak memory.

    Each strip carries ``halo`` rows of context on both sides, so the result is exactly ``fn(x)``
    when ``fn`` (a stack of convolutions and upsamplings by ``scale``) looks no further than
    ``halo`` input rows. Strips are written into one preallocated output.
    """
    height = x.shape[-2]
    if height <= rows + 2 * halo:
        return fn(x)
    out = None
    for top in range(0, height, rows):
        a, b = max(top - halo, 0), min(top + rows + halo, height)
        strip = fn(x[..., a:b, :])
        if out is None:
            out = strip.new_empty((*strip.shape[:-2], height * scale, strip.shape[-1]))
        out[..., top * scale:min(top + rows, height) * scale, :] = \
            strip[..., (top - a) * scale:(min(top + rows, height) - a) * scale, :]
    return out


def window_partition(x: Tensor, wh: int, ww: int) -> Tensor:
    """B x H x W x C -> (B * windows) x (wh * ww) x C, windows in raster order (Swin, Liu et al. 2021)."""
    b, h, w, c = x.shape
    x = x.view(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, c)


def window_reverse(windows: Tensor, wh: int, ww: int, h: int, w: int) -> Tensor:
    """The inverse of :func:`window_partition`: (B * windows) x (wh * ww) x C -> B x H x W x C."""
    c = windows.shape[-1]
    x = windows.view(-1, h // wh, w // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def shifted_window_mask(h: int, w: int, wh: int, ww: int, sh: int, sw: int, device: torch.device) -> Tensor:
    """Swin's attention mask for windows shifted by (sh, sw) on an H x W map: windows x N x N, -100
    between tokens that the cyclic shift brought together from different regions, 0 elsewhere.

    Built from comparisons with ``arange`` rather than slice assignments, so that a traced graph (ONNX
    export) keeps H and W dynamic.
    """
    def regions(n: int, size: int, shift: int) -> Tensor:
        i = torch.arange(n, device=device)
        return (i >= n - size).long() + (i >= n - shift).long()

    ids = (regions(h, wh, sh)[:, None] * 3 + regions(w, ww, sw)[None, :]).float()
    windows = window_partition(ids[None, :, :, None], wh, ww)[..., 0]  # windows x N
    return (windows[:, None, :] != windows[:, :, None]).float() * -100.0
