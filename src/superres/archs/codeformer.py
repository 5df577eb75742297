"""CodeFormer: Zhou, Chan, Li and Loy, "Towards Robust Blind Face Restoration with Codebook Lookup
Transformer", NeurIPS 2022.

A VQGAN (:mod:`superres.archs.vqgan`) trained on high-quality faces gives a codebook and a decoder
(``generator``). For a degraded face, the encoder's 16 x 16 features go through a Transformer
(Sec. 3.2) that predicts, for each position, the index of a codebook entry; the entries, given the
encoder features' per-channel mean and deviation (AdaIN), are decoded. The controllable feature
transformation (Sec. 3.3) adds ``w`` x (the decoder's features x scale + shift), with scale and
shift computed from the encoder's features at 32, 64, 128 and 256: ``w`` (``fidelity_weight``)
trades quality (0) for fidelity to the input (1).

Layout as the official code (sczhou/CodeFormer ``codeformer_arch.py``, ``codeformer.pth``), which
fixes the VQGAN to 512 x 512 faces, 64 base channels and multipliers 1, 2, 2, 4, 4, 8 (the defaults
here; other widths make smaller test networks); inference as its script (``adain=True``, ``w`` 0.5
unless given). ``forward`` takes and returns N x 3 x 512 x 512 RGB in [0, 1]; the [-1, 1] convention,
the clamp and dropping the logits are inside it.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from superres.archs.spec import ArchSpec, ModelFacts, StateDict, count_indices
from superres.archs.vqgan import (
    CODEBOOK_PRECISIONS,
    Downsample,
    ResnetBlock,
    Upsample,
    VectorQuantizer,
    group_norm,
)

RES_BLOCKS, ATTN_RES, EMB_DIM = 2, 16, 256  # fixed by the official code, as its 16 x 16 latent grid


def face_size(ch_mult: tuple[int, ...] | list[int]) -> int:
    """The face size: the lowest level is the 16 x 16 latent grid."""
    return ATTN_RES * 2 ** (len(ch_mult) - 1)


# VQGAN's residual block, its 1x1 shortcut named as in CodeFormer's checkpoints
ResBlock = partial(ResnetBlock, shortcut="conv_out")


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h_ = self.norm(x)
        b, c, h, w = x.shape
        q, k, v = (t.reshape(b, 1, c, h * w).transpose(2, 3) for t in (self.q(h_), self.k(h_), self.v(h_)))
        out = nn.functional.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(out.transpose(2, 3).reshape(b, c, h, w))


def _encoder_blocks(nf: int, ch_mult: tuple[int, ...]) -> tuple[list[nn.Module], dict[int, int]]:
    """The VQGAN encoder as one list (the official ``encoder.blocks.N``), and for each resolution the
    index of the block after which the fusion takes its features (after the level's residual blocks,
    before the attention at 16)."""
    blocks: list[nn.Module] = [nn.Conv2d(3, nf, 3, 1, 1)]
    taps, res, ch = {}, face_size(ch_mult), nf
    for i, mult in enumerate(ch_mult):
        for _ in range(RES_BLOCKS):
            blocks.append(ResBlock(ch, nf * mult))
            ch = nf * mult
            if res == ATTN_RES:
                blocks.append(AttnBlock(ch))
        taps[res] = len(blocks) - 1 - (res == ATTN_RES)
        if i < len(ch_mult) - 1:
            blocks.append(Downsample(ch))
            res //= 2
    blocks += [ResBlock(ch, ch), AttnBlock(ch), ResBlock(ch, ch), group_norm(ch), nn.Conv2d(ch, EMB_DIM, 3, 1, 1)]
    return blocks, taps


def _generator_blocks(nf: int, ch_mult: tuple[int, ...]) -> tuple[list[nn.Module], dict[int, int]]:
    """The VQGAN decoder (``generator.blocks.N``), and the index of the block after which each resolution
    is fused (after its first residual block; at 16, after the second, before the attention)."""
    ch, res = nf * ch_mult[-1], ATTN_RES
    blocks: list[nn.Module] = [nn.Conv2d(EMB_DIM, ch, 3, 1, 1), ResBlock(ch, ch), AttnBlock(ch), ResBlock(ch, ch)]
    taps = {}
    for i in reversed(range(len(ch_mult))):
        for j in range(RES_BLOCKS):
            blocks.append(ResBlock(ch, nf * ch_mult[i]))
            ch = nf * ch_mult[i]
            if res == ATTN_RES:
                blocks.append(AttnBlock(ch))
            if j == (1 if res == ATTN_RES else 0):
                taps[res] = len(blocks) - 1 - (res == ATTN_RES)
        if i > 0:
            blocks.append(Upsample(ch))
            res *= 2
    blocks += [group_norm(ch), nn.Conv2d(ch, 3, 3, 1, 1)]
    return blocks, taps


class _Blocks(nn.Module):
    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


class TransformerSALayer(nn.Module):
    """Pre-norm Transformer layer: self-attention with the position embedding added to queries and keys,
    then a GELU MLP."""

    def __init__(self, embed_dim: int, nhead: int = 8, dim_mlp: int = 2048):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(embed_dim, nhead)
        self.linear1 = nn.Linear(embed_dim, dim_mlp)
        self.linear2 = nn.Linear(dim_mlp, embed_dim)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.self_attn(h + pos, h + pos, h, need_weights=False)[0]
        return x + self.linear2(nn.functional.gelu(self.linear1(self.norm2(x))))


class FuseSFTBlock(nn.Module):
    """Controllable feature transformation (Sec. 3.3): decoder + w * (decoder * scale + shift), scale and
    shift from the encoder's and decoder's features (the official ``Fuse_sft_block``)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.encode_enc = ResBlock(2 * in_ch, out_ch)
        self.scale = nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.LeakyReLU(0.2),
                                   nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.shift = nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.LeakyReLU(0.2),
                                   nn.Conv2d(out_ch, out_ch, 3, padding=1))

    def forward(self, enc_feat: Tensor, dec_feat: Tensor, w: float) -> Tensor:
        enc_feat = self.encode_enc(torch.cat([enc_feat, dec_feat], dim=1))
        return dec_feat + w * (dec_feat * self.scale(enc_feat) + self.shift(enc_feat))


