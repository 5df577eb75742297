"""A network's grid and its whole-image statistics, so that tiles compute what the whole image does.

Two things make a tile's output differ from the whole image's beyond the context a tile is given:
- **The grid.** A network that downsamples (strided convolutions, pooling, pixel-unshuffle, U-Nets) sees
  its input on a grid of that stride; a tile that starts off the grid is sampled at another phase.
  :func:`probe` finds the strides by running the network once and reading the sizes of its feature maps.
- **Whole-image statistics.** Squeeze-and-excitation and channel attention (RCAN, HAT, NAFNet's simplified
  channel attention, Real-CUGAN's SE blocks, MixDehazeNet...) scale features by their mean (or maximum)
  over the whole image; transposed attention (Restormer's MDTA, in RetinexFormer, DAT, OmniSR...)
  normalises queries and keys over all pixels and multiplies them over all pixels. In a tile these are
  the tile's own. :class:`TileStatistics` replaces each such reduction by its whole-image value, gathered
  over the tiles: each tile contributes the part of its feature map that it owns (its core, a partition
  of the image, well inside the measured margin).
  Reductions depend on earlier ones, so the gathering is repeated, each pass using the last pass's values,
  until they stop changing (:func:`settle`): at most one pass per reduction, since the first is exact
  after one pass, the second after two, and so on; in practice two or three. The final tiled pass then
  uses them. Real-CUGAN's official tile mode does the same by hand for its SE blocks.

Reductions are recognised as PyTorch calls (``torch.overrides.TorchFunctionMode``): the mean, sum, amax
and amin of a feature map over both its spatial dimensions, adaptive average and max pooling to 1x1,
``F.normalize`` over a flattened map and a matrix product over one. :func:`probe` runs the network on two
input sizes (on the meta device: shapes, no arithmetic) and keeps those whose extent grows with the input.
Calls are matched across passes by their order in the forward pass; a network whose calls depend on the
input's size (RGT's recursion) shares nothing.
- **Whole-image geometry.** Bilinear resampling with ``align_corners=True`` (``nn.UpsamplingBilinear2d``, in
  HVI-CIDNet and older U-Nets) puts its samples at ``(size_in - 1) / (size_out - 1)`` apart: the whole image's
  positions, not a tile's. In a tile, :class:`TileStatistics` resamples at the whole image's positions, from
  where the tile lies in it.
- **Whole-image wrap.** Shifted windows without an attention mask (DCTLSA) roll the map around the whole
  image: at its far border a window holds the near border's rows. For a network that declares it (a
  ``tile_wraps`` attribute: the probe cannot tell a masked roll from an unmasked one), each roll over the
  map's rows and columns takes what it wraps to from the whole image's map: a strip along the border it
  wraps from, gathered over the tiles at the image's borders (one pass per roll, each as far as its roll).

- **Whole maps.** A part of a network whose output at a pixel depends on its whole input map (OmniSR's grid
  attention: windows of pixels spread across the whole image) is declared by running it through
  :func:`superres.ops.tiling.whole_map`. In a tile, its output is the tile's part of what it gives on the whole
  image's input map, gathered over the tiles' cores. A value computed from a whole map (RGT's recursive
  generalization: keys and values pooled from the whole map, which every pixel attends to) is declared by
  :func:`superres.ops.tiling.whole_value`, and a tile gets it computed on the whole image's map. Such
  networks settle call by call, one pass each, each gathering one map.

Not shareable, and left to the check of :class:`superres.infer.image.Upscaler` (which warns): noise drawn in
every pass, or full softmax attention over all pixels, that no part declares (superres's bridge declares
AuraSR's: :mod:`superres.zoo.whole_maps`).
"""

from __future__ import annotations

import copy
import inspect
import itertools
import math
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from superres.ops.tiling import TilePlan, tile_grid, whole_map, whole_value
from superres.runner import counting, pass_cut_short

# What a reduction keeps of its input: the sum (mean and sum), or the maximum or minimum.
_KINDS = {torch.mean: "mean", torch.Tensor.mean: "mean", torch.sum: "sum", torch.Tensor.sum: "sum",
          torch.amax: "max", torch.Tensor.amax: "max", torch.amin: "min", torch.Tensor.amin: "min"}
_POOLS = {F.adaptive_avg_pool2d: "mean", F.adaptive_max_pool2d: "max"}
_MATMULS = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__}
_ROLLS = {torch.roll, torch.Tensor.roll}
# Most passes over the tiles spent on settling pooled statistics (a deep network with more reductions settles
# within this in practice: each pass fixes the next one exactly, and the later ones move together). Rolls and
# whole-map parts settle in order instead, one pass per call (TileStatistics.in_order).
MAX_PASSES = 32
# Where measuring a tile's context puts the image, for resampling at the whole image's positions: the last of
# DEEP x DEEP images of its size (see TileStatistics.frozen_at).
DEEP = 8


