"""BasicVSR: Chan, Wang, Yu, Dong and Loy, "BasicVSR: The Search for Essential Components in Video
Super-Resolution and Beyond", CVPR 2021.

Bidirectional recurrent propagation: a backward and a forward branch each carry a feature map
through the clip, aligned to the current frame by warping with SPyNet flow, refined by residual
blocks with the current frame; the two are fused per frame and upsampled x4 by two pixel
shuffles, on top of a bilinear upsampling of the frame. Input N x T x 3 x H x W in [0, 1]. Key
names follow BasicSR's ``BasicVSR`` and ``IconVSR`` (30 blocks: 6,291,311 and 8,694,991 parameters).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from superres.archs.blocks import ResidualBlockNoBN
from superres.archs.edvr import EDVRFeatureExtractor
from superres.archs.spec import ArchSpec, ModelFacts, StateDict, VideoRun, count_indices
from superres.archs.spynet import FLOW_PRECISIONS, SpyNet, flow_warp


class ConvResidualBlocks(nn.Module):
    """conv 3x3 + LeakyReLU(0.1), then ``num_block`` residual blocks (the propagation branches)."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 64, num_block: int = 15):
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(num_in_ch, num_out_ch, 3, 1, 1), nn.LeakyReLU(0.1),
                                  nn.Sequential(*(ResidualBlockNoBN(num_out_ch) for _ in range(num_block))))

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


