"""SwinIR: Liang et al., "SwinIR: Image Restoration Using Swin Transformer", ICCVW 2021.

Shallow conv -> residual Swin Transformer blocks (RSTB: (shifted) window self-attention with a
relative position bias, an MLP, a conv and a skip) -> reconstruction. The upsamplers of the paper's
settings: ``pixelshuffle`` (classical SR), ``pixelshuffledirect`` (lightweight SR: one conv and
one pixel shuffle), ``nearest+conv`` (real-world SR, fewer artefacts), and ``""`` (scale 1:
denoising and JPEG artefact removal). Key names follow the official ``network_swinir.py``, so its
checkpoints (``001_classicalSR_DF2K_s64w8_SwinIR-M_x2.pth`` and the like, ``params`` or
``params_ema``) load strictly, the stored ``attn_mask`` and ``relative_position_index`` buffers
included. The masks are recomputed for each input size (the stored ones are for ``img_size``).
Dropout and stochastic depth, training-only, are left out.
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

RGB_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K's, as EDSR and SwinIR subtract it


def relative_position_index(wh: int, ww: int) -> Tensor:
    """For each pair of tokens in a wh x ww window, the index of their offset in a (2wh-1)(2ww-1) table."""
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    return (rel[..., 0] + wh - 1) * (2 * ww - 1) + rel[..., 1] + ww - 1


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a learned relative position bias (W-MSA).

    ``own_index``: the block stores its position index (SwinIR's layout); HAT's blocks share one that the
    network stores and passes to ``forward`` as ``index``.
    """

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True, own_index: bool = True):
        super().__init__()
        self.window_size, self.num_heads = window_size, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        if own_index:
            self.register_buffer("relative_position_index", relative_position_index(window_size, window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: Tensor, mask: Tensor | None = None, index: Tensor | None = None) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        index = self.relative_position_index if index is None else index
        bias = self.relative_position_bias_table[index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            windows = mask.shape[0]
            attn = (attn.view(-1, windows, self.num_heads, n, n) + mask[None, :, None]).view(-1, self.num_heads, n, n)
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(x)


class SwinTransformerBlock(nn.Module):
    """LayerNorm -> (shifted) window attention -> skip; LayerNorm -> MLP -> skip."""

    def __init__(self, dim: int, input_resolution: int, num_heads: int, window_size: int, shift_size: int,
                 mlp_ratio: float, qkv_bias: bool):
        super().__init__()
        if input_resolution <= window_size:  # the official rule: one window, no shift
            window_size, shift_size = input_resolution, 0
        self.window_size, self.shift_size = window_size, shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        if shift_size > 0:  # stored by the official code for img_size; kept so its files load strictly
            self.register_buffer("attn_mask", shifted_window_mask(input_resolution, input_resolution, window_size,
                                                                  window_size, shift_size, shift_size,
                                                                  torch.device("cpu")))
        else:
            self.attn_mask = None

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        h, w = x_size
        b, _, c = x.shape
        ws, s = self.window_size, self.shift_size
        y = self.norm1(x).view(b, h, w, c)
        mask = None
        if s > 0:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
            mask = shifted_window_mask(h, w, ws, ws, s, s, x.device).to(x.dtype)
        y = self.attn(window_partition(y, ws, ws), mask)
        y = window_reverse(y, ws, ws, h, w)
        if s > 0:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class BasicLayer(nn.Module):
    def __init__(self, dim: int, input_resolution: int, depth: int, num_heads: int, window_size: int,
                 mlp_ratio: float, qkv_bias: bool):
        super().__init__()
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(dim, input_resolution, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2,
                                 mlp_ratio, qkv_bias) for i in range(depth)])

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        for block in self.blocks:
            x = block(x, x_size)
        return x


