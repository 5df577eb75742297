"""HAT: Chen, Wang, Zhou, Qiao and Dong, "Activating More Pixels in Image Super-Resolution
Transformer", CVPR 2023 (the official ``hat_arch.py`` of XPixelGroup/HAT): HAT, HAT-S and HAT-L.

Residual hybrid attention groups (RHAG), each a series of hybrid attention blocks (HAB: (shifted)
window self-attention plus a channel-attention convolution block scaled by ``conv_scale``) and one
overlapping cross-attention block (OCAB: queries from each window, keys and values from a larger
overlapping window), then a conv; a pixel-shuffle upsampler. Inputs must be multiples of the window
size (the official test code pads them by reflection; here the runner pads, see ``size_multiple``).
Sizes: HAT ``embed_dim=180, depths=(6,)*6, num_heads=(6,)*6``; HAT-S ``embed_dim=144,
compress_ratio=24, squeeze_factor=24``; HAT-L twelve groups. All with ``window_size=16``,
``mlp_ratio=2``. Layout as the official code (``layers.N.residual_group.blocks.M.attn.qkv``,
``relative_position_index_SA``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from superres.archs.blocks import Upsample, init_transformer_weights
from superres.archs.spec import ArchSpec, ModelFacts, StateDict, count_indices
from superres.archs.swinir import Mlp, PatchEmbed, WindowAttention  # HAT builds on SwinIR's blocks

_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth per sample (training only). Written out rather than torchvision's StochasticDepth:
    importing torchvision costs seconds, and loading any model imports every architecture."""
    if not training or p == 0.0:
        return x
    keep = x.new_empty(x.shape[0], *([1] * (x.ndim - 1))).bernoulli_(1 - p)
    return x * keep / (1 - p)


def window_partition(x: Tensor, ws: int) -> Tensor:
    """(b, h, w, c) -> (b * windows, ws * ws, c), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows: Tensor, ws: int, h: int, w: int) -> Tensor:
    """(b * windows, ws * ws, c) -> (b, h, w, c)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def _relative_index(ws_query: int, ws_key: int) -> Tensor:
    """Index into a relative-position bias table: query window ``ws_query``, key window ``ws_key``
    centred on it (equal for window attention, larger for OCAB)."""
    q = torch.stack(torch.meshgrid(torch.arange(ws_query), torch.arange(ws_query), indexing="ij")).flatten(1)
    k = torch.stack(torch.meshgrid(torch.arange(ws_key), torch.arange(ws_key), indexing="ij")).flatten(1)
    if ws_query == ws_key:
        rel = (q[:, :, None] - k[:, None, :]).permute(1, 2, 0) + (ws_query - 1)
    else:
        rel = (k[:, None, :] - q[:, :, None]).permute(1, 2, 0) + (ws_query - ws_key + 1)
    return rel[..., 0] * (ws_query + ws_key - 1) + rel[..., 1]