class _Recurrent(nn.Module):
    """What BasicVSR and IconVSR share: SPyNet flows and the x4 pixel-shuffle upsampler."""

    def _build(self, num_feat: int) -> None:
        self.num_feat = num_feat
        self.spynet = SpyNet()
        self.upconv1 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
        self.upconv2 = nn.Conv2d(num_feat, 64 * 4, 3, 1, 1)
        self.conv_hr = nn.Conv2d(64, 64, 3, 1, 1)
        self.conv_last = nn.Conv2d(64, 3, 3, 1, 1)
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.lrelu = nn.LeakyReLU(0.1)

    def flows(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(forward, backward) flows, each N x (T-1) x 2 x H x W: frame i+-1 onto frame i."""
        n, t, c, h, w = x.shape
        prev, nxt = x[:, :-1].reshape(-1, c, h, w), x[:, 1:].reshape(-1, c, h, w)
        backward = self.spynet(prev, nxt).view(n, t - 1, 2, h, w)
        forward = self.spynet(nxt, prev).view(n, t - 1, 2, h, w)
        return forward, backward

    def upsample(self, feat: Tensor, frame: Tensor) -> Tensor:
        out = self.lrelu(self.pixel_shuffle(self.upconv1(feat)))
        out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
        out = self.conv_last(self.lrelu(self.conv_hr(out)))
        return out + F.interpolate(frame, scale_factor=4, mode="bilinear", align_corners=False)


class BasicVSR(_Recurrent):
    """BasicVSR x4 with ``num_block`` residual blocks per branch (the paper: 30)."""

    def __init__(self, num_feat: int = 64, num_block: int = 30):
        super().__init__()
        self._build(num_feat)
        self.backward_trunk = ConvResidualBlocks(num_feat + 3, num_feat, num_block)
        self.forward_trunk = ConvResidualBlocks(num_feat + 3, num_feat, num_block)
        self.fusion = nn.Conv2d(num_feat * 2, num_feat, 1, 1, 0)

    def forward(self, x: Tensor) -> Tensor:
        n, t, _, h, w = x.shape
        flows_forward, flows_backward = self.flows(x)
        backward_feats: list[Tensor] = [x] * t
        feat = x.new_zeros(n, self.num_feat, h, w)
        for i in range(t - 1, -1, -1):
            if i < t - 1:
                feat = flow_warp(feat, flows_backward[:, i].permute(0, 2, 3, 1))
            feat = self.backward_trunk(torch.cat([x[:, i], feat], 1))
            backward_feats[i] = feat
        outputs = []
        feat = x.new_zeros(n, self.num_feat, h, w)
        for i in range(t):
            if i > 0:
                feat = flow_warp(feat, flows_forward[:, i - 1].permute(0, 2, 3, 1))
            feat = self.forward_trunk(torch.cat([x[:, i], feat], 1))
            fused = self.lrelu(self.fusion(torch.cat([backward_feats[i], feat], 1)))
            outputs.append(self.upsample(fused, x[:, i]))
        return torch.stack(outputs, dim=1)


class IconVSR(_Recurrent):
    """IconVSR (the same paper, Sec. 4): BasicVSR plus information refill and coupled propagation.

    Every ``keyframe_stride``-th frame (and the last) gets features from an EDVR extractor on the
    ``2 * temporal_padding + 1`` frames around it, fused into both branches ("refill"), and the
    forward branch also sees the backward branch's features ("coupled"). Frame sizes are padded
    to multiples of 4 (for EDVR's pyramid); clips need at least 2 * temporal_padding + 1 frames.
    30 blocks: 8,694,991 parameters.
    """

    def __init__(self, num_feat: int = 64, num_block: int = 30, keyframe_stride: int = 5,
                 temporal_padding: int = 2):
        super().__init__()
        if temporal_padding not in (2, 3):
            raise ValueError(f"temporal_padding must be 2 or 3 (as the official models), got {temporal_padding}")
        self._build(num_feat)
        self.keyframe_stride, self.temporal_padding = keyframe_stride, temporal_padding
        self.edvr = EDVRFeatureExtractor(temporal_padding * 2 + 1, num_feat)
        self.backward_fusion = nn.Conv2d(2 * num_feat, num_feat, 3, 1, 1)
        self.backward_trunk = ConvResidualBlocks(num_feat + 3, num_feat, num_block)
        self.forward_fusion = nn.Conv2d(2 * num_feat, num_feat, 3, 1, 1)
        self.forward_trunk = ConvResidualBlocks(2 * num_feat + 3, num_feat, num_block)

    def keyframe_features(self, x: Tensor, keyframes: list[int]) -> dict[int, Tensor]:
        p = self.temporal_padding
        # mirrored frames at both ends, in the official order (frames p+2 .. 3 first, for p = 2: 4, 3)
        before, after = list(range(2 * p, p, -1)), [-(p + 2 + i) for i in range(p)]
        padded = torch.cat([x[:, before], x, x[:, after]], dim=1)
        return {i: self.edvr(padded[:, i:i + 2 * p + 1]) for i in keyframes}

    def forward(self, x: Tensor) -> Tensor:
        n, t, c, h_in, w_in = x.shape
        if t < 2 * self.temporal_padding + 1:
            raise ValueError(f"IconVSR needs clips of at least {2 * self.temporal_padding + 1} frames, got {t}")
        pad_h, pad_w = -h_in % 4, -w_in % 4
        x = F.pad(x.reshape(-1, c, h_in, w_in), [0, pad_w, 0, pad_h], mode="reflect").view(n, t, c, h_in + pad_h,
                                                                                             w_in + pad_w)
        h, w = x.shape[-2:]
        keyframes = list(range(0, t, self.keyframe_stride))
        if keyframes[-1] != t - 1:
            keyframes.append(t - 1)
        flows_forward, flows_backward = self.flows(x)
        refill = self.keyframe_features(x, keyframes)
        backward_feats: list[Tensor] = [x] * t
        feat = x.new_zeros(n, self.num_feat, h, w)
        for i in range(t - 1, -1, -1):
            if i < t - 1:
                feat = flow_warp(feat, flows_backward[:, i].permute(0, 2, 3, 1))
            if i in refill:
                feat = self.backward_fusion(torch.cat([feat, refill[i]], 1))
            feat = self.backward_trunk(torch.cat([x[:, i], feat], 1))
            backward_feats[i] = feat
        outputs = []
        feat = torch.zeros_like(feat)
        for i in range(t):
            if i > 0:
                feat = flow_warp(feat, flows_forward[:, i - 1].permute(0, 2, 3, 1))
            if i in refill:
                feat = self.forward_fusion(torch.cat([feat, refill[i]], 1))
            feat = self.forward_trunk(torch.cat([x[:, i], backward_feats[i], feat], 1))
            outputs.append(self.upsample(feat, x[:, i]))
        return torch.stack(outputs, dim=1)[..., : 4 * h_in, : 4 * w_in]


def _detect_basicvsr(s: StateDict) -> dict | None:
    if not {"backward_trunk.main.0.weight", "fusion.weight", "spynet.basic_module.0.basic_module.0.weight"} <= s.keys():
        return None
    return {"num_feat": s["fusion.weight"].shape[0],
            "num_block": count_indices(s, r"backward_trunk\.main\.2\.(\d+)\.conv1\.weight")}


def _detect_iconvsr(s: StateDict) -> dict | None:
    if not {"forward_fusion.weight", "edvr.fusion.feat_fusion.weight", "backward_trunk.main.0.weight"} <= s.keys():
        return None
    num_feat = s["backward_fusion.weight"].shape[0]
    frames = s["edvr.fusion.feat_fusion.weight"].shape[1] // num_feat
    return {"num_feat": num_feat, "num_block": count_indices(s, r"backward_trunk\.main\.2\.(\d+)\.conv1\.weight"),
            "temporal_padding": (frames - 1) // 2}


# Recurrent: clips of 15 frames with 3 frames of context on each side.
_CLIPS = VideoRun("clip", 15, overlap=3)


def _facts_basicvsr(kw: dict) -> ModelFacts:
    return ModelFacts("video", 4, 3, 3, precisions=FLOW_PRECISIONS, video=_CLIPS)  # flow warping: fp32


def _facts_iconvsr(kw: dict) -> ModelFacts:
    # It pads frames to multiples of 4 itself, by reflection, which needs 3 rows and columns.
    # fp32: flow warping, and EDVR's deformable convolutions (no bf16 kernel in torchvision).
    # Its key-frame module (EDVR) needs 2 x temporal_padding + 1 frames: no one-frame clips.
    video = VideoRun("clip", 15, overlap=3, single_frame=False)
    return ModelFacts("video", 4, 3, 3, min_size=3, precisions=FLOW_PRECISIONS, video=video)


ARCHS = (
    ArchSpec(BasicVSR, _detect_basicvsr, _facts_basicvsr),
    ArchSpec(IconVSR, _detect_iconvsr, _facts_iconvsr),
)
