"""The parts of spandrel's networks whose output at a pixel depends on the whole image, declared to the tiles.

A tile sees only its own pixels; :mod:`superres.infer.statistics` gives it what these parts compute on the whole
image's map (:func:`superres.ops.tiling.whole_map`, :func:`superres.ops.tiling.whole_value`), so that its output is
the whole image's. The networks are spandrel's, declared in place (:func:`declare`), their state dicts unchanged:
- OmniSR (Wang et al., "Omni Aggregation Networks for Lightweight Image Super-Resolution", CVPR 2023): its grid
  attention, over windows of 8 x 8 pixels spread evenly over the whole map (:class:`GridWindows`), and its ESA's
  pooled branch, upsampled to the map's size at sample positions that depend on it (:func:`pooled_branch`);
- RGT (Chen et al., "Recursive Generalization Transformer for Image Super-Resolution", ICLR 2024): its
  recursive-generalization self-attention, where every pixel attends to a map pooled from the whole map, by a
  recursion whose depth depends on its size (:func:`generalized`);
- AuraSR (fal.ai's GigaGAN upsampler, after Kang et al., "Scaling up GANs for Text-to-Image Synthesis", CVPR
  2023): the noise it adds to its input and the style it draws after it, both drawn over the whole image's
  shape (:func:`noised`, :func:`style_noise`), and its linear and full attention over all pixels
  (:func:`linear_context`, :func:`keys_values`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import cache, partial

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from superres.ops.tiling import whole_map, whole_value

GRID = ("b d (w1 x) (w2 y) -> b x y w1 w2 d", "b x y w1 w2 d -> b d (w1 x) (w2 y)")


def declare(model: nn.Module) -> int:
    """Declare, in place, the parts of ``model`` whose output depends on the whole image: grid windows
    (:func:`declare_grid_windows`), and spandrel's modules whose forward superres computes itself
    (:data:`FORWARDS`: ESA's pooled branch, RG-SA's generalized keys and values, AuraSR's noise, style and
    attention); returns how many it found."""
    found = declare_grid_windows(model, GRID)
    for module in model.modules():
        cls = type(module)
        where, uses, forward = FORWARDS.get(cls.__name__, ("", (), None))
        if forward is not None and cls.__module__.endswith(where) and all(hasattr(module, n) for n in uses):
            module.__class__ = _declared(cls, forward)
            found += 1
    return found


@cache
def _declared(cls: type, forward) -> type:
    """spandrel's class ``cls`` with ``forward``, which computes the same and declares its whole-map parts."""
    return type(cls.__name__, (cls,), {"forward": forward, "__module__": __name__})