def adaptive_instance_normalization(content: Tensor, style: Tensor, eps: float = 1e-5) -> Tensor:
    """``content`` given the per-channel mean and (unbiased) standard deviation of ``style``."""
    def stats(t: Tensor) -> tuple[Tensor, Tensor]:
        flat = t.flatten(2)
        return flat.mean(2)[..., None, None], (flat.var(2) + eps).sqrt()[..., None, None]

    (c_mean, c_std), (s_mean, s_std) = stats(content), stats(style)
    return (content - c_mean) / c_std * s_std + s_mean


class CodeFormer(nn.Module):
    """CodeFormer with the released model's defaults (``codeformer.pth``).

    ``fidelity_weight`` is ``w`` (0: quality, 1: fidelity; also settable as an attribute). ``n_head``
    is not recorded in the weights; ``connect_list`` names the fused resolutions. ``nf`` and ``ch_mult``
    (the VQGAN's widths, fixed in the official code) set the face size, 16 x 2^(len(ch_mult) - 1).
    """

    def __init__(self, dim_embd: int = 512, n_head: int = 8, n_layers: int = 9, codebook_size: int = 1024,
                 latent_size: int = 256, connect_list: tuple[str, ...] = ("32", "64", "128", "256"),
                 fidelity_weight: float = 0.5, nf: int = 64, ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4, 8)):
        super().__init__()
        self.fidelity_weight = fidelity_weight
        self.connect_list = [str(s) for s in connect_list]
        ch_mult = tuple(ch_mult)
        encoder, self._enc_taps = _encoder_blocks(nf, ch_mult)
        generator, self._gen_taps = _generator_blocks(nf, ch_mult)
        self.encoder = _Blocks(encoder)
        self.quantize = VectorQuantizer(codebook_size, EMB_DIM)
        self.generator = _Blocks(generator)
        self.position_emb = nn.Parameter(torch.zeros(latent_size, dim_embd))
        self.feat_emb = nn.Linear(EMB_DIM, dim_embd)
        self.ft_layers = nn.Sequential(*[TransformerSALayer(dim_embd, n_head, 2 * dim_embd) for _ in range(n_layers)])
        self.idx_pred_layer = nn.Sequential(nn.LayerNorm(dim_embd), nn.Linear(dim_embd, codebook_size, bias=False))
        channels = {face_size(ch_mult) >> i: nf * mult for i, mult in enumerate(ch_mult)}
        if not {int(s) for s in self.connect_list} <= channels.keys():
            raise ValueError(f"connect_list {self.connect_list}: the resolutions are {sorted(channels)}")
        self.fuse_convs_dict = nn.ModuleDict({s: FuseSFTBlock(channels[int(s)], channels[int(s)])
                                              for s in self.connect_list})

    def restore(self, x: Tensor, w: float | None = None) -> Tensor:
        """The official function on [-1, 1] images (``w`` defaults to ``fidelity_weight``)."""
        w = self.fidelity_weight if w is None else w
        fused = {int(s) for s in self.connect_list}
        enc_taps = {self._enc_taps[s]: s for s in fused}
        enc_feats = {}
        for i, block in enumerate(self.encoder.blocks):
            x = block(x)
            if i in enc_taps:
                enc_feats[enc_taps[i]] = x
        lq_feat = x
        n, _, h, wd = lq_feat.shape
        pos = self.position_emb.unsqueeze(1)
        query = self.feat_emb(lq_feat.flatten(2).permute(2, 0, 1))  # HW x N x dim
        for layer in self.ft_layers:
            query = layer(query, pos)
        logits = self.idx_pred_layer(query)  # HW x N x codebook
        indices = logits.argmax(-1).t().reshape(n, h, wd)
        x = adaptive_instance_normalization(self.quantize.lookup(indices), lq_feat)
        gen_taps = {self._gen_taps[s]: s for s in fused}
        for i, block in enumerate(self.generator.blocks):
            x = block(x)
            if i in gen_taps and w > 0:
                x = self.fuse_convs_dict[str(gen_taps[i])](enc_feats[gen_taps[i]], x, w)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return (self.restore(x * 2 - 1).clamp(-1, 1) + 1) / 2


