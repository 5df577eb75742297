"""RestoreFormer: Wang, Li, Zhang, Zhang and Luo, "RestoreFormer: High-Quality Blind Face Restoration
from Undegraded Key-Value Pairs", CVPR 2022.

A VQGAN-style encoder (:mod:`superres.archs.vqgan`) maps the degraded face to features whose
nearest entries in a learned codebook of high-quality face parts are the "undegraded key-value
pairs"; the decoder restores the face with multi-head cross-attention (Sec. 3.2, MHCA) whose
queries come from the degraded face's encoder features and whose keys and values come from the
quantized features, at the lowest resolution (16 x 16 for 512 x 512 faces).

Layout as the official code (wzhouxiff/RestoreFormer, copied into GFPGAN as
``restoreformer_arch.py``; ``RestoreFormer.pth`` of the GFPGAN v1.3 release). The official code
places attention where the features are 16 x 16 and only works when that is the lowest level,
so the face size is S = 16 x 2^(levels - 1) (512 for the released model). ``forward`` takes and
returns N x 3 x S x S RGB in [0, 1]; the [-1, 1] convention and the clamp are inside it.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from superres.archs.spec import ArchSpec, ModelFacts, StateDict, count_indices
from superres.archs.vqgan import (
    CODEBOOK_PRECISIONS,
    Downsample,
    ResnetBlock,
    Upsample,
    VectorQuantizer,
    group_norm,
    swish,
)


class MultiHeadAttnBlock(nn.Module):
    """Multi-head attention over all positions; with ``y``, queries come from ``y`` (cross-attention)."""

    def __init__(self, channels: int, head_size: int = 8):
        super().__init__()
        if channels % head_size:
            raise ValueError(f"{channels} channels do not split into {head_size} heads")
        self.head_size = head_size  # the number of heads (the official name)
        self.norm1 = group_norm(channels)
        self.norm2 = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h_ = self.norm1(x)
        q = self.q(h_ if y is None else self.norm2(y))
        b, c, h, w = q.shape

        def heads(t: Tensor) -> Tensor:  # B x heads x HW x C/heads
            return t.reshape(b, self.head_size, c // self.head_size, h * w).transpose(2, 3)

        out = F.scaled_dot_product_attention(heads(q), heads(self.k(h_)), heads(self.v(h_)))
        return x + self.proj_out(out.transpose(2, 3).reshape(b, c, h, w))


class _Level(nn.Module):
    """One resolution: its residual blocks with attention after each (lowest level only); the encoder
    adds its ``downsample``, the decoder its ``upsample``."""

    def __init__(self, in_ch: int, out_ch: int, num_blocks: int, attention: bool, head_size: int):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(in_ch if i == 0 else out_ch, out_ch) for i in range(num_blocks))
        self.attn = nn.ModuleList(MultiHeadAttnBlock(out_ch, head_size) for _ in range(num_blocks if attention else 0))

    def forward(self, h: Tensor, context: Tensor | None = None) -> Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if self.attn:
                h = self.attn[i](h, context)
        return h


class _Mid(nn.Module):
    def __init__(self, channels: int, head_size: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = MultiHeadAttnBlock(channels, head_size)
        self.block_2 = ResnetBlock(channels, channels)


class MultiHeadEncoder(nn.Module):
    """Returns the latent features and the two features the decoder attends to: the middle block's
    first residual block's output (for the lowest level) and the middle block's output."""

    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, in_channels: int, z_channels: int,
                 head_size: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1)
        mults = (1, *ch_mult)
        last = len(ch_mult) - 1
        self.down = nn.ModuleList()
        for i in range(len(ch_mult)):
            level = _Level(ch * mults[i], ch * mults[i + 1], num_res_blocks, i == last, head_size)
            if i != last:
                level.downsample = Downsample(ch * mults[i + 1])
            self.down.append(level)
        self.mid = _Mid(ch * ch_mult[-1], head_size)
        self.norm_out = group_norm(ch * ch_mult[-1])
        self.conv_out = nn.Conv2d(ch * ch_mult[-1], z_channels, 3, 1, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = self.conv_in(x)
        for i, level in enumerate(self.down):
            h = level(h)
            if i < len(self.down) - 1:
                h = level.downsample(h)
        h = self.mid.block_1(h)
        lowest = h
        h = self.mid.block_2(self.mid.attn_1(h))
        return self.conv_out(swish(self.norm_out(h))), lowest, h


class MultiHeadDecoderTransformer(nn.Module):
    """The decoder with cross-attention to the encoder's features (MHCA) in its middle block and at the
    lowest level."""

    def __init__(self, ch: int, out_ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, z_channels: int,
                 head_size: int):
        super().__init__()
        block_in = ch * ch_mult[-1]
        last = len(ch_mult) - 1
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, 1, 1)
        self.mid = _Mid(block_in, head_size)
        levels: list[nn.Module] = []
        for i in reversed(range(len(ch_mult))):
            level = _Level(block_in, ch * ch_mult[i], num_res_blocks + 1, i == last, head_size)
            if i != 0:
                level.upsample = Upsample(ch * ch_mult[i])
            levels.insert(0, level)
            block_in = ch * ch_mult[i]
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, 1, 1)

    def forward(self, z: Tensor, lowest: Tensor, mid: Tensor) -> Tensor:
        h = self.mid.block_1(self.conv_in(z))
        h = self.mid.block_2(self.mid.attn_1(h, mid))
        for i in reversed(range(len(self.up))):
            h = self.up[i](h, lowest)
            if i > 0:
                h = self.up[i].upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


class RestoreFormer(nn.Module):
    """RestoreFormer with the released model's defaults (``RestoreFormer.pth``: 512 x 512 faces).

    ``head_size`` is the number of attention heads (the official name); the weights do not record it.
    """

    def __init__(self, n_embed: int = 1024, embed_dim: int = 256, ch: int = 64, out_ch: int = 3,
                 ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4, 8), num_res_blocks: int = 2, in_channels: int = 3,
                 z_channels: int = 256, head_size: int = 8):
        super().__init__()
        ch_mult = tuple(ch_mult)
        self.encoder = MultiHeadEncoder(ch, ch_mult, num_res_blocks, in_channels, z_channels, head_size)
        self.decoder = MultiHeadDecoderTransformer(ch, out_ch, ch_mult, num_res_blocks, z_channels, head_size)
        self.quantize = VectorQuantizer(n_embed, embed_dim)
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)

    def restore(self, x: Tensor) -> Tensor:
        """The official function on [-1, 1] images."""
        z, lowest, mid = self.encoder(x)
        quant = self.quantize.nearest(self.quant_conv(z))
        return self.decoder(self.post_quant_conv(quant), lowest, mid)

    def forward(self, x: Tensor) -> Tensor:
        return (self.restore(x * 2 - 1).clamp(-1, 1) + 1) / 2


def _detect(s: StateDict) -> dict | None:
    needed = {"quantize.embedding.weight", "encoder.conv_in.weight", "quant_conv.weight", "post_quant_conv.weight",
              "encoder.down.0.block.0.norm1.weight", "encoder.mid.attn_1.q.weight", "decoder.conv_out.weight"}
    if not needed <= s.keys():
        return None
    ch = s["encoder.conv_in.weight"].shape[0]
    levels = count_indices(s, r"encoder\.down\.(\d+)\.block\.0\.conv1\.weight")
    return {"n_embed": s["quantize.embedding.weight"].shape[0], "embed_dim": s["quantize.embedding.weight"].shape[1],
            "ch": ch, "out_ch": s["decoder.conv_out.weight"].shape[0],
            "ch_mult": [s[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] // ch for i in range(levels)],
            "num_res_blocks": count_indices(s, r"encoder\.down\.0\.block\.(\d+)\.conv1\.weight"),
            "in_channels": s["encoder.conv_in.weight"].shape[1], "z_channels": s["quant_conv.weight"].shape[1]}


def _facts(kw: dict) -> ModelFacts:
    size = 16 * 2 ** (len(kw["ch_mult"]) - 1)
    return ModelFacts("face", 1, kw["in_channels"], kw["out_ch"], size_multiple=size, min_size=size,
                      precisions=CODEBOOK_PRECISIONS)


ARCHS = (ArchSpec(RestoreFormer, _detect, _facts),)
