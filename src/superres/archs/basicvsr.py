"""BasicVSR: Chan, Wang, Yu, Dong and Loy, "BasicVSR: The Search for Essential Components in Video
Super-Resolution and Beyond", CVPR 2021.

Bidirectional recurrent propagation: a backward and a forward branch each carry a feature map
through the clip, aligned to the current frame by warping with SPyNet flow, refined by residual
blocks with the current frame; the two are fused per frame and upsampled x4 by two pixel
shuffles, on top of a bilinear upsampling of the frame. Input N x T x 3 x H x W in [0, 1]. Key
names follow BasicSR's ``BasicVSR`` (30 blocks: 6,291,311 parameters, as the paper).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from superres.archs.blocks import ResidualBlockNoBN
from superres.archs.spynet import SpyNet, flow_warp


class ConvResidualBlocks(nn.Module):
    """conv 3x3 + LeakyReLU(0.1), then ``num_block`` residual blocks (the propagation branches)."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 64, num_block: int = 15):
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(num_in_ch, num_out_ch, 3, 1, 1), nn.LeakyReLU(0.1),
                                  nn.Sequential(*(ResidualBlockNoBN(num_out_ch) for _ in range(num_block))))

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


class BasicVSR(nn.Module):
    """BasicVSR x4 with ``num_block`` residual blocks per branch (the paper: 30)."""

    def __init__(self, num_feat: int = 64, num_block: int = 30):
        super().__init__()
        self.num_feat = num_feat
        self.spynet = SpyNet()
        self.backward_trunk = ConvResidualBlocks(num_feat + 3, num_feat, num_block)
        self.forward_trunk = ConvResidualBlocks(num_feat + 3, num_feat, num_block)
        self.fusion = nn.Conv2d(num_feat * 2, num_feat, 1, 1, 0)
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
