"""Tiles on the network's grid with the whole image's statistics (superres.infer.statistics).

Small networks of the kinds that tiles used to get wrong: one that downsamples (a grid of 4), one with
squeeze-and-excitation and global max pooling after a downsampling (channel attention: the whole image's
mean and maximum), and one with transposed attention (Restormer's: the whole image's norms and a product
over all its pixels), one that resamples with ``align_corners=True`` (the whole image's sample positions),
one whose shifted windows wrap around the image without a mask (DCTLSA's: the whole image's far border), and
one with OmniSR's two whole-map parts (windows of pixels spread over the whole image, and upsampling from a
pooled map to the whole map's size).
With the measured margin their tiles must give the whole image's output; without the shared statistics they
do not (checked, so that these tests can fail).
"""

from __future__ import annotations

import itertools
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from einops.layers.torch import Rearrange
from torch import nn

from superres.archs.spec import ModelFacts
from superres.infer.image import Upscaler, tile_alignment
from superres.infer.statistics import Axis, End, TileStatistics, probe, tiles_and_cores
from superres.ops.tiling import TilePlan, tile_grid, whole_map
from superres.runner import progress_scope
from superres.zoo.descriptor import ModelDescriptor
from superres.zoo.whole_maps import GridWindows

FP32 = {"device": "cpu", "precision": "fp32", "backend": "torch"}


class Downsampling(nn.Module):
    """Two stride-2 convolutions down, a pixel shuffle up (x2): a grid of 4 input pixels."""

    def __init__(self):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.GELU(), nn.Conv2d(8, 16, 3, 2, 1), nn.GELU())
        self.up = nn.Sequential(nn.Conv2d(16, 3 * 64, 3, 1, 1), nn.PixelShuffle(8))

    def forward(self, x):
        h, w = x.shape[-2:]
        return self.up(self.down(x))[..., :2 * h, :2 * w] + F.interpolate(x, scale_factor=2, mode="nearest")


