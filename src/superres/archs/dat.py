"""DAT: Chen et al., "Dual Aggregation Transformer for Image Super-Resolution", ICCV 2023.

Residual groups of Dual Aggregation Transformer Blocks (DATB) that alternate two self-attentions:
spatial (rectangular windows, sp0 x sp1 for half the heads and sp1 x sp0 for the other half,
shifted in some blocks, with a dynamic position bias) and channel (attention across channels,
with a learned temperature). Each is paired with a depth-wise conv branch and the adaptive
interaction module (AIM: each branch gates the other, by a channel map and a spatial map), and
followed by the spatial-gate feed-forward network (SGFN). Settings: DAT and DAT-2 (``embed_dim``
180, six groups of six blocks, windows 8 x 32; DAT-2 with ``expansion_factor`` 2), DAT-S (windows
8 x 16), DAT-light (60 channels, one group of 18 blocks, ``pixelshuffledirect``).

Key names follow the official ``dat_arch.py`` so its checkpoints load strictly, the stored shift
masks (``attn_mask_0/1``, made for ``img_size``) included; masks are recomputed for each input size.
Any input size works: inside the spatial attention the features are zero-padded to a multiple of
the larger window side and cropped back, as the official code does. Dropout and stochastic depth,
training-only, are left out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from superres.archs.blocks import (
    Upsample,
    init_transformer_weights,
    shifted_window_mask,
    subpixel_scale,
    window_partition,
    window_reverse,
)
from superres.archs.spec import ArchSpec, ModelFacts, StateDict, count_indices
from superres.archs.swinir import RGB_MEAN, relative_position_index, resi_conv, tokens_to_image


class ToTokens(nn.Module):
    """B x C x H x W -> B x HW x C."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(2).transpose(1, 2)