def resi_conv(dim: int, resi_connection: str) -> nn.Module:
    """The conv closing a residual group: one 3x3, or 3x3 -> 1x1 -> 3x3 at a quarter width (to save weights)."""
    if resi_connection == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    if resi_connection == "3conv":
        return nn.Sequential(nn.Conv2d(dim, dim // 4, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
                             nn.Conv2d(dim // 4, dim // 4, 1, 1, 0), nn.LeakyReLU(0.2, inplace=True),
                             nn.Conv2d(dim // 4, dim, 3, 1, 1))
    raise ValueError(f"resi_connection must be '1conv' or '3conv', got {resi_connection!r}")


def tokens_to_image(x: Tensor, x_size: tuple[int, int]) -> Tensor:
    """B x HW x C -> B x C x H x W."""
    return x.transpose(1, 2).reshape(x.shape[0], -1, x_size[0], x_size[1])


class RSTB(nn.Module):
    """Residual Swin Transformer Block: Swin layers, a conv, and a skip over them."""

    def __init__(self, dim: int, input_resolution: int, depth: int, num_heads: int, window_size: int,
                 mlp_ratio: float, qkv_bias: bool, resi_connection: str):
        super().__init__()
        self.residual_group = BasicLayer(dim, input_resolution, depth, num_heads, window_size, mlp_ratio, qkv_bias)
        self.conv = resi_conv(dim, resi_connection)

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        return self.conv(tokens_to_image(self.residual_group(x, x_size), x_size)).flatten(2).transpose(1, 2) + x


class PatchEmbed(nn.Module):
    """Feature map -> tokens (patch size 1, as in every SwinIR setting), optionally layer-normed."""

    def __init__(self, embed_dim: int, patch_norm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(embed_dim) if patch_norm else None

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(2).transpose(1, 2)
        return self.norm(x) if self.norm is not None else x


class SwinIR(nn.Module):
    """``upscale`` 2/3/4/8 for SR (1 with ``upsampler=""``); ``img_range`` 1 for SR, 255 for JPEG artefacts.

    ``img_size`` is the training patch size: it only sets the stored masks' shape (and, when no larger
    than ``window_size``, the window). Inputs of any size work: they are padded by reflection to a
    multiple of ``window_size`` and the output cropped, as spandrel does (the official test script
    mirrors with the edge pixel repeated, and adds a whole window to sizes that are already multiples).
    """

    def __init__(self, img_size: int = 64, in_chans: int = 3, embed_dim: int = 96,
                 depths: tuple[int, ...] = (6, 6, 6, 6), num_heads: tuple[int, ...] = (6, 6, 6, 6),
                 window_size: int = 8, mlp_ratio: float = 2.0, qkv_bias: bool = True, patch_norm: bool = True,
                 upscale: int = 2, img_range: float = 1.0, upsampler: str = "pixelshuffle",
                 resi_connection: str = "1conv", num_feat: int = 64):
        super().__init__()
        if upsampler not in ("pixelshuffle", "pixelshuffledirect", "nearest+conv", ""):
            raise ValueError(f"unknown upsampler {upsampler!r}")
        if upsampler == "nearest+conv" and upscale not in (2, 4, 8):
            raise ValueError(f"nearest+conv upsamples x2, x4 or x8, got x{upscale}")
        if upsampler == "" and upscale != 1:
            raise ValueError(f"without an upsampler the scale is 1, got {upscale}")
        self.upscale, self.upsampler, self.img_range, self.window_size = upscale, upsampler, img_range, window_size
        mean = RGB_MEAN if in_chans == 3 else (0.0,) * in_chans
        self.register_buffer("mean", torch.tensor(mean).view(1, in_chans, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim, patch_norm)
        self.layers = nn.ModuleList([RSTB(embed_dim, img_size, d, h, window_size, mlp_ratio, qkv_bias, resi_connection)
                                     for d, h in zip(depths, num_heads, strict=True)])
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = resi_conv(embed_dim, resi_connection)
        if upsampler in ("pixelshuffle", "nearest+conv"):
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1),
                                                      nn.LeakyReLU(inplace=True))
        if upsampler == "pixelshuffle":
            self.upsample = Upsample(upscale, num_feat)
            self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
        elif upsampler == "pixelshuffledirect":
            self.upsample = nn.Sequential(nn.Conv2d(embed_dim, upscale**2 * in_chans, 3, 1, 1),
                                          nn.PixelShuffle(upscale))
        elif upsampler == "nearest+conv":
            self.conv_up = [f"conv_up{i + 1}" for i in range(int(math.log2(upscale)))]
            for name in self.conv_up:
                setattr(self, name, nn.Conv2d(num_feat, num_feat, 3, 1, 1))
            self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
            self.lrelu = nn.LeakyReLU(0.2, inplace=True)
        else:
            self.conv_last = nn.Conv2d(embed_dim, in_chans, 3, 1, 1)
        self.apply(init_transformer_weights)

    def forward_features(self, x: Tensor) -> Tensor:
        x_size = (x.shape[2], x.shape[3])
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x, x_size)
        return tokens_to_image(self.norm(x), x_size)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[2:]
        ws = self.window_size
        x = F.pad(x, (0, (ws - w % ws) % ws, 0, (ws - h % ws) % ws), mode="reflect")
        x = (x - self.mean) * self.img_range
        feat = self.conv_first(x)
        feat = self.conv_after_body(self.forward_features(feat)) + feat
        if self.upsampler == "pixelshuffle":
            out = self.conv_last(self.upsample(self.conv_before_upsample(feat)))
        elif self.upsampler == "pixelshuffledirect":
            out = self.upsample(feat)
        elif self.upsampler == "nearest+conv":
            out = self.conv_before_upsample(feat)
            for name in self.conv_up:
                out = self.lrelu(getattr(self, name)(F.interpolate(out, scale_factor=2, mode="nearest")))
            out = self.conv_last(self.lrelu(self.conv_hr(out)))
        else:
            out = x + self.conv_last(feat)
        out = out / self.img_range + self.mean
        return out[:, :, :h * self.upscale, :w * self.upscale]


_BLOCK = "layers.0.residual_group.blocks.0"


def _detect(s: StateDict) -> dict | None:
    # HAT's blocks share these names but keep their position index in the network, not in each block
    if not {"conv_first.weight", f"{_BLOCK}.attn.relative_position_bias_table",
            f"{_BLOCK}.attn.relative_position_index", f"{_BLOCK}.mlp.fc1.weight"} <= s.keys():
        return None
    if "conv_after_body.weight" not in s and "conv_after_body.4.weight" not in s:
        return None
    in_chans, embed_dim = s["conv_first.weight"].shape[1], s["conv_first.weight"].shape[0]
    num_layers = count_indices(s, r"layers\.(\d+)\.residual_group\.blocks\.0\.norm1\.weight")
    depths = [count_indices(s, rf"layers\.{i}\.residual_group\.blocks\.(\d+)\.norm1\.weight")
              for i in range(num_layers)]
    num_heads = [s[f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table"].shape[1]
                 for i in range(num_layers)]
    window_size = math.isqrt(s[f"{_BLOCK}.attn.relative_position_index"].shape[0])
    # img_size is stored only through the shifted blocks' masks (windows = (img_size / window_size)^2)
    mask = next((v for k, v in s.items() if k.endswith(".attn_mask")), None)
    img_size = math.isqrt(mask.shape[0]) * window_size if mask is not None else window_size
    num_feat = 64
    if "conv_before_upsample.0.weight" in s:
        num_feat = s["conv_before_upsample.0.weight"].shape[0]
        if "conv_up1.weight" in s:
            upsampler, upscale = "nearest+conv", 2 ** count_indices(s, r"conv_up(\d+)\.weight")
        else:
            upsampler, upscale = "pixelshuffle", subpixel_scale(s, num_feat)
    elif "upsample.0.weight" in s:
        upsampler, upscale = "pixelshuffledirect", math.isqrt(s["upsample.0.weight"].shape[0] // in_chans)
    else:
        upsampler, upscale = "", 1
    return {"img_size": img_size, "in_chans": in_chans, "embed_dim": embed_dim, "depths": depths,
            "num_heads": num_heads, "window_size": window_size,
            "mlp_ratio": s[f"{_BLOCK}.mlp.fc1.weight"].shape[0] / embed_dim,
            "qkv_bias": f"{_BLOCK}.attn.qkv.bias" in s, "patch_norm": "patch_embed.norm.weight" in s,
            "upscale": upscale,
            # not in the weights: the official JPEG artefact models (the only ones with 7x7 windows) take 0-255
            "img_range": 255.0 if window_size == 7 else 1.0,
            "upsampler": upsampler, "resi_connection": "1conv" if "conv_after_body.weight" in s else "3conv",
            "num_feat": num_feat}


def _facts(kw: dict) -> ModelFacts:
    # The window size: the runner pads by reflection and SwinIR's own padding then does nothing. fp16 is
    # left out as spandrel leaves it out for SwinIR (not checked here on real weights).
    return ModelFacts("sr", kw["upscale"], kw["in_chans"], kw["in_chans"], size_multiple=kw["window_size"],
                      precisions=("fp32", "bf16"))


ARCHS = (ArchSpec(SwinIR, _detect, _facts),)