class ChannelAttention(nn.Module):
    """RCAN/SE-style attention after a stride-2 convolution: sigmoid of the mean and maximum over the image."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, 1, 1)
        self.down = nn.Conv2d(8, 8, 2, 2)
        self.excite = nn.Conv2d(8, 8, 1)
        self.up = nn.ConvTranspose2d(8, 8, 2, 2)
        self.tail = nn.Conv2d(8, 3, 3, 1, 1)

    def forward(self, x):
        f = F.gelu(self.head(x))
        d = self.down(f)
        d = d * torch.sigmoid(self.excite(d.mean((2, 3), keepdim=True)))  # squeeze and excitation
        d = d * torch.sigmoid(F.adaptive_max_pool2d(d, 1))  # the whole image's maximum
        f = f + self.up(d)
        return x + 0.5 * self.tail(f * torch.sigmoid(f.mean((-1, -2), keepdim=True)))


class TransposedAttention(nn.Module):
    """Restormer's MDTA: attention between channels, over all the image's pixels (normalised over them)."""

    def __init__(self, dim: int = 8, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.head = nn.Conv2d(3, dim, 3, 1, 1)
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.dw = nn.Conv2d(3 * dim, 3 * dim, 3, 1, 1, groups=3 * dim)
        self.tail = nn.Conv2d(dim, 3, 3, 1, 1)

    def forward(self, x):
        f = self.head(x)
        b, c, h, w = f.shape
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w) for t in self.dw(self.qkv(f)).chunk(3, dim=1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * 4).softmax(dim=-1)
        out = (attn @ v).reshape(b, c, h, w)
        return x + 0.5 * self.tail(out + f)


class PaddedAttention(TransposedAttention):
    """Transposed attention on the input padded inside at its far end to the next whole window of 8 (1 to 8
    rows and columns, mirrored, as CRAFT pads to 16): its flattened map is larger than the input."""

    def forward(self, x):
        h, w = x.shape[-2:]
        x = torch.cat([x, x.flip(2)], 2)[..., :(h // 8 + 1) * 8, :]
        x = torch.cat([x, x.flip(3)], 3)[..., :(w // 8 + 1) * 8]
        return super().forward(x)[..., :h, :w]


class AlignedResampling(nn.Module):
    """HVI-CIDNet's resampling: bilinear with ``align_corners=True`` (``nn.UpsamplingBilinear2d``), down x2 and
    back up, beside the input: its samples lie where they do on the whole image, not on a tile."""

    def __init__(self):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.UpsamplingBilinear2d(scale_factor=0.5), nn.GELU())
        self.up = nn.Sequential(nn.Conv2d(8, 3, 3, 1, 1), nn.UpsamplingBilinear2d(scale_factor=2))

    def forward(self, x):
        return x + self.up(self.down(x))


class ShiftedWindows(nn.Module):
    """DCTLSA's shifted windows without a mask: the map padded to whole windows, rolled by half a window, a
    convolution and the mean of each 8 x 8 window added, rolled back; twice. At the image's borders a window
    holds the far border's rows (and columns) beside the near border's; the network declares it
    (``tile_wraps``)."""

    tile_wraps = True
    window_size = 8

    def __init__(self, dim: int = 8):
        super().__init__()
        self.head, self.tail = nn.Conv2d(3, dim, 3, 1, 1), nn.Conv2d(dim, 3, 3, 1, 1)
        self.local = nn.ModuleList(nn.Conv2d(dim, dim, 3, 1, 1) for _ in range(2))

    def forward(self, x):
        h, w = x.shape[-2:]
        f = F.pad(self.head(x), (0, -w % 8, 0, -h % 8), mode="reflect")  # to whole windows, inside (as DCTLSA)
        for local in self.local:
            r = torch.roll(f.permute(0, 2, 3, 1), shifts=(-4, -4), dims=(1, 2)).permute(0, 3, 1, 2)  # (as DCTLSA)
            r = F.gelu(local(r))
            b, c, hh, ww = r.shape
            windows = r.reshape(b, c, hh // 8, 8, ww // 8, 8)
            r = r + windows.mean((3, 5), keepdim=True).expand_as(windows).reshape(b, c, hh, ww)
            f = f + torch.roll(r, shifts=(4, 4), dims=(2, 3))
        return x + 0.5 * self.tail(f[..., :h, :w])


class GridMean(nn.Module):
    """Each pixel plus the mean of its grid window (``b x y w1 w2 d``: the pixels at its place in each of the
    8 x 8 cells that tile the map)."""

    def forward(self, x):
        return x + x.mean((3, 4), keepdim=True)


class WholeMaps(nn.Module):
    """OmniSR's parts that depend on the whole map, declared (``whole_map``): grid windows (a window holds one
    pixel of each of 8 x 8 cells spread over the whole map; the map padded inside to whole cells) and ESA's
    pooled branch (a strided convolution, max pooling, and bilinear upsampling back to the map's size, at
    positions that depend on it)."""

    window_size = 8  # (tiles start on whole cells, as the map is padded to them)

    def __init__(self, dim: int = 8):
        super().__init__()
        self.head, self.tail = nn.Conv2d(3, dim, 3, 1, 1), nn.Conv2d(dim, 3, 3, 1, 1)
        self.grid = GridWindows([Rearrange("b d (w1 x) (w2 y) -> b x y w1 w2 d", w1=8, w2=8), GridMean(),
                                 Rearrange("b x y w1 w2 d -> b d (w1 x) (w2 y)")], (8, 8), pixels=512)
        self.down = nn.Conv2d(dim, dim, 3, 2)

    def pooled(self, f):
        c = F.max_pool2d(self.down(f), kernel_size=7, stride=3)
        return F.interpolate(c, f.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x):
        h, w = x.shape[-2:]
        f = F.gelu(self.head(F.pad(x, (0, -w % 8, 0, -h % 8))))
        f = whole_map(f, self.grid)
        f = f * torch.sigmoid(whole_map(f, self.pooled))
        return x + 0.5 * self.tail(f)[..., :h, :w]


def _descriptor(module: nn.Module, scale: int = 1) -> ModelDescriptor:
    torch.manual_seed(0)
    for p in module.parameters():
        nn.init.normal_(p, std=0.3)
    # ChannelAttention's transposed convolution undoes its stride; PaddedAttention declares its window, as CRAFT
    multiple = 2 if isinstance(module, ChannelAttention | AlignedResampling) else \
        8 if isinstance(module, PaddedAttention) else 1
    return ModelDescriptor(module.eval(), type(module).__name__, {}, ModelFacts("sr", scale, 3, 3, multiple))


def _whole_and_tiles(desc: ModelDescriptor, image: np.ndarray, shared: bool = True) -> tuple[np.ndarray, ...]:
    whole = Upscaler(desc, tile=0, **FP32).upscale_array(image)
    up = Upscaler(desc, tile=80, **FP32)
    if not shared:
        up._statistics = None  # as before: each tile its own statistics
    return whole, up.upscale_array(image), up


@pytest.mark.parametrize("module, scale", [(Downsampling, 2), (ChannelAttention, 1), (TransposedAttention, 1),
                                           (PaddedAttention, 1), (AlignedResampling, 1), (ShiftedWindows, 1),
                                           (WholeMaps, 1)])
def test_tiles_equal_the_whole_image(module, scale, photos):
    desc = _descriptor(module(), scale)
    image = photos["chelsea"][:150, :170].copy()
    whole, tiles, up = _whole_and_tiles(desc, image)
    assert up.plan(150, 170).tile == 80 and up.margin < 24  # several tiles, on the measured margin
    assert np.abs(tiles - whole).max() <= 1e-4  # fp32 sums in another order: the same function
    if module is not Downsampling:
        assert np.abs(_whole_and_tiles(desc, image, shared=False)[1] - whole).max() > 2 / 255
        with progress_scope(lambda fraction: None):  # as the CLI runs: the runner counts work on zeros first
            assert np.abs(Upscaler(desc, tile=80, **FP32).upscale_array(image) - whole).max() <= 1e-4


@pytest.mark.parametrize("module", [ShiftedWindows, WholeMaps])
def test_progress_counts_the_passes_that_settle_in_order(module, photos):
    """Settling a wrapping network's rolls runs the tiles at the image's borders once per roll, and a network's
    whole-map parts all its tiles once per part, each only as far as its call: progress counts those passes
    too, and never goes back."""
    up = Upscaler(_descriptor(module()), tile=80, **FP32)
    image = photos["chelsea"][:150, :170].copy()
    (ys, _), (xs, _) = tile_grid(150, 170, up.plan(150, 170))
    border = len(ys) * len(xs) - (len(ys) - 2) * (len(xs) - 2)
    settling = 4 * border if module is ShiftedWindows else 2 * len(ys) * len(xs)
    assert len(ys) > 2 and len(xs) > 2 and up.passes(image) == len(ys) * len(xs) + settling
    reports: list[float] = []
    with progress_scope(reports.append, every=0):
        up.upscale_array(image)
    assert reports[-1] == up.passes(image) and all(b >= a for a, b in itertools.pairwise(reports))


def test_the_probe_finds_the_grid_and_the_reductions():
    assert tile_alignment(_descriptor(Downsampling(), 2)) == 4
    found = probe(_descriptor(ChannelAttention()))
    assert found.grid == 2
    assert [(r.what, r.rows.stride) for r in found.reductions] == [("pool", 2), ("pool", 2), ("pool", 1)]
    found = probe(_descriptor(TransposedAttention()))
    assert [r and (r.what, r.rows.stride) for r in found.reductions] == [("norm", 1), ("norm", 1), ("matmul", 1),
                                                                          None]  # attn @ v: over channels
    padded = probe(_descriptor(PaddedAttention())).reductions  # placed by its 4-D maps: 8 more at the far end
    assert [r and (r.what, r.rows, r.cols) for r in padded] == [(what, Axis(Fraction(1), Fraction(0), Fraction(8)),
                                                                 Axis(Fraction(1), Fraction(0), Fraction(8)))
                                                                for what in ("norm", "norm", "matmul")] + [None]
    assert probe(_descriptor(nn.Conv2d(3, 3, 3, 1, 1))).reductions == ()  # nothing to share: plain tiles
    aligned = probe(_descriptor(AlignedResampling()))
    assert aligned.reductions == () and aligned.resamples and aligned.shares and aligned.grid == 2
    assert not found.resamples and not probe(_descriptor(Downsampling(), 2)).resamples
    rolls = probe(_descriptor(ShiftedWindows()))  # declared: its rolls over the map's rows and columns
    assert rolls.wraps and [(r.what, r.rows.stride, r.swapped) for r in rolls.reductions] == \
        [("roll", 1, False)] * 4 and tile_alignment(_descriptor(ShiftedWindows())) == 8
    undeclared = ShiftedWindows()
    undeclared.tile_wraps = False  # (Swin's shifted windows, masked: their rolls need nothing)
    assert probe(_descriptor(undeclared)).reductions == ()
    whole = probe(_descriptor(WholeMaps()))  # its two whole-map parts, and none of their own calls
    assert [(r.what, r.rows, r.cols) for r in whole.reductions] == [("whole", Axis(Fraction(1), Fraction(0)),
                                                                     Axis(Fraction(1), Fraction(0)))] * 2


def test_whole_maps_too_large_for_memory_are_not_shared_and_it_says_so(photos, monkeypatch):
    """A whole-map part keeps its output on the whole image's map for the tiles: on an image whose maps would
    not fit in half the memory free, the tiles compute their own (bounded memory, as tiles are for) and a
    warning says that they may differ."""
    from superres.infer import image as image_module

    desc = _descriptor(WholeMaps())
    image = photos["chelsea"][:150, :170].copy()
    whole, tiles, up = _whole_and_tiles(desc, image)
    need = up.statistics.whole_map_bytes(up.runner.padded(150, 170), 4)
    assert need == (2 + 3) * 150 * 170 * 8 * 4  # its two parts' outputs kept, and one map gathered at a time
    monkeypatch.setattr(image_module, "device_memory", lambda device: need)  # half of it to spare: too little
    squeezed = Upscaler(desc, tile=80, **FP32)
    (ys, _), (xs, _) = tile_grid(150, 170, squeezed.plan(150, 170))
    assert squeezed.passes(image) == len(ys) * len(xs)  # no settling passes counted
    with pytest.warns(UserWarning, match=r"would hold 0\.0 GiB of whole-image maps .* they compute their own"):
        own = squeezed.upscale_array(image)
    assert np.abs(own - whole).max() > 2 / 255 and np.abs(tiles - whole).max() <= 1e-4


def test_grid_windows_compute_a_whole_map_in_bands():
    """OmniSR's grid windows on a whole map, a band of windows at a time (less memory): the same."""
    net = WholeMaps()
    x = torch.randn(1, 8, 48, 64)
    assert net.grid.pixels < 48 * 64 // 4  # (several bands)
    # (equal here; on another CPU a window's mean of 64 values of at most ~5 may be summed in another order: at
    # most 63 roundings of 2^-24 of the running sum, under 2e-5)
    torch.testing.assert_close(net.grid.whole(x), net.grid(x), rtol=0, atol=2e-5)