class SpatialGate(nn.Module):
    """SGFN's gate: half the hidden channels, layer-normed and depth-wise convolved, gate the other half."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        x2 = self.conv(tokens_to_image(self.norm(x2), (h, w))).flatten(2).transpose(1, 2)
        return x1 * x2


class SGFN(nn.Module):
    """Spatial-gate feed-forward network: fc1 -> GELU -> spatial gate -> fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.sg = SpatialGate(hidden // 2)
        self.fc2 = nn.Linear(hidden // 2, dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        return self.fc2(self.sg(self.act(self.fc1(x)), h, w))


class DynamicPosBias(nn.Module):
    """Position bias from a small MLP over the relative offsets (Wang et al., CrossFormer), per head."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        pos_dim = dim // 4
        self.pos_proj = nn.Linear(2, pos_dim)
        self.pos1 = nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(inplace=True), nn.Linear(pos_dim, pos_dim))
        self.pos2 = nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(inplace=True), nn.Linear(pos_dim, pos_dim))
        self.pos3 = nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(inplace=True), nn.Linear(pos_dim, num_heads))

    def forward(self, biases: Tensor) -> Tensor:
        return self.pos3(self.pos2(self.pos1(self.pos_proj(biases))))


class SpatialAttention(nn.Module):
    """Self-attention in H_sp x W_sp windows (``idx`` 0: sp0 x sp1, 1: sp1 x sp0) with a dynamic position bias."""

    def __init__(self, dim: int, idx: int, split_size: tuple[int, int], num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.H_sp, self.W_sp = split_size if idx == 0 else split_size[::-1]
        self.pos = DynamicPosBias(dim // 4, num_heads)
        offsets = torch.meshgrid(torch.arange(1 - self.H_sp, self.H_sp), torch.arange(1 - self.W_sp, self.W_sp),
                                 indexing="ij")
        self.register_buffer("rpe_biases", torch.stack(offsets).flatten(1).transpose(0, 1).float())
        self.register_buffer("relative_position_index", relative_position_index(self.H_sp, self.W_sp))

    def forward(self, qkv: Tensor, h: int, w: int, mask: Tensor | None = None) -> Tensor:
        """3 x B x HW x C -> B x H x W x C."""
        c = qkv.shape[-1]
        n = self.H_sp * self.W_sp
        q, k, v = (window_partition(t.reshape(-1, h, w, c), self.H_sp, self.W_sp)
                   .reshape(-1, n, self.num_heads, c // self.num_heads).transpose(1, 2) for t in qkv)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.pos(self.rpe_biases)[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            windows = mask.shape[0]
            attn = (attn.view(-1, windows, self.num_heads, n, n) + mask[None, :, None]).view(-1, self.num_heads, n, n)
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(-1, n, c)
        return window_reverse(x, self.H_sp, self.W_sp, h, w)


def _conv_branch(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1, groups=dim), nn.BatchNorm2d(dim), nn.GELU())


def _channel_interaction(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, dim // 8, 1), nn.BatchNorm2d(dim // 8), nn.GELU(),
                         nn.Conv2d(dim // 8, dim, 1))


def _spatial_interaction(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(dim, dim // 16, 1), nn.BatchNorm2d(dim // 16), nn.GELU(), nn.Conv2d(dim // 16, 1, 1))


class AdaptiveSpatialAttention(nn.Module):
    """Spatial window attention (two window orientations, half the channels each) beside a depth-wise
    conv; the conv branch gates the attention by a channel map, the attention gates the conv spatially."""

    def __init__(self, dim: int, num_heads: int, reso: int, split_size: tuple[int, int], shift: bool,
                 qkv_bias: bool):
        super().__init__()
        self.split_size = tuple(split_size)
        self.shift_size = (split_size[0] // 2, split_size[1] // 2)
        self.shift = shift
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attns = nn.ModuleList([SpatialAttention(dim // 2, i, self.split_size, num_heads // 2) for i in range(2)])
        if shift:  # stored by the official code for img_size; kept so its files load strictly
            mask_0, mask_1 = self.masks(reso, reso, torch.device("cpu"))
            self.register_buffer("attn_mask_0", mask_0)
            self.register_buffer("attn_mask_1", mask_1)
        self.dwconv = _conv_branch(dim)
        self.channel_interaction = _channel_interaction(dim)
        self.spatial_interaction = _spatial_interaction(dim)

    def masks(self, h: int, w: int, device: torch.device) -> tuple[Tensor, Tensor]:
        (s0, s1), (t0, t1) = self.split_size, self.shift_size
        return shifted_window_mask(h, w, s0, s1, t0, t1, device), shifted_window_mask(h, w, s1, s0, t1, t0, device)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, c).permute(2, 0, 1, 3)  # 3 x B x HW x C
        v = tokens_to_image(qkv[2], (h, w))
        side = max(self.split_size)
        pad_b, pad_r = (side - h % side) % side, (side - w % side) % side
        qkv = F.pad(qkv.reshape(3 * b, h, w, c).permute(0, 3, 1, 2), (0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        qkv = qkv.permute(0, 2, 3, 1).reshape(3, b, hp, wp, c)
        half = c // 2
        (s0, s1) = self.shift_size
        if self.shift:
            mask_0, mask_1 = (m.to(x.dtype) for m in self.masks(hp, wp, x.device))
            qkv_0 = torch.roll(qkv[..., :half], shifts=(-s0, -s1), dims=(2, 3))
            qkv_1 = torch.roll(qkv[..., half:], shifts=(-s1, -s0), dims=(2, 3))
            x1 = torch.roll(self.attns[0](qkv_0, hp, wp, mask_0), shifts=(s0, s1), dims=(1, 2))
            x2 = torch.roll(self.attns[1](qkv_1, hp, wp, mask_1), shifts=(s1, s0), dims=(1, 2))
        else:
            x1 = self.attns[0](qkv[..., :half], hp, wp)
            x2 = self.attns[1](qkv[..., half:], hp, wp)
        attended = torch.cat([x1[:, :h, :w], x2[:, :h, :w]], dim=3).reshape(b, n, c)
        conv_x = self.dwconv(v)
        channel_map = self.channel_interaction(conv_x).view(b, 1, c)
        spatial_map = self.spatial_interaction(tokens_to_image(attended, (h, w)))
        attended = attended * torch.sigmoid(channel_map)
        conv_x = (torch.sigmoid(spatial_map) * conv_x).flatten(2).transpose(1, 2)
        return self.proj(attended + conv_x)


class AdaptiveChannelAttention(nn.Module):
    """Channel self-attention (normalised q, k; a learned temperature per head) beside a depth-wise conv;
    the attention gates the conv by a channel map, the conv gates the attention spatially."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.dwconv = _conv_branch(dim)
        self.channel_interaction = _channel_interaction(dim)
        self.spatial_interaction = _spatial_interaction(dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 4, 1)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)  # B x heads x head_dim x HW
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
        attended = (attn @ v).permute(0, 3, 1, 2).reshape(b, n, c)
        conv_x = self.dwconv(v.reshape(b, c, h, w))
        channel_map = self.channel_interaction(tokens_to_image(attended, (h, w)))
        spatial_map = self.spatial_interaction(conv_x).flatten(2).transpose(1, 2)
        attended = attended * torch.sigmoid(spatial_map)
        conv_x = (conv_x * torch.sigmoid(channel_map)).flatten(2).transpose(1, 2)
        return self.proj(attended + conv_x)


class DATB(nn.Module):
    """Dual Aggregation Transformer Block: spatial (even blocks) or channel (odd) attention, then SGFN."""

    def __init__(self, dim: int, num_heads: int, reso: int, split_size: tuple[int, int], expansion_factor: float,
                 qkv_bias: bool, rg_idx: int, b_idx: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        if b_idx % 2 == 0:
            # the official schedule of shifted windows: blocks 2, 6, 10, ... of even groups, 0, 4, 8, ... of odd
            shift = (b_idx - 2) % 4 == 0 and b_idx > 0 if rg_idx % 2 == 0 else b_idx % 4 == 0
            self.attn = AdaptiveSpatialAttention(dim, num_heads, reso, split_size, shift, qkv_bias)
        else:
            self.attn = AdaptiveChannelAttention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = SGFN(dim, int(dim * expansion_factor))

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        h, w = x_size
        x = x + self.attn(self.norm1(x), h, w)
        return x + self.ffn(self.norm2(x), h, w)


class ResidualGroup(nn.Module):
    def __init__(self, dim: int, reso: int, num_heads: int, split_size: tuple[int, int], expansion_factor: float,
                 qkv_bias: bool, depth: int, resi_connection: str, rg_idx: int):
        super().__init__()
        self.blocks = nn.ModuleList([DATB(dim, num_heads, reso, split_size, expansion_factor, qkv_bias, rg_idx, i)
                                     for i in range(depth)])
        self.conv = resi_conv(dim, resi_connection)

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        res = x
        for block in self.blocks:
            x = block(x, x_size)
        return res + self.conv(tokens_to_image(x, x_size)).flatten(2).transpose(1, 2)


class DAT(nn.Module):
    """``upscale`` 2/3/4; ``img_size`` is the training patch size (it only sets the stored masks' shape)."""

    def __init__(self, img_size: int = 64, in_chans: int = 3, embed_dim: int = 180,
                 split_size: tuple[int, int] = (2, 4), depth: tuple[int, ...] = (2, 2, 2, 2),
                 num_heads: tuple[int, ...] = (2, 2, 2, 2), expansion_factor: float = 4.0, qkv_bias: bool = True,
                 upscale: int = 2, img_range: float = 1.0, resi_connection: str = "1conv",
                 upsampler: str = "pixelshuffle", num_feat: int = 64):
        super().__init__()
        if upsampler not in ("pixelshuffle", "pixelshuffledirect"):
            raise ValueError(f"unknown upsampler {upsampler!r}")
        split = (int(split_size[0]), int(split_size[1]))
        self.upscale, self.upsampler, self.img_range = upscale, upsampler, img_range
        mean = RGB_MEAN if in_chans == 3 else (0.0,) * in_chans
        self.register_buffer("mean", torch.tensor(mean).view(1, in_chans, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.before_RG = nn.Sequential(ToTokens(), nn.LayerNorm(embed_dim))
        self.layers = nn.ModuleList([
            ResidualGroup(embed_dim, img_size, heads, split, expansion_factor, qkv_bias, d, resi_connection, i)
            for i, (d, heads) in enumerate(zip(depth, num_heads, strict=True))])
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = resi_conv(embed_dim, resi_connection)
        if upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1),
                                                      nn.LeakyReLU(inplace=True))
            self.upsample = Upsample(upscale, num_feat)
            self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
        else:
            self.upsample = nn.Sequential(nn.Conv2d(embed_dim, upscale**2 * in_chans, 3, 1, 1),
                                          nn.PixelShuffle(upscale))
        self.apply(init_transformer_weights)

    def forward_features(self, x: Tensor) -> Tensor:
        x_size = (x.shape[2], x.shape[3])
        x = self.before_RG(x)
        for layer in self.layers:
            x = layer(x, x_size)
        return tokens_to_image(self.norm(x), x_size)

    def forward(self, x: Tensor) -> Tensor:
        x = (x - self.mean) * self.img_range
        feat = self.conv_first(x)
        feat = self.conv_after_body(self.forward_features(feat)) + feat
        if self.upsampler == "pixelshuffle":
            out = self.conv_last(self.upsample(self.conv_before_upsample(feat)))
        else:
            out = self.upsample(feat)
        return out / self.img_range + self.mean


_BLOCK = "layers.0.blocks.0"


def _detect(s: StateDict) -> dict | None:
    if not {"conv_first.weight", "before_RG.1.weight", f"{_BLOCK}.attn.attns.0.rpe_biases",
            f"{_BLOCK}.ffn.sg.conv.weight"} <= s.keys():
        return None
    in_chans, embed_dim = s["conv_first.weight"].shape[1], s["conv_first.weight"].shape[0]
    num_layers = count_indices(s, r"layers\.(\d+)\.blocks\.0\.norm1\.weight")
    depth = [count_indices(s, rf"layers\.{i}\.blocks\.(\d+)\.norm1\.weight") for i in range(num_layers)]
    # channel attention (odd blocks) stores one temperature per head; spatial attention gives half to each window
    num_heads = [s[f"layers.{i}.blocks.1.attn.temperature"].shape[0] if depth[i] > 1
                 else 2 * s[f"layers.{i}.blocks.0.attn.attns.0.pos.pos3.2.weight"].shape[0] for i in range(num_layers)]
    split_size = [int(v) + 1 for v in s[f"{_BLOCK}.attn.attns.0.rpe_biases"][-1]]  # the largest offsets
    img_size = 64
    mask = next((v for k, v in s.items() if k.endswith("attn.attn_mask_0")), None)
    if mask is not None:  # windows x N x N, windows = (img_size / sp0) (img_size / sp1)
        img_size = math.isqrt(mask.shape[0] * split_size[0] * split_size[1])
    num_feat = 64
    if "conv_last.weight" in s:
        upsampler, num_feat = "pixelshuffle", s["conv_before_upsample.0.weight"].shape[0]
        upscale = subpixel_scale(s, num_feat)
    else:
        upsampler, upscale = "pixelshuffledirect", math.isqrt(s["upsample.0.weight"].shape[0] // in_chans)
    return {"img_size": img_size, "in_chans": in_chans, "embed_dim": embed_dim, "split_size": split_size,
            "depth": depth, "num_heads": num_heads,
            "expansion_factor": s[f"{_BLOCK}.ffn.fc1.weight"].shape[0] / embed_dim,
            "qkv_bias": f"{_BLOCK}.attn.qkv.bias" in s, "upscale": upscale,
            "resi_connection": "1conv" if "conv_after_body.weight" in s else "3conv", "upsampler": upsampler,
            "num_feat": num_feat}


def _facts(kw: dict) -> ModelFacts:
    # Any size: the network pads inside its spatial attention, as the official code (and the paper's
    # evaluation) does; padding the image first would change the result at the borders.
    return ModelFacts("sr", kw["upscale"], kw["in_chans"], kw["in_chans"], precisions=("fp32", "bf16"))


ARCHS = (ArchSpec(DAT, _detect, _facts),)