def _candidate(func, args, kwargs, rolls: bool = False) -> tuple[str, tuple[int, ...]] | None:
    """(what, extent) when this call may reduce over the image's space (or, with ``rolls``, wrap around it);
    None for any other call:
    - ``pool``: a mean, sum, maximum or minimum of a >= 3-D tensor over its last two dimensions (global
      pooling), extent (height, width);
    - ``norm``: ``F.normalize`` over the last dimension, extent (its length): over the flattened image in
      transposed (channel) attention, as Restormer's;
    - ``matmul``: a product whose contracted dimension (extent: its length, then the product's rows and
      columns) may be the flattened image;
    - ``roll`` (with ``rolls``): ``torch.roll`` of a >= 3-D tensor over two dimensions, extent their sizes;
    - ``whole`` and ``value``: a part declared by :func:`whole_map` or a value by :func:`whole_value`, extent
      its map's (height, width, channels)."""
    if not args or not isinstance(args[0], torch.Tensor) or args[0].dim() < 3:
        return None
    x = args[0]
    if func is whole_map or func is whole_value:  # (its map's height, width and channels)
        return ("whole" if func is whole_map else "value", (x.shape[-2], x.shape[-1], x.shape[1])) \
            if x.dim() == 4 else None
    if func in _ROLLS:
        shifts, dims = _roll_args(args, kwargs)
        return ("roll", tuple(x.shape[d] for d in dims)) if rolls and len(dims) == len(shifts) == 2 else None
    if func in _POOLS:
        size = args[1] if len(args) > 1 else kwargs.get("output_size")
        if size not in (1, (1, 1), [1, 1]) or kwargs.get("return_indices") or x.dim() != 4:
            return None
        return "pool", tuple(x.shape[-2:])
    if func in _KINDS:
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        if not isinstance(dim, tuple | list) or not all(isinstance(d, int) for d in dim) or \
                not {x.dim() - 2, x.dim() - 1} <= {d % x.dim() for d in dim}:
            return None
        return "pool", tuple(x.shape[-2:])
    if func is F.normalize:
        dim = args[2] if len(args) > 2 else kwargs.get("dim", 1)
        return ("norm", (x.shape[-1],)) if isinstance(dim, int) and dim % x.dim() == x.dim() - 1 else None
    if func in _MATMULS and len(args) > 1 and isinstance(args[1], torch.Tensor) and args[1].dim() >= 3 \
            and x.shape[-1] == args[1].shape[-2]:
        return "matmul", (x.shape[-1], x.shape[-2], args[1].shape[-1])
    return None


def _roll_args(args, kwargs) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A ``torch.roll`` call's (shifts, dims), each as a tuple of ints (dims non-negative; () without dims)."""
    x = args[0]
    shifts = args[1] if len(args) > 1 else kwargs.get("shifts", ())
    dims = args[2] if len(args) > 2 else kwargs.get("dims", ())
    as_tuple = lambda v: tuple(v) if isinstance(v, tuple | list) else () if v is None else (v,)  # noqa: E731
    shifts, dims = as_tuple(shifts), as_tuple(dims)
    if not all(isinstance(v, int) for v in (*shifts, *dims)):
        return (), ()
    return shifts, tuple(d % x.dim() for d in dims)


_INTERPOLATE = inspect.signature(F.interpolate)


def _aligned_resampling(func, args, kwargs) -> torch.Tensor | None:
    """The input of an ``F.interpolate`` call that resamples a 4-D map bilinearly with ``align_corners=True``
    (its sample positions depend on the map's whole size); None for any other call."""
    if func is not F.interpolate:
        return None
    try:
        call = _INTERPOLATE.bind(*args, **kwargs).arguments
    except TypeError:
        return None
    x = call.get("input")
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or call.get("mode") != "bilinear" \
            or not call.get("align_corners") or call.get("antialias"):
        return None
    return x


def _resample_axis(x: torch.Tensor, dim: int, size: int, whole_in: int, whole_out: int, start_in: int,
                   start_out: int) -> torch.Tensor:
    """``x`` resampled linearly along ``dim`` to ``size`` features at the positions ``align_corners=True``
    gives a map of ``whole_in`` features resampled to ``whole_out``, of which ``x`` starts at feature
    ``start_in`` and the result at ``start_out``; positions outside ``x`` take its edge (a tile's margin)."""
    n = x.shape[dim]
    step = (whole_in - 1) / (whole_out - 1) if whole_out > 1 else 0.0
    pos = ((torch.arange(size, dtype=torch.float64) + start_out) * step - start_in).clamp(0, n - 1)
    i0 = pos.floor().long()
    i1 = (i0 + 1).clamp(max=n - 1)
    shape = [1] * x.dim()
    shape[dim] = size
    weight = (pos - i0).to(x.device, x.dtype).reshape(shape)
    a, b = x.index_select(dim, i0.to(x.device)), x.index_select(dim, i1.to(x.device))
    return a + (b - a) * weight


@dataclass(frozen=True)
class End:
    """The image's far border, ``padded`` input pixels from the tile's start: where the whole image's feature
    maps end (the runner pads the whole image to the network's size requirements; a tile at the border may be
    padded further, and its feature maps beyond this are not the image's)."""
    padded: int


_BEYOND = End(1 << 62)  # past any feature map: all of it

# A tile's core on one axis: from (None: the image's near border, with whatever the network pads there) to
# (an :class:`End` at the far border), in input pixels from the tile's start.
Bounds = tuple[int | None, int | End]


@dataclass(frozen=True)
class Axis:
    """Feature index ``i`` of a reduction's input lies at input pixel ``offset + stride * i`` (one axis). A map
    smaller than the input over ``stride`` is centred on it, as unpadded convolutions leave it (``offset`` > 0);
    one larger by ``extra`` features was padded by the network at its far end (offset 0), as networks that pad
    their input to whole windows do (CRAFT always adds 1 to 16 rows)."""
    stride: Fraction
    offset: Fraction
    extra: Fraction = Fraction(0)

    @classmethod
    def of(cls, stride: Fraction, extra: Fraction) -> Axis:
        """The axis of a map with ``input / stride + extra`` features."""
        return cls(stride, -extra * stride / 2, Fraction(0)) if extra < 0 else cls(stride, Fraction(0), extra)

    def features(self, size: int) -> Fraction:
        """How many features a map of this axis has on an input of ``size`` pixels."""
        return (size - 2 * self.offset) / self.stride + self.extra

    def index(self, position: int | End | None, size: int) -> int:
        """The first feature index at or after input ``position`` of a feature map of ``size``."""
        if position is None:
            return 0
        if isinstance(position, End):  # where the whole image's map ends (padded inside to whole features: OmniSR
            return min(size, max(0, math.ceil(self.features(position.padded))))  # pads to whole windows)
        return min(size, max(0, math.ceil((position - self.offset) / self.stride)))


