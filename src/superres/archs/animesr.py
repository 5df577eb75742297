"""AnimeSR: Wu, Wang, Li, Zhang, Shan and Dong, "Learning Real-World Super-Resolution Models for
Animation Videos", NeurIPS 2022: its video network MSRSWVSR (multi-scale, unidirectional recurrent,
sliding window), as in the official ``animesr/archs/vsr_arch.py`` (TencentARC/AnimeSR; AnimeSR v2's
weights ``AnimeSR_v2.pth`` are a plain state dict of it).

Frame by frame, a recurrent cell takes the previous, current and next LR frames, the previous SR
output (pixel-unshuffled to LR size) and a hidden state, and gives the new SR frame (a pixel-shuffled
residual over the bilinearly upsampled current frame) and the next state. The cell is a stack of
residual blocks at three scales (1, 1/2, 1/4), right-aligned: the coarser stacks run in the last
blocks and are upsampled (bilinear) into the finer ones, then fused. The first frame's "previous"
frame is itself and the last frame's "next" is itself; the first SR frame and state are zeros. The
frames are padded to multiples of 4 by replicating edges (as the official inference does) and the
output cropped back. Layout as the official code (``recurrent_cell.body_s1_first.N.conv1``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from superres.archs.blocks import ResidualBlockNoBN
from superres.archs.spec import ArchSpec, ModelFacts, StateDict, VideoRun, count_indices


def _conv_lrelu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.LeakyReLU(0.1, inplace=True))


def _up(x: Tensor, scale: int) -> Tensor:
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


class RightAlignMSConvResidualBlocks(nn.Module):
    """Residual blocks at scales 1, 1/2 and 1/4 (``num_block`` each, non-increasing), the coarser ones
    aligned to the end of the finest stack and added into it; a two-conv fusion of all three."""

    def __init__(self, num_in_ch: int, num_state_ch: int, num_out_ch: int, num_block: tuple[int, int, int]):
        super().__init__()
        if not num_block[0] >= num_block[1] >= num_block[2]:
            raise ValueError(f"num_block must not increase from fine to coarse, got {num_block}")
        self.num_block = tuple(num_block)
        self.conv_s1_first = _conv_lrelu(num_in_ch, num_state_ch, 1)
        self.conv_s2_first = _conv_lrelu(num_state_ch, num_state_ch, 2)
        self.conv_s4_first = _conv_lrelu(num_state_ch, num_state_ch, 2)
        self.body_s1_first, self.body_s2_first, self.body_s4_first = (
            nn.ModuleList([ResidualBlockNoBN(num_state_ch) for _ in range(n)]) for n in num_block)
        self.fusion = nn.Sequential(nn.Conv2d(3 * num_state_ch, 2 * num_out_ch, 3, 1, 1),
                                    nn.LeakyReLU(0.1, inplace=True), nn.Conv2d(2 * num_out_ch, num_out_ch, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        n1, n2, n4 = self.num_block
        x_s1 = self.conv_s1_first(x)
        x_s2 = self.conv_s2_first(x_s1)
        x_s4 = self.conv_s4_first(x_s2)
        s2_started = s4_started = False  # a coarser stack feeds the finer ones once its first block ran
        for i in range(n1):
            coarse = (_up(x_s2, 2) if s2_started else 0) + (_up(x_s4, 4) if s4_started else 0)
            x_s1 = self.body_s1_first[i](x_s1 + coarse)
            if i >= n1 - n2:
                x_s2 = self.body_s2_first[i - n1 + n2](x_s2 + (_up(x_s4, 2) if s4_started else 0))
                s2_started = True
            if i >= n1 - n4:
                x_s4 = self.body_s4_first[i - n1 + n4](x_s4)
                s4_started = True
        return self.fusion(torch.cat((x_s1, _up(x_s2, 2), _up(x_s4, 4)), dim=1))


class MSRSWVSR(nn.Module):
    """AnimeSR's video network; ``forward`` runs a clip N x T x 3 x H x W -> N x T x 3 x 4H x 4W."""

    def __init__(self, num_feat: int = 64, num_block: tuple[int, int, int] = (5, 3, 2), netscale: int = 4):
        super().__init__()
        self.num_feat, self.netscale = num_feat, netscale
        sr_ch = 3 * netscale * netscale
        # previous, current and next frame; the previous SR frame at LR size; the state
        self.recurrent_cell = RightAlignMSConvResidualBlocks(3 * 3 + sr_ch + num_feat, num_feat, num_feat + sr_ch,
                                                             num_block)

    def cell(self, x: Tensor, fb: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One step, as the official forward: x = (previous, current, next) frames, fb = the previous SR
        frame, state -> (SR frame, next state)."""
        s = self.netscale
        out = self.recurrent_cell(torch.cat((x, F.pixel_unshuffle(fb, s), state), dim=1))
        image = F.pixel_shuffle(out[:, :3 * s * s], s) + _up(x[:, 3:6], s)
        return image, F.leaky_relu(out[:, 3 * s * s:], 0.1)

    def forward(self, x: Tensor) -> Tensor:
        n, t, _, h, w = x.shape
        s = self.netscale
        frames = F.pad(x.flatten(0, 1), (0, -w % 4, 0, -h % 4), "replicate").unflatten(0, (n, t))
        hp, wp = frames.shape[-2:]
        fb = x.new_zeros(n, 3, hp * s, wp * s)
        state = x.new_zeros(n, self.num_feat, hp, wp)
        outputs = []
        for i in range(t):
            neighbours = torch.cat((frames[:, max(i - 1, 0)], frames[:, i], frames[:, min(i + 1, t - 1)]), dim=1)
            fb, state = self.cell(neighbours, fb, state)
            outputs.append(fb[:, :, :h * s, :w * s])
        return torch.stack(outputs, dim=1)


def _detect(s: StateDict) -> dict | None:
    if not {"recurrent_cell.conv_s1_first.0.weight", "recurrent_cell.fusion.2.weight",
            "recurrent_cell.body_s4_first.0.conv1.weight"} <= s.keys():
        return None
    num_feat = s["recurrent_cell.conv_s2_first.0.weight"].shape[0]
    sr_ch = s["recurrent_cell.fusion.2.weight"].shape[0] - num_feat
    netscale = round((sr_ch / 3) ** 0.5)
    num_block = [count_indices(s, rf"recurrent_cell\.body_{scale}_first\.(\d+)\..*") for scale in ("s1", "s2", "s4")]
    return {"num_feat": num_feat, "num_block": num_block, "netscale": netscale}


# Unidirectional: a clip needs only past frames for context (and one next frame); 3 frames of overlap
# warm the state up before the frames that are kept, as BasicVSR's clips do.
_CLIPS = VideoRun("clip", 15, overlap=3)


def _facts(kw: dict) -> ModelFacts:
    return ModelFacts("video", kw["netscale"], 3, 3, video=_CLIPS)


ARCHS = (ArchSpec(MSRSWVSR, _detect, _facts),)