def test_without_reductions_an_upscaler_shares_nothing():
    assert Upscaler(_descriptor(Downsampling(), 2), tile=64, **FP32).statistics is None
    assert Upscaler(_descriptor(AlignedResampling()), tile=64, **FP32).statistics is not None  # its geometry


def test_cores_split_the_image_once_and_reach_its_padded_borders():
    """Placed in the image, the tiles' cores cover each row (and column) once, the padding the whole image
    gets at its far border included (a map at the input's resolution; the runner pads 100 x 130 to 104 x 132)."""
    image = np.zeros((100, 130, 3), np.float32)
    plan = TilePlan(48, 8, 4, 4)
    (ys, _), (xs, _) = tile_grid(100, 130, plan)
    cores = [core for _, core, _ in tiles_and_cores(image, plan, (104, 132))]
    axis = Axis(Fraction(1), Fraction(0))
    rows, cols = [c[0] for c in cores[::len(xs)]], [c[1] for c in cores[:len(xs)]]
    for starts, bounds, padded in ((ys, rows, 104), (xs, cols, 132)):
        assert len(starts) > 2 and bounds[0][0] is None and isinstance(bounds[-1][1], End)
        owned = [a + i for a, (lo, hi) in zip(starts, bounds, strict=True)
                 for i in range(axis.index(lo, 1000), axis.index(hi, 1000))]
        assert owned == list(range(padded))