@dataclass(frozen=True)
class Reduction:
    """One call of a network that reduces over the image's space (or rolls its map around it, or declares a
    part of it that sees the whole map): what it is (see :func:`_candidate`) and where its input's features
    lie on the input's rows and columns; ``swapped``: a roll whose first dimension is the columns."""
    what: str
    rows: Axis
    cols: Axis
    swapped: bool = False
    channels: int = 0  # a whole map's (whole and value)


@dataclass(frozen=True)
class Probe:
    """What one run of a network shows: ``grid``, the stride tiles must start on; ``reductions``, each call
    that may reduce over the image's space, in call order (None: one that does not, such as attention within
    a window); empty when none does (nothing to share); ``resamples``: whether it resamples at positions that
    depend on the whole image's size."""
    grid: int
    reductions: tuple[Reduction | None, ...] = ()
    resamples: bool = False  # it resamples with align_corners=True (see _aligned_resampling)
    wraps: bool = False  # it declares that its rolls wrap around the image unmasked (its rolls are candidates)

    @property
    def shares(self) -> bool:
        """Whether tiles need :class:`TileStatistics` to compute what the whole image does."""
        return bool(self.reductions) or self.resamples


class _Recorder(TorchFunctionMode):
    """Records the spatial size of every 4-D result and the extent of every candidate reduction."""

    def __init__(self, rolls: bool = False):
        super().__init__()
        self.sizes: set[tuple[int, int]] = set()
        self.calls: list[tuple[str, tuple[int, ...]]] = []
        self.resamples = False
        self.rolls = rolls

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        found = _candidate(func, args, kwargs, self.rolls)
        if found is not None:
            self.calls.append(found)
        self.resamples = self.resamples or _aligned_resampling(func, args, kwargs) is not None
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.dim() == 4:
            self.sizes.add(tuple(out.shape[-2:]))
        return out


def _axes(sizes: tuple[tuple[int, int], tuple[int, int]], maps: tuple[tuple[int, int], tuple[int, int]]
          ) -> tuple[Axis, Axis] | None:
    """The rows and columns of a feature map of sizes ``maps`` on inputs of ``sizes`` (one stride on both)."""
    (h1, w1), (h2, w2) = sizes
    (f1, g1), (f2, g2) = maps
    if f1 == f2 or g1 == g2 or Fraction(h2 - h1, f2 - f1) != Fraction(w2 - w1, g2 - g1) or f2 < f1:
        return None
    stride = Fraction(h2 - h1, f2 - f1)
    return Axis.of(stride, f1 - h1 / stride), Axis.of(stride, g1 - w1 / stride)


def _classify(first: tuple[str, tuple[int, ...]], second: tuple[str, tuple[int, ...]],
              sizes: tuple[tuple[int, int], tuple[int, int]], maps: tuple[set, set]) -> Reduction | None:
    """The reduction a candidate call is, from its extents on inputs of two ``sizes``: one whose extent
    grows with the input reduces over its space; a fixed one (a window, channels) does not. A flattened map
    is placed by the 4-D feature maps of each run (``maps``) that have as many features (CRAFT's are larger
    than the input), else taken as ``(h / s) * (w / s)``."""
    (what, e1), (what2, e2) = first, second
    (h1, w1), (h2, w2) = sizes
    if what != what2 or e1 == e2:
        return None
    if what == "pool":
        axes = _axes(sizes, (e1, e2))
        return Reduction(what, *axes) if axes else None
    if what == "matmul" and e1[1:] != e2[1:]:  # (a product as large as the image: attention, not a statistic)
        return None
    if what in ("whole", "value"):  # a map's rows and columns, on the input's grid from its first pixel
        axes = _axes(sizes, (e1[:2], e2[:2]))
        ok = axes and all(a.offset == a.extra == 0 for a in axes) and e1[2] == e2[2]
        return Reduction(what, *axes, channels=e1[2]) if ok else None
    if what == "roll":  # a map's rows and columns (in either order), unpadded: its wrap is the image's
        for swapped in (False, True):
            axes = _axes(sizes, (e1[::-1], e2[::-1]) if swapped else (e1, e2))
            if axes and all(a.offset == a.extra == 0 for a in axes):
                return Reduction(what, *axes, swapped=swapped)
        return None
    placed = {axes for m1 in maps[0] if m1[0] * m1[1] == e1[0] for m2 in maps[1] if m2[0] * m2[1] == e2[0]
              if (axes := _axes(sizes, (m1, m2))) is not None}
    if len(placed) == 1:
        return Reduction(what, *placed.pop())
    area = Fraction(h1 * w1, e1[0])  # a flattened map at stride s: (h / s) * (w / s) features
    stride = Fraction(math.isqrt(area.numerator), math.isqrt(area.denominator))
    if stride * stride != area or Fraction(h2, 1) / stride * (Fraction(w2, 1) / stride) != e2[0]:
        return None
    return Reduction(what, Axis(stride, Fraction(0)), Axis(stride, Fraction(0)))


_PROBES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _record(module: torch.nn.Module, channels: int, sizes, rolls: bool = False) -> list[_Recorder] | None:
    """The calls of ``module`` on inputs of ``sizes``: on the meta device first (shapes only, no arithmetic:
    realesrgan-x4plus in 0.1 s where real inputs take 27 s on a 2-core CPU), on random real inputs where the
    network's code needs values (boolean masks, ``.item()``); None where both fail."""
    # A copy whose weights are meta tensors (no data copied): whatever a forward pass caches on its modules
    # (masks, positions) stays on the copy.
    memo = {id(p): torch.nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
            for p in module.parameters()}
    memo.update({id(b): torch.empty_like(b, device="meta") for b in module.buffers()})
    try:
        shell = copy.deepcopy(module, memo)
    except Exception:  # (a module that cannot be copied: real inputs only)
        shell = None
    for device in ("meta", "real") if shell is not None else ("real",):
        runs = []
        try:
            for h, w in sizes:
                recorder = _Recorder(rolls)
                with torch.random.fork_rng(devices=[]), torch.inference_mode(), recorder:
                    torch.manual_seed(0)  # (noise drawn alike in both runs; the caller's RNG state kept)
                    if device == "meta":
                        shell(torch.empty(1, channels, h, w, device="meta"))
                    else:
                        param = next(itertools.chain(module.parameters(), module.buffers()), None)
                        x = torch.rand(1, channels, h, w)
                        module(x if param is None else x.to(param.device, param.dtype))
                runs.append(recorder)
            return runs
        except Exception:  # (a network's own error on this input, or one that needs values: the next way)
            continue
    return None


