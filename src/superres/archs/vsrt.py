"""VSR-Transformer: Cao, Li, Zhang and Van Gool, "Video Super-Resolution Transformer", arXiv 2106.06847 (2021).

Per-frame features (a convolution and ``num_extract_block`` residual blocks) plus a 3-D sinusoidal
position encoding go through ``depth`` transformer layers, each of

- spatial-temporal convolutional self-attention (Sec. 3.2): Q and K by depthwise 3x3
  convolutions, V by a 3x3 convolution, all unfolded into ``patch_size`` x ``patch_size`` patches;
  every patch of every frame attends to all patches of all frames; the result is folded back,
  passed through a 3x3 convolution and added to its input;
- the bidirectional optical-flow feed-forward (Sec. 3.3): the next (previous) frame's features
  warped by SPyNet flow onto each frame, concatenated with the frame, refined by 30 residual
  blocks per direction, fused by a 1x1 convolution;

each wrapped as x + f(LayerNorm(x)). Reconstruction (``num_reconstruct_block`` residual blocks)
and two x2 pixel shuffles add to a bilinear x4 upsampling of every frame. Input N x T x 3 x H x W
in [0, 1], output N x T x 3 x 4H x 4W.

Key names follow the official code (caojiezhang/VSR-Transformer, ``vsrTransformer``), whose
SPyNet has MMEditing's layout and whose position encoding is the ``positional-encodings``
package's 2021 ``PositionalEncodingPermute3D(num_frame)``: it treats the T axis as channels and
encodes (feature channel, row, column) positions. Its LayerNorm and Fold are sized for
``feat_size`` x ``feat_size`` inputs (64, the training patch), so the official network only runs
on 64x64 frames. Here any frame size works: larger frames are cut into ``feat_size`` tiles that
overlap by ``tile_overlap`` pixels, each tile runs the whole network (flows included), and the
outputs are blended with linear ramps across the overlaps; smaller frames are padded by edge
replication and cropped back. At exactly ``feat_size`` x ``feat_size`` it is the official function.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from superres.archs.basicvsr import ConvResidualBlocks
from superres.archs.blocks import ResidualBlockNoBN
from superres.archs.spec import ArchSpec, ModelFacts, StateDict, VideoRun, count_indices
from superres.archs.spynet import FLOW_PRECISIONS, SpyNet, flow_warp


class _Frequencies(nn.Module):
    """The encoding's inverse frequencies (a buffer, as the official checkpoint stores them)."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = 2 * math.ceil(channels / 6)
        self.register_buffer("inv_freq", 1.0 / 10000 ** (torch.arange(0, self.channels, 2).float() / self.channels))