class GridWindows(nn.Sequential):
    """Layers from a rearrangement of a map into grid windows (``b d (w1 x) (w2 y)``: window ``(x, y)`` takes
    the pixel at ``(x, y)`` of each of ``w1 x w2`` cells that tile the whole map) to its inverse, which work
    on each window apart (OmniSR's grid attention: Wang et al., "Omni Aggregation Networks for Lightweight
    Image Super-Resolution", CVPR 2023). :meth:`whole` computes them on a whole map a band of windows at a
    time, for tiles (:func:`superres.ops.tiling.whole_map`)."""

    def __init__(self, layers: list[nn.Module], cells: tuple[int, int], pixels: int = 1 << 14):
        super().__init__(*layers)
        self.cells, self.pixels = cells, pixels  # (w1, w2); the most pixels one band computes at once

    def whole(self, x: torch.Tensor) -> torch.Tensor:
        """The same as ``self(x)``, computed on bands of windows of about ``pixels`` pixels each."""
        rows, h, w = self.cells[0], *x.shape[-2:]
        cells = x.unflatten(-2, (rows, h // rows))  # (..., w1, x, W): band [i, j) holds windows x in [i, j)
        band = max(1, self.pixels // (rows * w))
        return torch.cat([self(cells[..., i:i + band, :].flatten(-3, -2)).unflatten(-2, (rows, -1))
                          for i in range(0, h // rows, band)], dim=-2).flatten(-3, -2)


class WindowSpans(nn.Sequential):
    """A sequence of layers (the same layers, under the same names) that runs each grid-window span
    (:class:`GridWindows`) through :func:`superres.ops.tiling.whole_map`, so that tiles compute it on the
    whole image's map."""

    def __init__(self, sequence: nn.Sequential, spans: list[tuple[int, int, tuple[int, int]]]):
        super().__init__(OrderedDict(sequence.named_children()))
        layers = list(sequence)
        # (a plain dict: the layers are registered once, as this sequence's own)
        self._spans = {i: (j, GridWindows(layers[i:j + 1], cells)) for i, j, cells in spans}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers, i = list(self), 0
        while i < len(layers):
            if i in self._spans:
                i, span = self._spans[i]
                x = whole_map(x, span)
            else:
                x = layers[i](x)
            i += 1
        return x


def pooled_branch(esa: nn.Module, c1_: torch.Tensor) -> torch.Tensor:
    """ESA's pooled branch (Liu et al., "Residual Feature Aggregation Network for Image Super-Resolution",
    CVPR 2020, as OmniSR has it): a strided convolution, max pooling (7, stride 3), a convolution, and bilinear
    upsampling back to the map's size, whose sample positions depend on the whole map's size."""
    c3 = esa.conv3(F.max_pool2d(esa.conv2(c1_), kernel_size=7, stride=3))
    return F.interpolate(c3, (c1_.size(2), c1_.size(3)), mode="bilinear", align_corners=False)


def _esa_forward(self, x: torch.Tensor) -> torch.Tensor:
    """ESA's forward, its pooled branch declared whole-map work."""
    c1_ = self.conv1(x)
    c3 = whole_map(c1_, partial(pooled_branch, self))
    c4 = self.conv4(c3 + self.conv_f(c1_))
    return x * self.sigmoid(c4)


def declare_grid_windows(model: nn.Module, patterns: tuple[str, str]) -> int:
    """Declare each span of ``model``'s sequences from a rearrangement of ``patterns[0]`` to the next of
    ``patterns[1]`` as whole-map work (:class:`WindowSpans`), in place; returns how many it found."""
    found = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.Sequential) or isinstance(child, WindowSpans):
                continue
            layers, spans = list(child), []
            for i, layer in enumerate(layers):
                if getattr(layer, "pattern", None) != patterns[0]:
                    continue
                end = next((j for j in range(i + 1, len(layers)) if getattr(layers[j], "pattern", None) == patterns[1]),
                           None)
                lengths = getattr(layer, "axes_lengths", {})
                if end is not None and {"w1", "w2"} <= set(lengths):
                    spans.append((i, end, (int(lengths["w1"]), int(lengths["w2"]))))
            if spans:
                setattr(parent, name, WindowSpans(child, spans))
                found += len(spans)
    return found


def generalized(attn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RG-SA's keys and values (RGT, as spandrel has it): its recursive generalization module pools the map
    ``x`` (N x C x H x W) by a strided convolution applied as many times as the map's size asks (at least
    twice), then a convolution and a norm make the keys and values every pixel attends to; the values get a
    positional convolution over the pooled map."""
    b, c, h, w = x.shape
    heads = attn.num_heads
    if attn.training:
        time = max(int(math.log(h // 4, 4)), int(math.log(w // 4, 4)))
    else:
        time = max(2, int(math.log(h // 16, 4)), int(math.log(w // 16, 4)))
    scale = 4**time
    for _ in range(time):
        x = attn.reduction1(x)
    x = attn.norm_act(attn.conv(attn.dwconv(x)).reshape(b, attn.cr, -1).permute(0, 2, 1).contiguous())
    k = attn.k(x).reshape(b, -1, heads, attn.cr // heads).permute(0, 2, 1, 3)
    v = attn.v(x).reshape(b, -1, heads, c // heads).permute(0, 2, 1, 3)
    pooled = v.transpose(1, 2).reshape(b, -1, c).transpose(1, 2).contiguous().view(b, c, h // scale, w // scale)
    v = v + attn.cpe(pooled).view(b, c, -1).view(b, heads, c // heads, -1).transpose(-1, -2)
    return k, v


def _rg_sa_forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:  # noqa: N803 (spandrel's names)
    """RG-SA's forward, its keys and values declared a value of the whole map."""
    b, n, c = x.shape
    k, v = whole_value(x.permute(0, 2, 1).reshape(b, c, H, W).contiguous(), partial(generalized, self))
    q = self.q(x).reshape(b, n, self.num_heads, self.cr // self.num_heads).permute(0, 2, 1, 3)
    attn = self.attn_drop(((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1))
    return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(b, n, c)))


# AuraSR's generator draws from this seed in every pass, as spandrel's call does after torch.manual_seed(0)
# (superres.zoo.spandrel.RANDOM_PER_PASS): a tile draws what the whole image does.
SEED = 0


def _draws(x: torch.Tensor) -> torch.Generator:
    """A generator in the state AuraSR's pass starts from, on ``x``'s device."""
    return torch.Generator(device=x.device).manual_seed(SEED)


def noised(x: torch.Tensor) -> torch.Tensor:
    """AuraSR's input with its noise (std 0.001, then clamped), drawn over ``x``'s whole shape."""
    return (x + torch.randn(x.shape, generator=_draws(x), dtype=x.dtype, device=x.device) * 0.001).clamp(0, 1)


def style_noise(unet: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """AuraSR's style noise: drawn after the input's noise over ``x``'s whole shape."""
    generator = _draws(x)
    torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)  # (the input's noise, first)
    return torch.randn((x.shape[0], unet.style_network.dim_in), generator=generator, device=x.device)


def _unet_forward(self, lowres_image: torch.Tensor, styles: torch.Tensor | None = None,
                  noise: torch.Tensor | None = None, global_text_tokens: torch.Tensor | None = None,
                  return_all_rgbs: bool = False):
    """AuraSR's generator's forward, its noise and style declared drawn over the whole image."""
    x = whole_map(lowres_image, noised)
    if styles is None:
        drawn = whole_value(lowres_image, partial(style_noise, self))
        styles = self.style_network(drawn if noise is None else noise, global_text_tokens)
    mods = iter(self.style_to_conv_modulations(styles).split(self.style_embed_split_dims, dim=-1))
    x = self.init_conv(x)
    skips = []
    for blocks, (attn, downsample) in self.downs:
        for block in blocks:
            x = block(x, conv_mods_iter=mods)
            skips.append(x)
        if attn is not None:
            x = attn(x)
        x = downsample(x)
    x = self.mid_block2(self.mid_attn(self.mid_block1(x, conv_mods_iter=mods)), conv_mods_iter=mods)
    for blocks, (upsample, attn) in self.ups:
        x = upsample(x)
        for block in blocks:
            if skips:
                x = torch.cat((x, skips.pop() * self.skip_connect_scale), dim=1)
            x = block(x, conv_mods_iter=mods)
        if attn is not None:
            x = attn(x)
    rgb = self.final_to_rgb(self.final_res_block(x, conv_mods_iter=mods))
    return (rgb, []) if return_all_rgbs else rgb


def _projected(attn: nn.Module, x: torch.Tensor, first: int, count: int) -> torch.Tensor:
    """``count`` of the three thirds (queries, keys, values) of AuraSR's query-key-value projection (a 1 x 1
    convolution) from the ``first`` on: the queries in a tile, the keys and values on the whole map, each
    computed once."""
    conv = attn.to_qkv
    third = conv.out_channels // 3
    part = slice(first * third, (first + count) * third)
    return F.conv2d(x, conv.weight[part], None if conv.bias is None else conv.bias[part])


def linear_context(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """AuraSR's linear attention's context: its keys, softmaxed over all the map's pixels, times its values."""
    k, v = (rearrange(t, "b (h c) x y -> b h c (x y)", h=attn.heads) for t in _projected(attn, x, 1, 2).chunk(2, 1))
    return torch.einsum("b h d n, b h e n -> b h d e", k.softmax(dim=-1), v)


def _linear_attention_forward(self, x: torch.Tensor) -> torch.Tensor:
    """AuraSR's linear attention's forward, its context declared a value of the whole map."""
    _, _, h, w = x.shape
    x = self.norm(x)
    context = whole_value(x, partial(linear_context, self))
    q = rearrange(_projected(self, x, 0, 1), "b (h c) x y -> b h c (x y)", h=self.heads)
    out = torch.einsum("b h d e, b h d n -> b h e n", context, q.softmax(dim=-2) * self.scale)
    return self.to_out(rearrange(out, "b h c (x y) -> b (h c) x y", h=self.heads, x=h, y=w))


def keys_values(attn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """AuraSR's full attention's keys and values: every pixel of the map attends to all of them."""
    k, v = (rearrange(t, "b (h c) x y -> b h (x y) c", h=attn.heads) for t in _projected(attn, x, 1, 2).chunk(2, 1))
    return k, v


def _attention_forward(self, x: torch.Tensor) -> torch.Tensor:
    """AuraSR's full attention's forward, its keys and values declared a value of the whole map."""
    _, _, h, w = x.shape
    x = self.norm(x)
    k, v = whole_value(x, partial(keys_values, self))
    q = rearrange(_projected(self, x, 0, 1), "b (h c) x y -> b h (x y) c", h=self.heads)
    return self.to_out(rearrange(self.attend(q, k, v), "b h (x y) d -> b (h d) x y", x=h, y=w))


# spandrel's modules whose forward superres computes itself, by class name: the spandrel module that has the class
# (its name's end), the attributes the forward uses, and the forward.
FORWARDS = {
    "ESA": (".esa", ("conv1", "conv2", "conv3", "conv4", "conv_f", "sigmoid"), _esa_forward),
    "RG_SA": (".rgt", ("reduction1", "dwconv", "conv", "norm_act", "cpe", "q", "k", "v", "proj"), _rg_sa_forward),
    "UnetUpsampler": (".aura_sr", ("style_network", "downs", "ups", "mid_attn"), _unet_forward),
    "LinearAttention": (".aura_sr", ("to_qkv", "to_out", "norm", "heads"), _linear_attention_forward),
    "Attention": (".aura_sr", ("to_qkv", "to_out", "norm", "attend"), _attention_forward),
}