def probe(desc, declared: int = 1, windows: int = 1) -> Probe:
    """Run ``desc``'s network on two random inputs of sizes on its ``declared`` grid (its size multiple and
    attention windows) and read off its downsampling strides and its whole-image reductions. The grid is
    also a multiple of its attention ``windows`` at its coarsest stride (where a U-Net's windows may be).
    Remembered per network; a network that fails on the probe's input keeps its declared grid."""
    module = desc.module
    if module is None or desc.video is not None:
        return Probe(declared)
    if module in _PROBES and _PROBES[module].grid % declared == 0:
        return _PROBES[module]
    base = math.lcm(declared, max(1, desc.size_multiple))
    unit = base * -(-64 // base)  # on the declared grid, and 64 or more (networks that pad inside to 64: SCUNet)
    while 2 * unit < desc.min_size:
        unit *= 2
    sizes = ((2 * unit, 3 * unit), (3 * unit, 4 * unit))  # not square: a feature map's two sides must agree
    wraps = any(getattr(m, "tile_wraps", False) is True for m in module.modules())
    runs = _record(module, desc.in_channels, sizes, wraps)
    if runs is None:  # whatever arbitrary network code raises on this input: tiles keep the declared grid
        return Probe(declared)
    (h, w), first = sizes[0], runs[0]
    (h2, w2), second = sizes[1], runs[1]
    # (a map at a stride is there on both inputs: not an attention's heads x channels, fixed)
    strides = [h // fh for fh, fw in first.sizes
               if 1 < fh < h and h % fh == 0 and w % fw == 0 and h // fh == w // fw and unit % (h // fh) == 0
               and (h2 * fh // h, w2 * fw // w) in second.sizes]
    grid = math.lcm(declared, *strides, windows * max(strides, default=1))
    reductions: tuple[Reduction | None, ...] = ()
    if len(first.calls) == len(runs[1].calls):  # else the network's calls depend on the size: nothing to share
        maps = (first.sizes, runs[1].sizes)
        reductions = tuple(_classify(a, b, sizes, maps) for a, b in zip(first.calls, runs[1].calls, strict=True))
    found = Probe(grid, reductions if any(reductions) else (), any(run.resamples for run in runs), wraps)
    _PROBES[module] = found
    return found


class _StopTile(Exception):  # noqa: N818 (not an error: a pass that has enough)
    """Raised inside a tile's forward pass once a settling pass has what it needs of it."""


@dataclass(frozen=True)
class _Wrap:
    """What a roll that wraps around the image reads from beyond a tile: the whole map's ``size`` (rows,
    columns), and its input near the borders the roll wraps from: ``rows``, (first row, the rows there over all
    columns), and ``cols``, (first column, the columns there over all rows); None where it does not wrap that
    way or the tiles did not cover it."""
    size: tuple[int, int]
    rows: tuple[int, torch.Tensor] | None
    cols: tuple[int, torch.Tensor] | None


def _change(old, new) -> float:
    """How far a gathered value moved between passes (relative to its size, at least 1); inf if its shape did."""
    if isinstance(new, tuple):
        if not isinstance(old, tuple) or len(old) != len(new):
            return math.inf
        return max((_change(a, b) for a, b in zip(old, new, strict=True)), default=0.0)
    if isinstance(new, _Wrap):
        pairs = ((old.rows, new.rows), (old.cols, new.cols)) if isinstance(old, _Wrap) else ()
        if not pairs or old.size != new.size or any((a is None) != (b is None) for a, b in pairs):
            return math.inf
        return max((_change(a[1], b[1]) for a, b in pairs if a is not None), default=0.0)
    if old.shape != new.shape:
        return math.inf
    return ((new - old).abs().max() / max(1.0, float(old.abs().max()))).item()


class TileStatistics(TorchFunctionMode):
    """Inside a network's forward pass on a tile: each whole-image reduction gives its whole-image value
    (once :func:`settle` has gathered it), and while gathering, adds up the tile's share of its input;
    resampling with ``align_corners=True`` samples where it does on the whole image.
    ``padded``: the size the runner pads an input of a given size to (the network's size requirements)."""

    def __init__(self, found: Probe, padded: Callable[[int, int], tuple[int, int]] | None = None):
        super().__init__()
        self.reductions, self.wraps = found.reductions, found.wraps
        self.padded = padded or (lambda h, w: (h, w))
        self.values: dict[int, torch.Tensor] = {}
        self.calls = 0  # candidate calls in the last pass (a tile of another size may make others: see settle)
        self.passes = 0  # passes over the tiles the last settle made
        self._parts: dict[int, list] = {}
        self._gathering = False
        self._core: tuple[Bounds, Bounds] = ((None, _BEYOND), (None, _BEYOND))
        self._size = (0, 0)
        self._origin: tuple[int, int] = (0, 0)
        self._whole: tuple[int, int] | None = None
        self._shifts: dict[int, tuple[int, int]] = {}
        self._spans: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {}  # each whole-map part's (whole_map)
        self._at: tuple[int, int] = (0, 0)  # where the tile lies in the image whose whole maps were gathered
        self._wrapping = True
        self._stop: int | None = None  # the call after which a settling pass in order stops a tile (see settle)
        self.share_whole = True  # whole-map parts computed on the whole image's map (else each tile's own)

    @contextmanager
    def tile(self, core: tuple[Bounds, Bounds], size: tuple[int, int], origin: tuple[int, int] = (0, 0),
             whole: tuple[int, int] | None = None, wrap: bool = True, at: tuple[int, int] | None = None
             ) -> Iterator[None]:
        """Run one network pass on a tile of ``size`` whose core (its rows and columns, see
        :func:`tiles_and_cores`) is this tile's share of the image; the tile starts at ``origin`` of the whole
        image, which the runner pads to ``whole`` (None: the tile is the whole image). ``wrap``: rolls take
        what they wrap to from the whole image (else the tile's own). ``at``: where whole-map parts take the
        tile's part of the whole map from, if not ``origin``."""
        self._core, self._size, self.calls = core, self.padded(*size), 0
        self._origin, self._whole, self._wrapping = origin, whole or self._size, wrap
        self._at = origin if at is None else at
        with self:
            yield

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        resampled = _aligned_resampling(func, args, kwargs)
        found = _candidate(func, args, kwargs, self.wraps) if resampled is None else None
        # (counting: the runner's pass on zeros that counts work for progress, not a tile)
        if (resampled is None and found is None) or counting():
            return func(*args, **kwargs)
        if resampled is not None:
            return self._resample(resampled, func(*args, **kwargs))
        k, self.calls = self.calls, self.calls + 1
        reduction = self.reductions[k] if k < len(self.reductions) else None
        if reduction is None:
            return func(*args, **kwargs)
        if reduction.what == "roll":
            return self._roll(k, reduction, func, args, kwargs)
        if reduction.what in ("whole", "value"):
            return self._whole_map(k, reduction, func, args, kwargs) if self.share_whole else func(*args, **kwargs)
        if self._collects(k):
            self._gather(k, reduction, func, args, kwargs)
            if k == self._stop:
                raise _StopTile
        value = self.values.get(k)
        if value is None:
            return func(*args, **kwargs)
        x = args[0]
        if reduction.what == "norm":  # x / max(||x||, eps) with the whole image's norm
            p = args[1] if len(args) > 1 else kwargs.get("p", 2.0)
            eps = args[3] if len(args) > 3 else kwargs.get("eps", 1e-12)
            return x / (value ** (1 / p)).clamp_min(eps).to(x.device, x.dtype)
        out = func(*args, **kwargs) if reduction.what == "pool" else None  # (for its shape: keepdim or not)
        value = value.to(x.device, x.dtype)
        return value if out is None else value.reshape(out.shape)

    def _collects(self, k: int) -> bool:
        """Whether this pass gathers call ``k`` (a pass in order gathers only the call it stops at)."""
        return self._gathering and self._stop in (None, k)

    def _resample(self, x: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        """``x`` (a map of this tile) resampled to ``own``'s size at the whole image's positions (``own``: the
        tile's own resampling, kept where the tile is the whole image or its maps are not on its grid)."""
        if self._origin == (0, 0) and self._whole == self._size:
            return own
        axes = []
        for dim, size, whole, start in zip((2, 3), self._size, self._whole, self._origin, strict=True):
            n, m = x.shape[dim], own.shape[dim]
            stride_in, stride_out = Fraction(size, n), Fraction(size, m)
            places = (whole / stride_in, whole / stride_out, start / stride_in, start / stride_out)
            if any(p.denominator != 1 for p in places):
                return own
            axes.append((dim, m, *(int(p) for p in places)))
        for axis in axes:
            x = _resample_axis(x, *axis)
        return x

    def _roll(self, k: int, reduction: Reduction, func, args, kwargs) -> torch.Tensor:
        """A roll of the tile's map that takes what it wraps to from the whole image's map (gathered over the
        tiles in the last pass): shifted windows without a mask (DCTLSA) mix the image's far border with its
        near one, which a tile there does not hold. Elsewhere the tile's own roll (its margin covers that)."""
        own = func(*args, **kwargs)
        shifts, dims = _roll_args(args, kwargs)
        if reduction.swapped:
            shifts, dims = shifts[::-1], dims[::-1]
        origin = tuple(Fraction(o) / reduction.rows.stride for o in self._origin)
        if any(o.denominator != 1 for o in origin):  # (a tile off the map's grid: its own)
            return own
        origin = tuple(int(o) for o in origin)
        if self._collects(k):
            self._shifts[k] = shifts
            self._gather_wrap(k, reduction, args[0].movedim(dims, (-2, -1)), origin, shifts)
            if k == self._stop:  # (what follows this roll is not needed in this pass)
                raise _StopTile
        value = self.values.get(k)
        if value is None or not self._wrapping:
            return own
        out = own.clone()
        view = out.movedim(dims, (-2, -1))  # (rows, columns last; a view: writing it writes out)
        sources = [_wrap_sources(o, n, shift, whole, view.device)
                   for o, n, shift, whole in zip(origin, view.shape[-2:], shifts, value.size, strict=True)]
        (rows, row_wraps, row_in), (cols, col_wraps, col_in) = sources
        done = torch.zeros_like(row_wraps)
        if value.rows is not None and row_wraps.any():  # from the rows at the border the rows wrap from
            first, strip = value.rows
            i, j = row_wraps.nonzero()[:, 0], col_in.nonzero()[:, 0]
            view[..., i[:, None], j[None, :]] = strip[..., (rows[i] - first)[:, None], cols[j][None, :]].to(view.dtype)
            done = row_wraps
        if value.cols is not None and col_wraps.any():  # from the columns the columns wrap from (all rows)
            first, strip = value.cols
            i, j = (row_in & ~done).nonzero()[:, 0], col_wraps.nonzero()[:, 0]
            view[..., i[:, None], j[None, :]] = strip[..., rows[i][:, None], (cols[j] - first)[None, :]].to(view.dtype)
        return out

    def _whole_map(self, k: int, reduction: Reduction, func, args, kwargs) -> torch.Tensor:
        """A whole-map part (:func:`whole_map`) in a tile: the tile's part of its output on the whole image's
        map, gathered over the tiles in the last pass; the tile's own until then, and beyond the whole map (a
        tile the runner padded further). A whole-map value (:func:`whole_value`): its value on that map."""
        x = args[0]
        at = tuple(Fraction(o) / axis.stride for o, axis in zip(self._at, (reduction.rows, reduction.cols),
                                                                  strict=True))
        if any(o.denominator != 1 for o in at):  # (a tile off the map's grid: its own)
            return func(*args, **kwargs)
        (r, c), (n, m) = (int(o) for o in at), x.shape[-2:]
        if self._collects(k):
            self._spans[k] = args[1]
            self._gather_map(k, reduction, x, (r, c))
            if k == self._stop:
                raise _StopTile
        value = self.values.get(k)
        if value is None:
            return func(*args, **kwargs)
        if reduction.what == "value":  # (a value of the whole map, as it is)
            return tuple(v.to(x.device, copy=True) for v in value) if isinstance(value, tuple) else \
                value.to(x.device, copy=True)
        part = value[..., r:r + n, c:c + m]
        if part.shape[-2:] == (n, m):
            return part.to(x.device, x.dtype, copy=True)
        out = func(*args, **kwargs).clone()
        out[..., :part.shape[-2], :part.shape[-1]] = part.to(out.device, out.dtype)
        return out

    def _gather_map(self, k: int, reduction: Reduction, x: torch.Tensor, at: tuple[int, int]) -> None:
        """The tile's share of a whole-map part's input ``x`` (its core, placed ``at`` in the whole map), and
        for a tile at the far border, the whole map's size there (its own map ends where the whole image's
        does)."""
        parts = self._parts.setdefault(k, [])
        (r0, r1, _), (c0, c1, _) = self._core_span(parts, reduction, x.shape[-2:], at)
        if r1 > r0 and c1 > c0:
            parts.append(("map", (at[0] + r0, at[1] + c0), x[..., r0:r1, c0:c1].clone()))

    def _assemble(self, k: int, parts: list) -> torch.Tensor | None:
        """A whole-map part's output (or value) on the whole map its gathered ``parts`` make (None: the tiles
        did not cover it)."""
        size = dict((d, n) for what, d, n in parts if what == "size")
        pieces = [(at, part) for what, at, part in parts if what == "map"]
        whole = _pasted(pieces, (size[0], size[1])) if len(size) == 2 else None
        parts.clear()  # (the pieces, in the whole map now: freed before it is computed on)
        del pieces
        if whole is None:
            return None
        span = self._spans[k]
        with torch.inference_mode():
            return getattr(span, "whole", span)(whole)

    def _gather_wrap(self, k: int, reduction: Reduction, x: torch.Tensor, origin: tuple[int, int],
                     shifts: tuple[int, int]) -> None:
        """The tile's share of the rows and columns a roll wraps to (``x``: its input, rows and columns last):
        its core within ``|shift|`` of the border the roll reads from beyond the other; and, for a tile at the
        far border, the whole map's size there (its own map ends where the whole image's does)."""
        parts = self._parts.setdefault(k, [])
        spans = self._core_span(parts, reduction, x.shape[-2:], origin)
        for d, shift in enumerate(shifts):
            (a, b, far), (a2, b2, _), o, o2 = spans[d], spans[1 - d], origin[d], origin[1 - d]
            if shift < 0:  # the roll brings the near border's first -shift rows (columns) to the far one
                band = (0, -shift)
            elif shift > 0 and far is not None:  # and the far border's last shift rows to the near one
                band = (far - shift, far)
            else:
                continue
            lo, hi = max(a, band[0] - o), min(b, band[1] - o)
            if hi <= lo or b2 <= a2:
                continue
            part = x[..., lo:hi, a2:b2] if d == 0 else x[..., a2:b2, lo:hi]
            parts.append(("wrap", d, (o + lo, o2 + a2) if d == 0 else (o2 + a2, o + lo), part.clone()))

    def _wrap(self, k: int, parts: list) -> _Wrap | None:
        """The gathered parts of roll ``k`` as one :class:`_Wrap` (None: the tiles did not reach both far
        borders)."""
        size = dict((d, n) for what, d, n, *_ in parts if what == "size")
        if len(size) != 2:
            return None
        size = (size[0], size[1])
        strips: list[tuple[int, torch.Tensor] | None] = []
        for d, shift in enumerate(self._shifts[k]):
            pieces = [(start, part) for what, dim, start, *rest in parts if what == "wrap" and dim == d
                      for part in rest]
            first = 0 if shift < 0 else size[d] - shift
            shape = (abs(shift), size[1]) if d == 0 else (size[0], abs(shift))
            strip = _pasted(pieces, shape, (first, 0) if d == 0 else (0, first)) if shift else None
            strips.append(None if strip is None else (first, strip))
        return _Wrap(size, *strips)

    def _core_span(self, parts: list, reduction: Reduction, shape: tuple[int, int], origin: tuple[int, int]
                   ) -> list[tuple[int, int, int | None]]:
        """For the rows and the columns of the tile's map of ``shape`` (at ``origin`` of the whole map): the
        features its core spans, to the map's end for a tile at the far border, and where the whole map ends
        there (None elsewhere), which goes into ``parts`` too (its own map ends where the whole image's
        does)."""
        spans = []
        for d, ((lo, hi), axis, n, o) in enumerate(zip(self._core, (reduction.rows, reduction.cols), shape, origin,
                                                       strict=True)):
            far = o + n if isinstance(hi, End) else None
            if far is not None:
                parts.append(("size", d, far))
            spans.append((axis.index(lo, n), n if far is not None else axis.index(hi, n), far))
        return spans

    def _flat_core(self, reduction: Reduction, length: int) -> tuple[int, int] | None:
        """The (height, width) of a flattened map of ``length`` features at the reduction's stride in this
        tile (rounded up where the network pads the tile inside: OmniSR to whole windows); None where it is not
        one (then the tile keeps its own value)."""
        fh, fw = (math.ceil(a.features(n)) for a, n in zip((reduction.rows, reduction.cols), self._size, strict=True))
        return (fh, fw) if fh * fw == length else None

    def _gather(self, k: int, reduction: Reduction, func, args, kwargs) -> None:
        (y0, y1), (x0, x1) = self._core
        x = args[0]
        if reduction.what == "pool":
            fh, fw = x.shape[-2:]
        elif (shape := self._flat_core(reduction, x.shape[-1])) is None:
            return
        else:
            fh, fw = shape
        r0, r1 = reduction.rows.index(y0, fh), reduction.rows.index(y1, fh)
        c0, c1 = reduction.cols.index(x0, fw), reduction.cols.index(x1, fw)
        if r1 <= r0 or c1 <= c0:
            return
        if reduction.what == "pool":
            kind = _POOLS.get(func) or _KINDS[func]
            dim = (-2, -1) if func in _POOLS else args[1] if len(args) > 1 else kwargs["dim"]
            dims = tuple(sorted({d % x.dim() for d in dim}))
            part = x[..., r0:r1, c0:c1]
            if kind in ("mean", "sum"):
                share = (part.double().sum(dims, keepdim=True), math.prod(part.shape[d] for d in dims))
            else:
                share = ((part.amax(dims, keepdim=True) if kind == "max" else part.amin(dims, keepdim=True)).float(), 0)
        elif reduction.what == "norm":  # the sum of |x|^p over the core's features (flattened: the last dim)
            p = args[1] if len(args) > 1 else kwargs.get("p", 2.0)
            part = x.unflatten(-1, (fh, fw))[..., r0:r1, c0:c1].flatten(-2)
            kind, share = "sum", (part.double().abs().pow(p).sum(-1, keepdim=True), 0)
        else:  # the product over the core's features (flattened: a's last dim, b's second last)
            a = x.unflatten(-1, (fh, fw))[..., r0:r1, c0:c1].flatten(-2)
            b = args[1].unflatten(-2, (fh, fw))[..., r0:r1, c0:c1, :].flatten(-3, -2)
            kind, share = "sum", (a.double() @ b.double(), 0)
        self._parts.setdefault(k, []).append((kind, *share))

    def _combine(self) -> dict[int, torch.Tensor | _Wrap]:
        values = {}
        for k, parts in self._parts.items():
            what = self.reductions[k].what
            if what in ("roll", "whole", "value"):
                if (value := self._wrap(k, parts) if what == "roll" else self._assemble(k, parts)) is not None:
                    values[k] = value
                continue
            if not parts:
                continue
            kind = parts[0][0]
            if kind in ("mean", "sum"):
                total = torch.stack([p[1] for p in parts]).sum(0)
                values[k] = total / sum(p[2] for p in parts) if kind == "mean" else total
            else:
                stacked = torch.stack([p[1] for p in parts])
                values[k] = stacked.amax(0) if kind == "max" else stacked.amin(0)
        return values

    def frozen_at(self, image: np.ndarray, model: Callable[[np.ndarray], np.ndarray]
                  ) -> Callable[[np.ndarray], np.ndarray]:
        """``model`` with its reductions fixed at their values on the whole of ``image`` (what measuring a
        tile's context needs: a window cut from ``image`` then differs from ``image`` only by what it does
        not see nearby)."""
        everything = ((None, _BEYOND), (None, _BEYOND))
        self.values, self._parts, self._gathering, self.share_whole = {}, {}, True, True
        try:
            with self.tile(everything, image.shape[:2]):
                model(image)
        finally:
            self._gathering = False
        self.values = self._combine()
        # Resampling takes ``image`` as the far corner of one DEEP times its size: a tile far from the image's
        # origin samples furthest outside itself (align_corners=True upsampling: up to half a feature before
        # its first), and its context must cover that (HVI-CIDNet: 43 pixels measured at the origin, 49 so).
        (h, w), (ph, pw) = image.shape[:2], self.padded(*image.shape[:2])
        whole = (DEEP * ph, DEEP * pw)

        def frozen(x: np.ndarray) -> np.ndarray:
            """``model`` on ``x``: ``image`` itself or a window cut from its middle (as ``edge_error`` cuts)."""
            at = ((h - x.shape[0]) // 2, (w - x.shape[1]) // 2)
            origin = ((DEEP - 1) * ph + at[0], (DEEP - 1) * pw + at[1])
            with self.tile(everything, x.shape[:2], origin, whole, wrap=False, at=at):  # (a window, not a tile)
                return model(x)

        return frozen

    def settle(self, image: np.ndarray, plan: TilePlan, model: Callable[[np.ndarray], object],
               padded: tuple[int, int], tolerance: float = 1e-6) -> int:
        """Gather the whole-image values of ``image``'s reductions over the tiles of ``plan``, one pass after
        another, until no value moves by more than ``tolerance`` (relative to its size, at least 1):
        ``model`` runs a tile (its output is not used); ``padded``: the size the runner pads the whole image
        to. A network with rolls or whole maps settles call by call instead (:attr:`in_order`). Returns the
        passes made; 0 when tiles make other calls than the probe saw (a network whose work depends on the
        input's size): then no value is shared."""
        self.values = {}
        if (ordered := self.in_order) is not None:
            return self._settle_in_order(image, plan, model, padded, *ordered)
        passes, moved = 0, math.inf
        most = min(MAX_PASSES, sum(r is not None for r in self.reductions) + 1)
        while moved > tolerance and passes < most:
            passes += 1
            self._parts, self._gathering = {}, True
            try:
                for tile, core, origin in tiles_and_cores(image, plan, padded):
                    with self.tile(core, tile.shape[:2], origin, padded):
                        model(tile)
                    if self.calls != len(self.reductions):
                        self.values = {}
                        return 0
            finally:
                self._gathering = False
            new = self._combine()
            moved = max(_change(self.values[k], new[k]) if k in self.values else math.inf for k in new) if new else 0.0
            self.values = new
        self.passes = passes
        return passes

    def whole_map_bytes(self, padded: tuple[int, int], itemsize: int) -> int:
        """The memory sharing the whole-map parts holds at its peak on an image the runner pads to ``padded``
        (bytes, in features of ``itemsize``): the parts' outputs on the whole map, kept for the tiles, and one
        map gathered, assembled and computed on (values of a whole map, such as pooled keys, are small)."""
        maps = [(r.what, math.ceil(r.rows.features(padded[0])) * math.ceil(r.cols.features(padded[1])) * r.channels
                 * itemsize) for r in self.reductions if r is not None and r.what in ("whole", "value")]
        return sum(size for what, size in maps if what == "whole") + 3 * max((size for _, size in maps), default=0)

    @property
    def in_order(self) -> tuple[list[int], bool] | None:
        """(calls, border): for a network whose shared calls are all rolls, or include whole maps, the calls
        that :meth:`settle` settles in order, one pass each, and whether it runs only the tiles at the image's
        borders (rolls only); None for other networks (values that settle by repeated passes), or none."""
        shared = [k for k, r in enumerate(self.reductions)
                  if r is not None and (self.share_whole or r.what not in ("whole", "value"))]
        kinds = {self.reductions[k].what for k in shared}
        if kinds == {"roll"}:
            return shared, True
        return (shared, False) if kinds & {"whole", "value"} else None

    def _settle_in_order(self, image: np.ndarray, plan: TilePlan, model: Callable[[np.ndarray], object],
                         padded: tuple[int, int], calls: list[int], border: bool) -> int:
        """:meth:`settle` call by call: the k-th call's value is exact after k passes (its input then is), so
        pass k gathers only that call, and runs each tile only until it (a whole-map part's map is as large as
        the image: one at a time); with ``border``, only the tiles at the image's borders (which alone hold or
        read what a roll wraps to)."""
        try:
            for k in calls:
                self._parts, self._gathering, self._stop = {}, True, k
                for tile, core, origin in tiles_and_cores(image, plan, padded):
                    if border and not _at_border(core):
                        continue
                    try:
                        with self.tile(core, tile.shape[:2], origin, padded):
                            model(tile)
                    except _StopTile:
                        pass_cut_short()  # (a pass, as progress counts them: see settling_passes)
                        continue
                    self.values = {}  # (it never reached call k: its calls depend on its size)
                    return 0
                if (value := self._combine().get(k)) is not None:
                    self.values[k] = value
                self._parts = {}
        finally:
            self._gathering, self._stop = False, None
        self.passes = len(calls)
        return len(calls)


def settling_passes(statistics: TileStatistics | None, image: np.ndarray, plan: TilePlan) -> int:
    """The network passes :meth:`TileStatistics.settle` makes on ``image`` before ``plan``'s tiles run, where
    they are known in advance: one per call over each tile (at the image's borders only, for rolls) for a
    network that settles its calls in order (0 for others, whose passes depend on how fast their values
    settle)."""
    ordered = statistics.in_order if statistics is not None and plan.tile else None
    if not ordered:
        return 0
    calls, border = ordered
    return len(calls) * sum(not border or _at_border(core) for _, core, _ in tiles_and_cores(image, plan,
                                                                                           image.shape[:2]))


def _at_border(core: tuple[Bounds, Bounds]) -> bool:
    """Whether a tile's core (see :func:`tiles_and_cores`) reaches one of the image's borders."""
    return any(lo is None or isinstance(hi, End) for lo, hi in core)


def _pasted(pieces: list[tuple[tuple[int, int], torch.Tensor]], shape: tuple[int, int],
            offset: tuple[int, int] = (0, 0)) -> torch.Tensor | None:
    """A map of ``shape`` (rows, columns; its leading dimensions the pieces') made of ``pieces``, each (its first
    row and column, less ``offset``; its features); None where they do not cover it (the tiles' cores do not
    overlap) or there are none."""
    if not pieces:
        return None
    out = pieces[0][1].new_zeros((*pieces[0][1].shape[:-2], *shape))
    covered = 0
    for (r, c), part in pieces:
        r, c = r - offset[0], c - offset[1]
        out[..., r:r + part.shape[-2], c:c + part.shape[-1]] = part
        covered += part.shape[-2] * part.shape[-1]
    return out if covered == shape[0] * shape[1] else None


def _wrap_sources(origin: int, n: int, shift: int, whole: int, device) -> tuple[torch.Tensor, ...]:
    """For the ``n`` features of a tile's map from ``origin`` on, rolled by ``shift`` on a whole map of
    ``whole``: the whole map's feature each reads, whether that read wraps around the whole map, and whether
    the feature is on the whole map at all (a tile at the far border may be padded beyond it)."""
    at = torch.arange(origin, origin + n, device=device)
    reads = at - shift
    inside = at < whole
    return reads % whole, inside & ((reads < 0) | (reads >= whole)), inside


def tiles_and_cores(image: np.ndarray, plan: TilePlan, padded: tuple[int, int]):
    """Each tile of ``plan`` on ``image`` (row by row, as :func:`superres.ops.tiling.run_tiled` runs them)
    with its core and its origin (its first row and column in the image). The core, ((row from, to),
    (column from, to)) in the tile's pixels, is the part of the image it owns,
    split between neighbours in the middle of their overlap. At the image's borders a core takes what the
    whole image's feature maps have there: from None (all of the near border), to an :class:`End` (the far
    border, with the whole image ``padded`` to this size)."""
    h, w = image.shape[:2]
    (ys, th), (xs, tw) = tile_grid(h, w, plan)

    def cores(starts: list[int], size: int, length: int) -> list[Bounds]:
        bounds = [(a + size + b) // 2 for a, b in itertools.pairwise(starts)]
        return [(None if i == 0 else bounds[i - 1] - a, End(length - a) if i == len(starts) - 1 else bounds[i] - a)
                for i, a in enumerate(starts)]

    for y0, rows in zip(ys, cores(ys, th, padded[0]), strict=True):
        for x0, cols in zip(xs, cores(xs, tw, padded[1]), strict=True):
            yield image[y0:y0 + th, x0:x0 + tw], (rows, cols), (y0, x0)