class ChannelAttention(nn.Module):
    """RCAN's channel attention."""

    def __init__(self, num_feat: int, squeeze_factor: int):
        super().__init__()
        self.attention = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(num_feat, num_feat // squeeze_factor, 1),
                                       nn.ReLU(inplace=True), nn.Conv2d(num_feat // squeeze_factor, num_feat, 1),
                                       nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.attention(x)


class CAB(nn.Module):
    """Channel attention block: conv, GELU, conv, channel attention."""

    def __init__(self, num_feat: int, compress_ratio: int, squeeze_factor: int):
        super().__init__()
        self.cab = nn.Sequential(nn.Conv2d(num_feat, num_feat // compress_ratio, 3, 1, 1), nn.GELU(),
                                 nn.Conv2d(num_feat // compress_ratio, num_feat, 3, 1, 1),
                                 ChannelAttention(num_feat, squeeze_factor))

    def forward(self, x: Tensor) -> Tensor:
        return self.cab(x)


class HAB(nn.Module):
    """Hybrid attention block: (shifted) window attention + conv_scale x CAB, then an MLP."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, compress_ratio: int,
                 squeeze_factor: int, conv_scale: float, mlp_ratio: float, qkv_bias: bool, drop_path: float):
        super().__init__()
        self.window_size, self.shift_size, self.conv_scale = window_size, shift_size, conv_scale
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, own_index=False)
        self.conv_block = CAB(dim, compress_ratio, squeeze_factor)
        self.drop_path_rate = drop_path
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, x_size: tuple[int, int], rpi_sa: Tensor, attn_mask: Tensor) -> Tensor:
        h, w = x_size
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        conv_x = self.conv_block(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(b, h * w, c)
        s = self.shift_size
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        windows = self.attn(window_partition(y, self.window_size), attn_mask if s else None, rpi_sa)
        y = window_reverse(windows, self.window_size, h, w)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        p, training = self.drop_path_rate, self.training
        x = x + drop_path(y.reshape(b, h * w, c), p, training) + conv_x * self.conv_scale
        return x + drop_path(self.mlp(self.norm2(x)), p, training)


class OCAB(nn.Module):
    """Overlapping cross-attention block: each window's queries attend to an enlarged window's keys."""

    def __init__(self, dim: int, window_size: int, overlap_ratio: float, num_heads: int, qkv_bias: bool,
                 mlp_ratio: float):
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.overlap_win_size = ow = int(window_size * overlap_ratio) + window_size
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.unfold = nn.Unfold(kernel_size=ow, stride=window_size, padding=(ow - window_size) // 2)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((window_size + ow - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, x_size: tuple[int, int], rpi: Tensor) -> Tensor:
        h, w = x_size
        b, _, c = x.shape
        ws, ow, heads, d = self.window_size, self.overlap_win_size, self.num_heads, c // self.num_heads
        qkv = self.qkv(self.norm1(x)).view(b, h, w, 3 * c)
        q = window_partition(qkv[..., :c], ws)  # (b * nw, ws * ws, c)
        kv = self.unfold(qkv[..., c:].permute(0, 3, 1, 2))  # (b, 2c * ow * ow, nw)
        kv = kv.view(b, 2, c, ow * ow, -1).permute(1, 0, 4, 3, 2).reshape(2, -1, ow * ow, c)
        q = q.view(-1, ws * ws, heads, d).transpose(1, 2)
        k, v = (t.view(-1, ow * ow, heads, d).transpose(1, 2) for t in kv)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn + self.relative_position_bias_table[rpi.view(-1)].view(ws * ws, ow * ow, -1).permute(2, 0, 1)
        out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, ws * ws, c)
        x = self.proj(window_reverse(out, ws, h, w).reshape(b, h * w, c)) + x
        return x + self.mlp(self.norm2(x))


class AttenBlocks(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, overlap_ratio: float,
                 drop_path: list[float], **block):
        super().__init__()
        self.blocks = nn.ModuleList([
            HAB(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, drop_path=drop_path[i], **block)
            for i in range(depth)])
        self.overlap_attn = OCAB(dim, window_size, overlap_ratio, num_heads, block["qkv_bias"], block["mlp_ratio"])

    def forward(self, x: Tensor, x_size: tuple[int, int], params: dict[str, Tensor]) -> Tensor:
        for blk in self.blocks:
            x = blk(x, x_size, params["rpi_sa"], params["attn_mask"])
        return self.overlap_attn(x, x_size, params["rpi_oca"])


class RHAG(nn.Module):
    """Residual hybrid attention group: attention blocks, a conv, and the group's input added back."""

    def __init__(self, dim: int, resi_connection: str, **blocks):
        super().__init__()
        self.residual_group = AttenBlocks(dim, **blocks)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1) if resi_connection == "1conv" else nn.Identity()

    def forward(self, x: Tensor, x_size: tuple[int, int], params: dict[str, Tensor]) -> Tensor:
        b, _, c = x.shape
        y = self.residual_group(x, x_size, params).transpose(1, 2).reshape(b, c, *x_size)
        return self.conv(y).flatten(2).transpose(1, 2) + x


class HAT(nn.Module):
    def __init__(self, in_chans: int = 3, embed_dim: int = 96, depths: tuple[int, ...] = (6, 6, 6, 6),
                 num_heads: tuple[int, ...] = (6, 6, 6, 6), window_size: int = 7, compress_ratio: int = 3,
                 squeeze_factor: int = 30, conv_scale: float = 0.01, overlap_ratio: float = 0.5,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path_rate: float = 0.1,
                 patch_norm: bool = True, upscale: int = 2, img_range: float = 1.0, resi_connection: str = "1conv",
                 num_feat: int = 64):
        super().__init__()
        if resi_connection not in ("1conv", "identity"):
            raise ValueError(f"resi_connection must be 1conv or identity, got {resi_connection!r}")
        self.window_size, self.upscale, self.img_range = window_size, upscale, img_range
        mean = _RGB_MEAN if in_chans == 3 else (0.0,) * in_chans
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        ow = int(window_size * overlap_ratio) + window_size
        self.register_buffer("relative_position_index_SA", _relative_index(window_size, window_size))
        self.register_buffer("relative_position_index_OCA", _relative_index(window_size, ow))
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim, patch_norm)
        n = sum(depths)
        rates = [drop_path_rate * i / max(n - 1, 1) for i in range(n)]  # stochastic depth: deeper blocks more
        starts = [sum(depths[:i]) for i in range(len(depths))]
        self.layers = nn.ModuleList([
            RHAG(embed_dim, resi_connection, depth=depth, num_heads=heads, window_size=window_size,
                 overlap_ratio=overlap_ratio, drop_path=rates[start:start + depth], compress_ratio=compress_ratio,
                 squeeze_factor=squeeze_factor, conv_scale=conv_scale, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias)
            for depth, heads, start in zip(depths, num_heads, starts, strict=True)])
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1) if resi_connection == "1conv" else nn.Identity()
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True))
        self.upsample = Upsample(upscale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
        self.apply(init_transformer_weights)

    def _attn_mask(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """Shifted windows: -100 between tokens that come from different regions before the roll."""
        ws, s = self.window_size, self.window_size // 2
        region = torch.zeros(1, h, w, 1, device=device, dtype=dtype)
        bands = (slice(0, -ws), slice(-ws, -s), slice(-s, None))
        for i, (hs, wsl) in enumerate((a, b) for a in bands for b in bands):
            region[:, hs, wsl] = i
        labels = window_partition(region, ws).squeeze(-1)
        diff = labels[:, None, :] - labels[:, :, None]
        return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)

    def forward_features(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        params = {"attn_mask": self._attn_mask(h, w, x.device, x.dtype), "rpi_sa": self.relative_position_index_SA,
                  "rpi_oca": self.relative_position_index_OCA}
        tokens = self.patch_embed(x)
        for layer in self.layers:
            tokens = layer(tokens, (h, w), params)
        return self.norm(tokens).transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        if h % self.window_size or w % self.window_size:
            raise ValueError(f"HAT needs height and width that are multiples of {self.window_size}, got {h}x{w}")
        mean = self.mean.to(x.dtype)
        x = self.conv_first((x - mean) * self.img_range)
        x = self.conv_after_body(self.forward_features(x)) + x
        x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        return x / self.img_range + mean


def _ratio(whole: int, part: int) -> int:
    """The integer r with whole // r == part (exact division first: 180 / 6 = 30)."""
    if whole % part == 0:
        return whole // part
    return next(r for r in range(1, whole + 1) if whole // r == part)


def _detect(s: StateDict) -> dict | None:
    block = "layers.0.residual_group.blocks.0."
    if not {"relative_position_index_SA", "relative_position_index_OCA", "conv_first.weight", "conv_last.weight",
            block + "conv_block.cab.0.weight", "layers.0.residual_group.overlap_attn.qkv.weight"} <= s.keys():
        return None
    embed_dim, in_chans = s["conv_first.weight"].shape[:2]
    num_feat = s["conv_last.weight"].shape[1]
    ws = math.isqrt(s["relative_position_index_SA"].shape[0])
    ow = math.isqrt(s["relative_position_index_OCA"].shape[1])
    ratio = (ow - ws) / ws
    while int(ws * ratio) + ws < ow:  # float rounding (e.g. 3 / 7 * 7 < 3)
        ratio = math.nextafter(ratio, 1.0)
    n_layers = count_indices(s, r"layers\.(\d+)\..*")
    ups = [s[k] for k in sorted(k for k in s if k.startswith("upsample.") and k.endswith(".weight"))]
    upscale = 3 if len(ups) == 1 and ups[0].shape[0] == 9 * num_feat else 2 ** len(ups)
    return {
        "in_chans": in_chans, "embed_dim": embed_dim,
        "depths": [count_indices(s, rf"layers\.{i}\.residual_group\.blocks\.(\d+)\..*") for i in range(n_layers)],
        "num_heads": [s[f"layers.{i}.residual_group.overlap_attn.relative_position_bias_table"].shape[1]
                      for i in range(n_layers)],
        "window_size": ws, "overlap_ratio": ratio,
        "compress_ratio": _ratio(embed_dim, s[block + "conv_block.cab.0.weight"].shape[0]),
        "squeeze_factor": _ratio(embed_dim, s[block + "conv_block.cab.3.attention.1.weight"].shape[0]),
        "mlp_ratio": s[block + "mlp.fc1.weight"].shape[0] / embed_dim,
        "qkv_bias": block + "attn.qkv.bias" in s, "patch_norm": "patch_embed.norm.weight" in s,
        "upscale": upscale, "resi_connection": "1conv" if "conv_after_body.weight" in s else "identity",
        "num_feat": num_feat,
    }


def _facts(kw: dict) -> ModelFacts:
    # fp16 overflows in the attention of the official weights (spandrel marks HAT fp32/bf16 only)
    return ModelFacts("sr", kw["upscale"], kw["in_chans"], kw["in_chans"], size_multiple=kw["window_size"],
                      precisions=("fp32", "bf16"))


ARCHS = (ArchSpec(HAT, _detect, _facts),)