class PositionEncoding3D(nn.Module):
    """3-D sinusoidal encoding of (dim 2, dim 3, dim 4) positions, written into dim 1 (N x D1 x X x Y x Z).

    For each axis, sin of all frequencies then cos of all frequencies; the three axes' codes are
    concatenated and the first D1 values kept.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.penc = _Frequencies(channels)

    def forward(self, x: Tensor) -> Tensor:
        _, ch, *sizes = x.shape
        inv_freq = self.penc.inv_freq
        codes = []
        for axis, size in enumerate(sizes):
            phase = torch.arange(size, device=x.device, dtype=inv_freq.dtype)[:, None] * inv_freq
            code = torch.cat((phase.sin(), phase.cos()), dim=-1)  # size x channels
            shape = [1, 1, 1, code.shape[-1]]
            shape[axis] = size
            codes.append(code.view(shape).expand(*sizes, code.shape[-1]))
        emb = torch.cat(codes, dim=-1)[..., :ch].to(x.dtype)  # X x Y x Z x ch
        return emb.permute(3, 0, 1, 2).unsqueeze(0).expand_as(x)


class _Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor, **kwargs) -> Tensor:
        return self.fn(x, **kwargs) + x


class _PreNorm(nn.Module):
    """LayerNorm over (C, H, W) of each frame, with per-position affine weights."""

    def __init__(self, num_feat: int, feat_size: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm([num_feat, feat_size, feat_size])
        self.fn = fn

    def forward(self, x: Tensor, **kwargs) -> Tensor:
        return self.fn(self.norm(x), **kwargs)


class SpatioTemporalAttention(nn.Module):
    """Convolutional self-attention over the patches of all frames (Sec. 3.2); adds its input."""

    def __init__(self, num_feat: int = 64, patch_size: int = 8, heads: int = 1, feat_size: int = 64):
        super().__init__()
        self.heads, self.patch_size, self.feat_size = heads, patch_size, feat_size
        self.to_q = nn.Conv2d(num_feat, num_feat, 3, padding=1, groups=num_feat)
        self.to_k = nn.Conv2d(num_feat, num_feat, 3, padding=1, groups=num_feat)
        self.to_v = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.conv = nn.Conv2d(num_feat, num_feat, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c, h, w = x.shape
        p, heads = self.patch_size, self.heads
        n = (h // p) * (w // p)
        d = c * p * p // heads
        frames = x.reshape(-1, c, h, w)

        def patches(y: Tensor) -> Tensor:  # B x heads x d x (T * n)
            y = F.unfold(y, kernel_size=p, stride=p).view(b, t, heads, d, n)
            return y.permute(0, 2, 3, 1, 4).reshape(b, heads, d, t * n)

        q, k, v = patches(self.to_q(frames)), patches(self.to_k(frames)), patches(self.to_v(frames))
        attn = torch.softmax(q.transpose(2, 3) @ k * d ** -0.5, dim=-1)
        out = (attn @ v.transpose(2, 3)).view(b, heads, t, n, d).permute(0, 2, 1, 4, 3).reshape(b * t, heads * d, n)
        out = F.fold(out, output_size=(h, w), kernel_size=p, stride=p)
        return self.conv(out).view(x.shape) + x


class FlowFeedForward(nn.Module):
    """Bidirectional optical-flow feed-forward (Sec. 3.3): neighbours' features warped onto each frame."""

    def __init__(self, num_feat: int = 64, num_block: int = 30):
        super().__init__()
        self.backward_resblocks = ConvResidualBlocks(num_feat + 3, num_feat, num_block)
        self.forward_resblocks = ConvResidualBlocks(num_feat + 3, num_feat, num_block)
        self.fusion = nn.Conv2d(num_feat * 2, num_feat, 1, 1, 0)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1)

    def forward(self, x: Tensor, lrs: Tensor, flows: tuple[Tensor, Tensor]) -> Tensor:
        b, t, c, h, w = x.shape
        frames = lrs.reshape(b * t, -1, h, w)
        flows_forward, flows_backward = flows
        following = torch.cat([x[:, 1:], x[:, -1:]], dim=1).reshape(-1, c, h, w)  # frame i+1 (last: itself)
        following = flow_warp(following, flows_backward.reshape(-1, 2, h, w).permute(0, 2, 3, 1))
        following = self.backward_resblocks(torch.cat([frames, following], 1))
        preceding = torch.cat([x[:, :1], x[:, :-1]], dim=1).reshape(-1, c, h, w)  # frame i-1 (first: itself)
        preceding = flow_warp(preceding, flows_forward.reshape(-1, 2, h, w).permute(0, 2, 3, 1))
        preceding = self.forward_resblocks(torch.cat([frames, preceding], 1))
        return self.lrelu(self.fusion(torch.cat([following, preceding], 1))).view(x.shape)


class _Transformer(nn.Module):
    def __init__(self, num_feat: int, feat_size: int, depth: int, patch_size: int, heads: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.ModuleList([
            _Residual(_PreNorm(num_feat, feat_size, SpatioTemporalAttention(num_feat, patch_size, heads, feat_size))),
            _Residual(_PreNorm(num_feat, feat_size, FlowFeedForward(num_feat))),
        ]) for _ in range(depth))

    def forward(self, x: Tensor, lrs: Tensor, flows: tuple[Tensor, Tensor]) -> Tensor:
        for attn, ff in self.layers:
            x = ff(attn(x), lrs=lrs, flows=flows)
        return x


