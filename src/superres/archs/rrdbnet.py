"""RRDBNet, the generator of ESRGAN: Wang et al., "ESRGAN: Enhanced Super-Resolution Generative
Adversarial Networks", ECCVW 2018; also Real-ESRGAN's generator (Wang et al., ICCVW 2021).

Residual-in-Residual Dense Blocks (three dense blocks of five convs, LeakyReLU 0.2, residual
scaling 0.2), no batch norm, nearest-neighbour x2 + conv upsampling twice. Real-ESRGAN's x2 and
x1 models first fold the input with pixel-unshuffle so that the body runs at 1/4 resolution.
Layout as BasicSR (``conv_first``, ``body.N.rdbK.convJ``, ``conv_body``, ``conv_up1/2``, ...); both of
xinntao/ESRGAN's official layouts load too (renamed by ``_convert_esrgan``).
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from superres.archs.blocks import in_row_strips, init_scaled_kaiming
from superres.archs.spec import ArchSpec, ModelFacts, StateDict, count_indices


class ResidualDenseBlock(nn.Module):
    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        init_scaled_kaiming([self.conv1, self.conv2, self.conv3, self.conv4, self.conv5], 0.1)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, num_feat: int, num_grow_ch: int = 32):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: Tensor) -> Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """``scale`` 4 (ESRGAN), 2 or 1 (Real-ESRGAN, input folded by pixel-unshuffle 2 or 4)."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, scale: int = 4, num_feat: int = 64,
                 num_block: int = 23, num_grow_ch: int = 32):
        super().__init__()
        if scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet supports scale 1, 2 and 4, got {scale}")
        self.scale = scale
        self.unshuffle = {4: 1, 2: 2, 1: 4}[scale]
        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        if self.unshuffle > 1:
            h, w = x.shape[-2:]
            if h % self.unshuffle or w % self.unshuffle:
                raise ValueError(f"RRDBNet x{self.scale} needs height and width divisible by {self.unshuffle}, "
                                 f"got {h}x{w} (pad the input)")
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        if torch.is_grad_enabled():
            return self.upsample(feat)
        # At 16x the pixels and 64 channels the upsampler's activations dwarf the body's; its
        # receptive field is 1.25 input rows, so strips with 2 rows of halo give the same result.
        return in_row_strips(self.upsample, feat, scale=4, halo=2)

    def upsample(self, feat: Tensor) -> Tensor:
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


def _detect(s: StateDict) -> dict | None:
    if not {"conv_first.weight", "body.0.rdb1.conv1.weight", "conv_up2.weight", "conv_last.weight"} <= s.keys():
        return None
    num_out_ch = s["conv_last.weight"].shape[0]
    folded = s["conv_first.weight"].shape[1]
    scale = {1: 4, 4: 2, 16: 1}.get(folded // num_out_ch, 4)
    return {"num_in_ch": folded // {4: 1, 2: 4, 1: 16}[scale], "num_out_ch": num_out_ch, "scale": scale,
            "num_feat": s["conv_first.weight"].shape[0],
            "num_block": count_indices(s, r"body\.(\d+)\.rdb1\.conv1\.weight"),
            "num_grow_ch": s["body.0.rdb1.conv1.weight"].shape[0]}


_OFFICIAL_NAMES = {"trunk_conv": "conv_body", "upconv1": "conv_up1", "upconv2": "conv_up2", "HRconv": "conv_hr"}


def _renamed(s: StateDict, block: str, fixed: dict[str, str]) -> StateDict:
    """Keys matching ``block`` (groups: block, dense block, conv, param) -> ``body.N.rdbK.convJ``; the rest by
    ``fixed``."""
    out = {}
    for key, value in s.items():
        m = re.fullmatch(block, key)
        if m:
            out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = value
            continue
        module, _, param = key.rpartition(".")
        out[f"{fixed.get(module, module)}.{param}"] = value
    return out


def _convert_esrgan(s: StateDict) -> tuple[StateDict, dict] | None:
    """xinntao/ESRGAN's two official layouts -> ours.

    The current one (``RRDBNet_arch.py``: ``conv_first``, ``RRDB_trunk.N.RDBk.convj``, ``trunk_conv``,
    ``upconv1/2``, ``HRconv``, ``conv_last``; RRDB_ESRGAN_x4.pth today) and the original one it was
    converted from (``model.0``, ``model.1.sub.N.RDBk.convj.0``, ``model.3/6/8/10``).
    """
    if "RRDB_trunk.0.RDB1.conv1.weight" in s and "trunk_conv.weight" in s:
        return _renamed(s, r"RRDB_trunk\.(\d+)\.RDB(\d)\.conv(\d)\.(weight|bias)", _OFFICIAL_NAMES), {}
    if not ("model.0.weight" in s and "model.1.sub.0.RDB1.conv1.0.weight" in s):
        return None
    num_block = count_indices(s, r"model\.1\.sub\.(\d+)\.RDB1\.conv1\.0\.weight")
    fixed = {"model.0": "conv_first", f"model.1.sub.{num_block}": "conv_body", "model.3": "conv_up1",
             "model.6": "conv_up2", "model.8": "conv_hr", "model.10": "conv_last"}
    return _renamed(s, r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)", fixed), {}


def _facts(kw: dict) -> ModelFacts:
    scale = kw["scale"]
    unshuffle = {4: 1, 2: 2, 1: 4}[scale]  # x2 and x1 fold the input by pixel-unshuffle
    return ModelFacts("sr", scale, kw["num_in_ch"], kw["num_out_ch"], size_multiple=unshuffle, min_size=unshuffle)


ARCHS = (ArchSpec(RRDBNet, _detect, _facts, convert=_convert_esrgan),)