def test_a_network_whose_calls_depend_on_the_size_shares_nothing(photos):
    class Recursive(ChannelAttention):  # pools once more per doubling of the input (RGT's recursion)
        def forward(self, x):
            y = super().forward(x)
            for _ in range(x.shape[-1] // 64):
                y = y * torch.sigmoid(y.mean((2, 3), keepdim=True))
            return y

    desc = _descriptor(Recursive())
    stats = TileStatistics(probe(desc))
    image = photos["chelsea"][:150, :170].copy()
    up = Upscaler(desc, tile=64, **FP32)
    forward = up.runner.forward
    assert stats.settle(image, up.plan(150, 170), lambda t: forward(t, "fp32"), (150, 170)) == 0
    assert stats.values == {}


def test_an_upscaler_warns_where_tiles_cannot_match_the_whole_image(tmp_path, monkeypatch, photos):
    """A network that wraps around the image without declaring it (as DCTLSA's unmasked shifted windows do;
    superres's bridge declares DCTLSA): its context settles, but at the image's borders it sees the opposite
    border, which no tile there has. Measuring its margin also runs tiles against the whole image, and says
    so. Declared, its tiles take the opposite border from the whole image, and match."""

    class Wraps(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, 1, 1)

        def forward(self, x):
            return x + 0.5 * self.conv(torch.roll(x, shifts=(5, 5), dims=(2, 3)))

    monkeypatch.setenv("SUPERRES_CACHE_DIR", str(tmp_path))
    wraps = Upscaler(_descriptor(Wraps()), tile=80, **FP32)
    with pytest.warns(UserWarning, match=r"^Wraps: tiles differ from the whole image by up to \d+\.\d/255 although "
                      r"they get \d+ pixels of context: this network's output depends on the whole image"):
        assert wraps.margin < 12  # (measured on first need)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tiles that match: no warning
        assert Upscaler(_descriptor(ChannelAttention()), tile=80, **FP32).margin > 0
        Wraps.tile_wraps = True
        monkeypatch.setenv("SUPERRES_CACHE_DIR", str(tmp_path / "declared"))  # (measured again, and checked)
        assert Upscaler(_descriptor(Wraps()), tile=80, **FP32).margin == wraps.margin