class _Flows(nn.Module):
    """The official ``Flow_spynet``: SPyNet flows between neighbours, each end frame paired with itself."""

    def __init__(self):
        super().__init__()
        self.spynet = SpyNet(layout="mmedit")

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(forward, backward) flows, each N x T x 2 x H x W: frame i-1 (i+1) onto frame i."""
        n, t, c, h, w = x.shape
        prev = torch.cat([x[:, :1], x[:, :-1]], dim=1).reshape(-1, c, h, w)
        nxt = torch.cat([x[:, 1:], x[:, -1:]], dim=1).reshape(-1, c, h, w)
        frames = x.reshape(-1, c, h, w)
        backward = self.spynet(frames, nxt).view(n, t, 2, h, w)
        forward = self.spynet(frames, prev).view(n, t, 2, h, w)
        return forward, backward


class VSRTransformer(nn.Module):
    """VSR-Transformer x4 with the official constructor arguments (``vsrTransformer``)."""

    def __init__(self, image_ch: int = 3, num_feat: int = 64, feat_size: int = 64, num_frame: int = 5,
                 num_extract_block: int = 5, num_reconstruct_block: int = 30, depth: int = 10, heads: int = 1,
                 patch_size: int = 8, tile_overlap: int = 16):
        super().__init__()
        if feat_size % patch_size or (num_feat * patch_size ** 2) % heads:
            raise ValueError("feat_size must be a multiple of patch_size, and heads divide num_feat * patch_size^2")
        if not 0 <= tile_overlap < feat_size:
            raise ValueError(f"tile_overlap must be in [0, {feat_size})")
        self.feat_size, self.num_frame, self.tile_overlap = feat_size, num_frame, tile_overlap
        self.conv_first = nn.Conv2d(image_ch, num_feat, 3, 1, 1)
        self.feature_extraction = nn.Sequential(*(ResidualBlockNoBN(num_feat) for _ in range(num_extract_block)))
        self.lrelu = nn.LeakyReLU(negative_slope=0.1)
        self.spynet = _Flows()
        self.pos_embedding = PositionEncoding3D(num_frame)
        self.transformer = _Transformer(num_feat, feat_size, depth, patch_size, heads)
        self.reconstruction = nn.Sequential(*(ResidualBlockNoBN(num_feat) for _ in range(num_reconstruct_block)))
        self.upconv1 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
        self.upconv2 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, image_ch, 3, 1, 1)

    def _forward_tile(self, x: Tensor) -> Tensor:
        b, t, c, h, w = x.shape
        frames = x.reshape(-1, c, h, w)
        feat = self.feature_extraction(self.lrelu(self.conv_first(frames))).view(b, t, -1, h, w)
        feat = feat + self.pos_embedding(feat)
        feat = self.transformer(feat, x, self.spynet(x)).reshape(b * t, -1, h, w)
        out = self.lrelu(self.pixel_shuffle(self.upconv1(self.reconstruction(feat))))
        out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
        out = self.conv_last(self.lrelu(self.conv_hr(out)))
        out = out + F.interpolate(frames, scale_factor=4, mode="bilinear", align_corners=False)
        return out.view(b, t, c, 4 * h, 4 * w)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c, h, w = x.shape
        if t != self.num_frame:
            raise ValueError(f"this VSR-Transformer takes {self.num_frame} frames (its position encoding), got {t}")
        size = self.feat_size
        if (h, w) == (size, size):
            return self._forward_tile(x)
        ph, pw = max(0, size - h), max(0, size - w)
        if ph or pw:  # smaller than a tile: replicate the edges, run, crop
            padded = F.pad(x.reshape(b, t * c, h, w), (0, pw, 0, ph), mode="replicate").view(b, t, c, h + ph, w + pw)
            return self.forward(padded)[..., :4 * h, :4 * w]
        return self._tiled(x)

    def _tiled(self, x: Tensor) -> Tensor:
        """Overlapping feat_size tiles, blended by linear ramps across each overlap."""
        from superres.ops.tiling import axis_weights

        b, t, c, h, w = x.shape
        size, overlap = self.feat_size, self.tile_overlap
        axes = []
        for length in (h, w):
            count = 1 if length == size else max(2, math.ceil((length - overlap) / (size - overlap)))
            starts = [round(i * (length - size) / max(count - 1, 1)) for i in range(count)]
            gaps = [after - before for before, after in itertools.pairwise(starts)]
            weights = axis_weights(starts, size, length, 0, size - max(gaps, default=0), 4)
            axes.append([(a, torch.from_numpy(wt.astype(np.float32)).to(x))
                         for a, wt in zip(starts, weights, strict=True)])
        out = x.new_zeros(b, t, c, 4 * h, 4 * w)
        for top, wy in axes[0]:
            for left, wx in axes[1]:
                tile = self._forward_tile(x[..., top:top + size, left:left + size])
                out[..., 4 * top:4 * (top + size), 4 * left:4 * (left + size)] += tile * wy[:, None] * wx[None, :]
        return out


__all__ = ["FlowFeedForward", "PositionEncoding3D", "SpatioTemporalAttention", "VSRTransformer"]


def _detect(s: StateDict) -> dict | None:
    """The frame count is not stored; the encoding's size tells 1-6 (taken as 5) from 7-12 (7)."""
    if "pos_embedding.penc.inv_freq" not in s or "transformer.layers.0.0.fn.norm.weight" not in s:
        return None
    num_feat, feat_size = s["transformer.layers.0.0.fn.norm.weight"].shape[:2]
    return {"image_ch": s["conv_first.weight"].shape[1], "num_feat": num_feat, "feat_size": feat_size,
            "num_frame": 5 if s["pos_embedding.penc.inv_freq"].numel() == 1 else 7,
            "num_extract_block": count_indices(s, r"feature_extraction\.(\d+)\.conv1\.weight"),
            "num_reconstruct_block": count_indices(s, r"reconstruction\.(\d+)\.conv1\.weight"),
            "depth": count_indices(s, r"transformer\.layers\.(\d+)\.0\.fn\.norm\.weight")}


def _facts(kw: dict) -> ModelFacts:
    # Any frame size (it tiles and pads itself); exactly num_frame frames per clip (its position
    # encoding), one frame of context each side; fp32 for its flow warping.
    return ModelFacts("video", 4, kw["image_ch"], kw["image_ch"], precisions=FLOW_PRECISIONS,
                      video=VideoRun("clip", kw["num_frame"], overlap=1, fixed=True, single_frame=False))


ARCHS = (ArchSpec(VSRTransformer, _detect, _facts),)