def _detect(s: StateDict) -> dict | None:
    if not {"position_emb", "feat_emb.weight", "idx_pred_layer.1.weight", "quantize.embedding.weight",
            "ft_layers.0.self_attn.in_proj_weight", "encoder.blocks.0.weight", "generator.blocks.0.weight"} <= s.keys():
        return None
    sizes = sorted({int(k.split(".")[1]) for k in s if k.startswith("fuse_convs_dict.")})
    nf = s["encoder.blocks.0.weight"].shape[0]
    ch_mult, level_start = [], True  # each level's first residual block tells its width
    for i in range(count_indices(s, r"encoder\.blocks\.(\d+)\..*")):
        if f"encoder.blocks.{i}.conv.weight" in s:  # a Downsample ends the level
            level_start = True
        elif level_start and f"encoder.blocks.{i}.conv1.weight" in s:
            ch_mult.append(s[f"encoder.blocks.{i}.conv1.weight"].shape[0] // nf)
            level_start = False
    return {"nf": nf, "ch_mult": ch_mult,
            "dim_embd": s["position_emb"].shape[1], "n_layers": count_indices(s, r"ft_layers\.(\d+)\.norm1\.weight"),
            "codebook_size": s["idx_pred_layer.1.weight"].shape[0], "latent_size": s["position_emb"].shape[0],
            "connect_list": [str(v) for v in sizes]}


def _facts(kw: dict) -> ModelFacts:
    size = face_size(kw["ch_mult"])
    return ModelFacts("face", 1, 3, 3, size_multiple=size, min_size=size, precisions=CODEBOOK_PRECISIONS)


ARCHS = (ArchSpec(CodeFormer, _detect, _facts),)
