"""Upscale one image: any bit depth, gray or color, with or without alpha, tiled or whole.

The network runs at its native scale; another ``outscale`` is reached by resizing its result
(area filter when shrinking, Lanczos when enlarging, as Real-ESRGAN's script does). RGBA images
have the color under transparent pixels filled from the nearest opaque colors first (push-pull),
so that dark "transparent black" does not bleed into visible edges; the alpha channel is
upscaled by the network (as a gray image) or by bicubic interpolation, and then kept exactly opaque
and exactly transparent inside the regions that are so in the input (:func:`keep_solid_alpha`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from superres.io.image import DEFAULT_MAX_PIXELS
from superres.ops.layout import from_float, to_float
from superres.ops.tiling import TilePlan, plan_overhead, run_tiled, smallest_tile, tile_count
from superres.runner import Runner
from superres.runtime import RunOptions
from superres.zoo.pretrained import DEFAULT_MODEL

if TYPE_CHECKING:
    from superres.infer.statistics import TileStatistics

DEFAULT_BUDGET_CPU = 1152 << 20  # working memory of one tile on the CPU (activations and output)
# Activations in bf16/fp16 as a fraction of fp32's, indexed by "on a CUDA GPU". On the CPU, oneDNN's
# bf16 convolutions keep fp32 buffers beside their bf16 ones: realesrgan-x4plus measured 1624 bytes per
# input pixel in bf16 against 2421 in fp32 (a 384x384 input, peak RSS growth, 2-core Xeon with AMX), 0.67,
# not the 0.5 the sample size suggests, which let bf16 tiles take 1.4x the budget.
HALF_PRECISION_MEMORY = {False: 0.7, True: 0.5}
# Compute of a tiled pass over one whole-image pass beyond which a tile the user chose earns a warning, and
# which sets a model's minimum tile. Auto tiles stay within 1.3-1.6x; --tile 170 on a 320x240 image with
# realesrgan-x4plus computed 12x the pixels and took 4.5x (bf16) to 6.8x (fp32) the time (issue 35).
MAX_TILE_OVERHEAD = 2.0
# Input pixels around an output pixel's source position that decide whether its alpha is solid: bicubic's
# taps reach 2 pixels from the source pixel; beyond that, an edge is the model's to draw.
ALPHA_REACH = 2


def run_options(options: RunOptions | None = None, **fields) -> RunOptions:
    """``options`` with ``fields`` (device, precision, backend, tile, tile_pad) replaced: one object."""
    if not fields:
        return options or RunOptions()
    return dataclasses.replace(options, **fields) if options else RunOptions(**fields)


class Upscaler:
    """A loaded model ready to upscale arrays; build it once and reuse it for a batch.

    ``model``: a name from ``superres models``, a checkpoint path, ``bicubic`` or a loaded
    :class:`~superres.zoo.ModelDescriptor`; ``options`` (or the same fields as keywords): device,
    precision, backend, tile and tile_pad; ``alpha``: how an alpha channel is upscaled (``model``
    or ``bicubic``); ``budget``: bytes of working memory per tile (default: from the device);
    ``max_pixels``: the largest output (and network output) allowed, checked before any work (None: any).
    """

    def __init__(self, model=DEFAULT_MODEL, options: RunOptions | None = None, *, alpha: str = "model",
                 budget: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS, **option_fields):
        from superres.zoo import MODELS, load_model

        if alpha not in ("model", "bicubic"):
            raise ValueError(f"alpha must be 'model' or 'bicubic', got {alpha!r}")
        self.options = run_options(options, **option_fields)
        self.model, self.alpha, self.budget, self.max_pixels = model, alpha, budget, max_pixels
        desc = model if not isinstance(model, str | os.PathLike) else load_model(model)
        if desc.purpose == "inpainting":
            raise ValueError(f"{model}: {desc.arch} is an inpainting network, which needs a mask; superres runs "
                             "image-to-image networks only")
        if desc.purpose not in ("sr", "restoration"):  # restorers (denoise, deblur, JPEG...) run at their scale, 1
            raise ValueError(f"{model}: a {desc.arch} is a {desc.purpose} network, not an image upscaler")
        self.desc, self.scale, self.in_channels = desc, desc.scale, desc.in_channels
        spec = MODELS.get(desc.name) if desc.name else None
        self.runner = Runner(desc, self.options, ncnn_files=ncnn_files(spec))
        self.torch_device = self.runner.device
        self._statistics: TileStatistics | bool | None = False  # False: not probed yet
        self._margin: int | None = 0  # None: to be measured on first need (a tiled image, or asked)
        if desc.module is not None:
            known_margin = spec.margin if spec else None
            tile_pad = self.options.tile_pad
            self._margin = tile_pad if tile_pad is not None else known_margin or None
            self.bytes_per_pixel = (spec.bytes_per_pixel if spec else None) or _estimate_bytes_per_pixel(desc)
            self.ncnn_bytes_per_pixel = spec.ncnn_bytes_per_pixel if spec else None
        self._warned_tile = False

    def summary(self) -> str:
        """How images run, in words, e.g. ``8-bit images: precision bf16, backend torch; 16-bit and float:
        precision fp32, backend ncnn for images up to 137x137 pixels or the same area, torch for larger ones``."""
        runs = [self._run_summary(p) for p in map(self.runner.precision_for, (np.uint8, np.uint16))]
        if runs[0] == runs[1]:
            return runs[0]
        return f"8-bit images: {runs[0]}; 16-bit and float: {runs[1]}"

    def _run_summary(self, precision: str) -> str:
        backend = self.runner.backend_for(precision)
        if backend == "ncnn" and self.options.backend != "ncnn" and self.tile == "auto":
            side = self._auto_tile(self._budget(), precision, "ncnn")
            backend = f"ncnn for images up to {side}x{side} pixels or the same area, torch for larger ones"
        return f"precision {precision}, backend {backend}"

    @property
    def margin(self) -> int:
        """The context each tile gets at its edges: ``tile_pad``, the model's registered margin, or measured
        (and cached per set of weights) the first time an image needs tiles or this is asked: an image that
        runs whole never waits for the measurement."""
        if self._margin is None:
            self._margin = self._measured_margin()
        return self._margin

    @property
    def minimum_tile(self) -> int | None:
        """The smallest tile side worth choosing (see :func:`minimum_tile`), from the margin in use
        (registered, measured, or ``tile_pad``); None for a model that never tiles (bicubic)."""
        return None if self.desc.module is None else _minimum_tile(self.margin)

    @property
    def precision_used(self) -> str:
        """The precision 8-bit images run in now (fp32 after a half-precision fallback)."""
        return self.runner.precision_for(np.uint8)

    @property
    def backend_used(self) -> str:
        return self.runner.backend_for(self.precision_used)

    @property
    def tile(self) -> int | str:
        return self.options.tile

    @property
    def display_name(self) -> str:
        """The model as messages name it: its registered name, its file's name, or its architecture."""
        return self.desc.name or (Path(self.desc.source).name if self.desc.source else self.desc.arch)

    def _least_tile(self, margin: int, ramp: int) -> int:
        """The smallest tile :meth:`plan` takes with ``margin`` (the most seams): the margin at both edges, the
        blend and 8 pixels, or the network's minimum size, plus room to start on its grid."""
        return max(2 * margin + ramp + 8, self.desc.min_size) + self.align - 1

    @property
    def align(self) -> int:
        """The grid tiles start on (and the margin is measured on): see :func:`tile_alignment`."""
        return tile_alignment(self.desc)

    @property
    def statistics(self) -> TileStatistics | None:
        """The network's whole-image reductions, which its tiles share (None: it has none); found by one
        probe of the network, on first need."""
        if self._statistics is False:
            from superres.infer.statistics import TileStatistics

            found = network_probe(self.desc)
            self._statistics = TileStatistics(found, self.runner.padded) if found.shares else None
        return self._statistics

    def _measured_margin(self) -> int:
        from superres.infer.context import ReachWarning, cached_margin, measure_margin
        from superres.zoo.pretrained import cache_dir

        name, declared = self.display_name, declared_context(self.desc)

        def measure() -> int:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                margin = max(measure_margin(lambda x: self.runner.forward(x, "fp32"), self.scale, self.in_channels,
                                            name=name, align=self.align, statistics=self.statistics), declared)
            for warning in caught:
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
            if not any(issubclass(warning.category, ReachWarning) for warning in caught):  # it settled
                self._check_tiles(margin, name)
            return margin

        # v4: measured on the network's probed grid, with its whole-image statistics, geometry and whole-map parts
        # shared (OmniSR's, RGT's and AuraSR's were not before), settled with a tail of a quarter of the margin
        # (and at least what the network declares, also where a margin was cached before it declared it)
        return max(cached_margin(self.desc.module.state_dict(), measure, cache_dir() / "margins-v4.json"), declared)

    def _check_tiles(self, margin: int, name: str) -> None:
        """Tiles with ``margin`` pixels of context, as small as :meth:`plan` allows (the most seams), against the
        whole image on a bundled photo: a warning where they differ by more than 1/255 although the context
        settled (a network whose output depends on the whole image in a way tiles cannot share: noise drawn in
        every pass, windows that wrap around the image undeclared, a pooled map whose depth scales with its
        size)."""
        from superres.infer.context import DEFAULT_TOLERANCE, sample_images

        ramp, least = _ramp(margin), self.desc.min_size
        tile = self._least_tile(margin, ramp)
        side = tile + tile // 2 + 1
        photo = max(sample_images(), key=lambda p: min(p.shape[:2]))
        if min(photo.shape[:2]) < side:
            return
        crop = np.ascontiguousarray(photo[:side, :side])
        if self.in_channels == 1:
            crop = crop.mean(axis=2, keepdims=True)
        whole = self.runner.forward(crop, "fp32")
        tiled = np.empty_like(whole)
        self._run_plan(crop, TilePlan(tile, margin, ramp, self.align, least), "fp32", "torch", tiled, lambda r: r)
        worst = float(np.abs(tiled - whole).max())
        if worst > DEFAULT_TOLERANCE:
            warnings.warn(f"{name}: tiles differ from the whole image by up to {worst * 255:.1f}/255 although they get "
                          f"{margin} pixels of context: this network's output depends on the whole image in a way "
                          "tiles cannot share (--tile 0 runs images whole)", stacklevel=2)

    # --- planning ---------------------------------------------------------------------------

    def plan(self, height: int, width: int, precision: str | None = None, backend: str | None = None) -> TilePlan:
        """Tiles for an image of this size: ``tile`` as given, or the largest the memory budget
        allows at ``precision`` (default: the one 8-bit images run in) on ``backend`` (default: the
        one :meth:`backend` picks for this image). An image that runs whole needs no margin (nor measures it)."""
        if self.desc.module is None:
            return TilePlan(0, 0, 0)
        precision = precision or self.precision_used
        if self.tile == "auto":
            backend = backend or self.backend(height, width, precision)
            tile = self._auto_tile(self._budget(), precision, backend)
            if height * width <= tile * tile:
                return TilePlan(0, 0, 0)
        else:
            tile = int(self.tile)
            if tile == 0 or (tile >= height and tile >= width):
                return TilePlan(0, 0, 0)
        ramp = _ramp(self.margin)
        least = self.desc.min_size
        need = self._least_tile(self.margin, ramp)
        if tile < need:
            budget = "" if self.tile != "auto" else (
                f" (the largest that fits the {self._budget() >> 20} MiB tile budget on the {backend} runtime"
                + ("; --backend torch needs far less memory" if backend == "ncnn" else "") + ")")
            why = (f"its {least}-pixel minimum size" if least > 2 * self.margin + ramp + 8 else
                   f"2 x its {self.margin}-pixel receptive-field margin + a {ramp}-pixel blend")
            raise ValueError(f"tile {tile}{budget} is too small for {self.model}: it needs at least {need} pixels "
                             f"({why}" + (f", on its {self.align}-pixel grid" if self.align > 1 else "") + ")")
        return TilePlan(tile, self.margin, ramp, self.align, least)

    def passes(self, image: np.ndarray) -> int:
        """The network passes :meth:`upscale_array` makes on ``image`` (what a
        :func:`superres.runner.progress_scope` counts): one per tile, and those that settle the whole image's
        rolls and whole maps first (:func:`superres.infer.statistics.settling_passes`), twice with an alpha
        channel the model upscales; 0 without a network."""
        if self.desc.module is None:
            return 0
        from superres.infer.statistics import settling_passes

        h, w = image.shape[:2]
        precision = self.runner.precision_for(image.dtype)
        backend = self.backend(h, w, precision)
        plan = self.plan(h, w, precision, backend)
        tiles = tile_count(h, w, plan)
        if plan.tile and backend == "torch":
            if self.statistics is not None:
                self._whole_maps_fit(self.statistics, h, w, precision)
            tiles += settling_passes(self.statistics, image, plan)
        alpha = image.ndim == 3 and image.shape[2] in (2, 4) and self.alpha == "model"
        return tiles * (2 if alpha else 1)

    def backend(self, height: int, width: int, precision: str) -> str:
        """The backend an image of this size runs on at ``precision``: the options' choice, except
        that under ``auto`` an image that the ncnn runtime cannot run whole within the tile budget
        runs on PyTorch. ncnn takes ~25x PyTorch's memory per pixel on RRDBNet, so its tiles would
        be too small to be worth their overlap (or smaller than the receptive field)."""
        backend = self.runner.backend_for(precision)
        if backend != "ncnn" or self.options.backend == "ncnn":
            return backend
        tile = self.tile if self.tile != "auto" else self._auto_tile(self._budget(), precision, "ncnn")
        return "ncnn" if tile == 0 or height * width <= tile * tile else "torch"

    def _budget(self) -> int:
        return self.budget or _default_budget(self.torch_device)

    def _auto_tile(self, budget: int, precision: str, backend: str = "torch") -> int:
        """The largest tile side t whose working memory fits the budget: the network's activations
        (t^2 x bytes_per_pixel, measured in fp32 on each backend; less in 16-bit precisions, see
        :data:`HALF_PRECISION_MEMORY`) and its float output (t^2 x scale^2 x 3 x 4 bytes).

        Not counted: the float band of output rows being blended (t x scale rows of the output,
        in float32), which grows with the output like the output array itself does.
        """
        return int(math.sqrt(budget / self._bytes_per_input_pixel(precision, backend)))

    def _bytes_per_input_pixel(self, precision: str, backend: str = "torch") -> float:
        """Working memory per input pixel: activations (measured in fp32 on each backend, times
        :data:`HALF_PRECISION_MEMORY` in 16-bit precisions on PyTorch) and the float output (scale^2 x 3 x 4
        bytes)."""
        if backend == "ncnn" and self.ncnn_bytes_per_pixel:
            activations = self.ncnn_bytes_per_pixel
        elif precision == "fp32":
            activations = self.bytes_per_pixel
        else:
            activations = self.bytes_per_pixel * HALF_PRECISION_MEMORY[self.torch_device.type == "cuda"]
        return activations + self.scale**2 * 12

    # --- running ----------------------------------------------------------------------------

    def upscale_array(self, image: np.ndarray, outscale: float | None = None,
                      progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """HxW, HxWx1, HxWx3 or HxWx4 array (uint8, uint16 or float in [0, 1]) -> same dtype and layout."""
        dtype, squeeze = image.dtype, image.ndim == 2
        if dtype not in (np.uint8, np.uint16) and not np.issubdtype(dtype, np.floating):
            raise ValueError(f"image dtype must be uint8, uint16 or float, got {dtype}")
        img = image[..., None] if squeeze else image
        if img.ndim != 3 or img.shape[2] not in (1, 2, 3, 4):
            raise ValueError(f"image must be HxW or HxWxC with C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA), "
                             f"got shape {image.shape}")
        if min(img.shape[:2]) < 1:
            raise ValueError(f"image is empty ({image.shape})")
        self.check_size(*img.shape[:2], outscale)
        if self.desc.resample is not None:  # no network: resample the samples themselves, at any scale
            out = self.runner(image) if outscale in (None, self.scale) else self._resample(image, outscale)
            if img.shape[2] in (2, 4):
                keep_solid_alpha(out[..., -1], img[..., -1])
            return out
        precision = self.runner.precision_for(dtype)
        x = to_float(img)
        channels = x.shape[2]
        color = x[..., :3] if channels >= 3 else np.repeat(x[..., :1], 3, axis=2)
        alpha = x[..., -1] if channels in (2, 4) else None
        if alpha is not None and alpha.min() < 1.0:
            color = fill_transparent(color, alpha)

        def finish(rows: np.ndarray) -> np.ndarray:
            return from_float(rows, dtype)

        out_dtype = np.float32 if np.issubdtype(dtype, np.floating) else dtype
        h, w = x.shape[:2]
        result = np.empty((h * self.scale, w * self.scale, channels), out_dtype)
        if channels == 3:
            self._run(precision, color, result, finish, progress)
        else:
            color_out = np.empty((h * self.scale, w * self.scale, 3), out_dtype)
            self._run(precision, color, color_out, finish, progress)
            if channels <= 2:
                result[..., 0] = cv2.cvtColor(color_out, cv2.COLOR_RGB2GRAY)
            else:
                result[..., :3] = color_out
            del color_out
        if alpha is not None:
            if self.alpha == "model":
                alpha_out = np.empty((h * self.scale, w * self.scale, 3), out_dtype)
                self._run(precision, np.repeat(alpha[..., None], 3, axis=2), alpha_out, finish, progress)
                result[..., -1] = cv2.cvtColor(alpha_out, cv2.COLOR_RGB2GRAY)
            else:
                up = cv2.resize(alpha, (w * self.scale, h * self.scale), interpolation=cv2.INTER_CUBIC)
                result[..., -1] = finish(up)
        result = resize_to(result, outscale, self.scale, h, w)
        if alpha is not None:
            keep_solid_alpha(result[..., -1], img[..., -1])
        return result[..., 0] if squeeze else result

    def check_size(self, height: int, width: int, outscale: float | None = None) -> None:
        """Refuse, before any work, an output (or the network's native output) over ``max_pixels``."""
        if outscale is not None and not outscale > 0:
            raise ValueError(f"outscale must be positive, got {outscale}")
        out_w, out_h = output_size(height, width, outscale or self.scale)
        largest = max(out_w * out_h, width * height * self.scale**2 if self.desc.resample is None else 0)
        if self.max_pixels and largest > self.max_pixels:
            raise ValueError(f"the output would be {out_w}x{out_h} (x{outscale or self.scale} of {width}x{height}), "
                             f"over the limit of {self.max_pixels} pixels (--max-pixels raises it)")

    def frames_per_batch(self, height: int, width: int) -> int:
        """How many frames of this size go through the network together: ``options.batch``, or on a GPU
        as many whole frames as the memory budget holds (up to 8); one on the CPU (no gain there)."""
        if self.options.batch != "auto":
            return int(self.options.batch)
        if self.desc.module is None or self.torch_device.type != "cuda" or self.plan(height, width).tile:
            return 1
        precision = self.runner.precision_for(np.uint8)
        per_frame = height * width * self._bytes_per_input_pixel(precision)
        return int(max(1, min(8, self._budget() // per_frame)))

    def upscale_batch(self, images: list[np.ndarray], outscale: float | None = None) -> list[np.ndarray]:
        """Same-size 8-bit RGB images (video frames) through the network together when they fit whole;
        anything else image by image, as :meth:`upscale_array`."""
        first = images[0]
        whole = (len(images) > 1 and first.dtype == np.uint8 and first.ndim == 3 and first.shape[2] == 3
                 and self.desc.module is not None and self.plan(*first.shape[:2]).tile == 0
                 and self.backend(*first.shape[:2], self.runner.precision_for(np.uint8)) == "torch"
                 and all(image.shape == first.shape for image in images))
        if not whole:
            return [self.upscale_array(image, outscale) for image in images]
        h, w = first.shape[:2]
        return [resize_to(out, outscale, self.scale, h, w) for out in self.runner.batch(np.stack(images))]

    def _run(self, precision: str, color: np.ndarray, out: np.ndarray, finish, progress) -> None:
        backend = self.backend(*color.shape[:2], precision)
        plan = self.plan(*color.shape[:2], precision, backend)
        if self.tile != "auto" and not self._warned_tile:
            self._warn_small_tile(plan, *color.shape[:2])
        self._run_plan(color, plan, precision, backend, out, finish, progress)

    def _run_plan(self, color: np.ndarray, plan: TilePlan, precision: str, backend: str, out: np.ndarray, finish,
                  progress=None) -> None:
        """``color`` through the network under ``plan`` into ``out`` (see :func:`run_tiled`); the tiles of a
        network with whole-image reductions share the whole image's values (:mod:`superres.infer.statistics`)."""
        statistics = self.statistics if plan.tile and backend == "torch" else None
        cores = None
        if statistics is not None:  # each tile sees the whole image's pooled statistics (gathered first) and geometry
            from superres.infer.statistics import tiles_and_cores

            padded = self.runner.padded(*color.shape[:2])
            run = lambda tile: self.runner.forward(tile, precision, backend)  # noqa: E731
            need, free = self._whole_maps_fit(statistics, *color.shape[:2], precision)
            if not statistics.share_whole:
                warnings.warn(f"{self.display_name}: its tiles would hold {need / 2**30:.1f} GiB of whole-image "
                              f"maps to compute what the whole image does ({free / 2**30:.1f} GiB to spare on the "
                              f"{self.torch_device.type}): they compute their own, and may differ from a "
                              "whole-image result", stacklevel=4)
            if statistics.reductions and not statistics.settle(color, plan, run, padded):
                name = self.display_name
                warnings.warn(f"{name}: its tiles make other calls than its probe did, so they cannot share the whole "
                              "image's statistics; a tiled result may differ from a whole-image one (--tile 0 runs "
                              "images whole)", stacklevel=4)
            # in the order run_tiled runs the tiles
            cores = ((core, origin) for _, core, origin in tiles_and_cores(color, plan, padded))

        def forward(tile: np.ndarray) -> np.ndarray:
            if cores is None:
                return self.runner.forward(tile, precision, backend)
            core, origin = next(cores)
            with statistics.tile(core, tile.shape[:2], origin, padded):
                return self.runner.forward(tile, precision, backend)

        run_tiled(color, forward, self.scale, plan, out, finish, progress)

    def _whole_maps_fit(self, statistics: TileStatistics, height: int, width: int, precision: str) -> tuple[int, int]:
        """Whether the tiles of a ``height`` x ``width`` image can share the network's whole-map parts
        (:meth:`superres.infer.statistics.TileStatistics.whole_map_bytes`) within half the memory free on the
        device; sets ``statistics.share_whole`` and returns (bytes needed, bytes to spare)."""
        need = statistics.whole_map_bytes(self.runner.padded(height, width), 4 if precision == "fp32" else 2)
        free = device_memory(self.torch_device) // 2 if need else 0
        statistics.share_whole = need <= free
        return need, free

    def _warn_small_tile(self, plan: TilePlan, height: int, width: int) -> None:
        """Once per upscaler (a run), when the tile the user chose makes the tiles mostly overlap."""
        overhead = plan_overhead(height, width, plan)
        if overhead <= MAX_TILE_OVERHEAD:
            return
        self._warned_tile = True
        name = self.display_name
        warnings.warn(f"--tile {plan.tile}: neighbouring tiles overlap by {2 * plan.margin + plan.ramp} pixels "
                      f"({name} needs {plan.margin} pixels of context at each tile edge, plus {plan.ramp} to "
                      f"blend), so a {width}x{height} image computes {overhead:.1f}x the pixels of one whole pass; "
                      f"use --tile auto, or at least --tile {self.minimum_tile}", stacklevel=4)

    def _resample(self, image: np.ndarray, outscale: float) -> np.ndarray:
        """A resampling model (bicubic) at another scale: the same function, at ``outscale``."""
        from superres.zoo import load_model

        return Runner(load_model(self.desc.arch, scale=outscale), self.options)(image)


def resize_to(image: np.ndarray, outscale: float | None, native: int, h: int, w: int) -> np.ndarray:
    """The network's output (``native`` x) resized to ``outscale`` x the input size."""
    if outscale is None or outscale == native:
        return image
    if not outscale > 0:
        raise ValueError(f"outscale must be positive, got {outscale}")
    size = output_size(h, w, outscale)
    interpolation = cv2.INTER_AREA if outscale < native else cv2.INTER_LANCZOS4
    out = cv2.resize(image, size, interpolation=interpolation)
    return out.reshape(size[1], size[0], image.shape[2]) if out.ndim == 2 else out


def tile_alignment(desc) -> int:
    """The grid a network works on, on which tiles start: its size multiple, its attention windows (a
    windowed transformer pads to its window inside, so a tile off the grid sees other windows than the whole
    image does), its downsampling strides, and its windows at its coarsest stride (SCUNet's 8-pixel windows
    at 1/8 of the input: 64 input pixels), found by one probe of the network (remembered)."""
    return network_probe(desc).grid


def network_probe(desc):
    """What one probe run of ``desc``'s network shows (:func:`superres.infer.statistics.probe`): its grid and
    its whole-image reductions."""
    from superres.infer.statistics import probe

    return probe(desc, declared_alignment(desc), attention_windows(desc))


def declared_alignment(desc) -> int:
    """The part of :func:`tile_alignment` a network declares: its size multiple, its attention windows and
    a ``tile_grid`` attribute of any of its modules (Real-CUGAN's)."""
    align = math.lcm(max(1, desc.size_multiple), attention_windows(desc))
    for module in desc.module.modules() if desc.module is not None else ():
        grid = getattr(module, "tile_grid", None)
        if isinstance(grid, int) and 0 < grid <= 256:
            align = math.lcm(align, grid)
    return align


def declared_context(desc) -> int:
    """The least context (input pixels) a network declares its tiles need, by a ``tile_context`` attribute of
    any of its modules: a network that patches its input itself (IPT) needs its whole patch. 0: none."""
    declared = [getattr(m, "tile_context", None) for m in (desc.module.modules() if desc.module is not None else ())]
    return max((c for c in declared if isinstance(c, int) and 0 < c <= 512), default=0)


def attention_windows(desc) -> int:
    """The least common multiple of the ``window_size`` and ``split_size`` of a network's modules (1: none):
    square windows (Swin's), and the rectangular windows of CAT, DAT, CRAFT and RGT (``split_size`` x its
    transpose, on a map padded to the longer side)."""
    align = 1
    for module in desc.module.modules() if desc.module is not None else ():
        for name in ("window_size", "split_size"):
            window = getattr(module, name, None)
            for side in window if isinstance(window, tuple | list) else (window,):
                if isinstance(side, int) and 0 < side <= 256:
                    align = math.lcm(align, side)
    return align


def minimum_tile(model) -> int | None:
    """The smallest tile side worth giving ``--tile`` for ``model`` (a name from ``superres models``, its
    ``ModelSpec`` or a loaded descriptor), from its registered margin: tiles of this size compute at most
    :data:`MAX_TILE_OVERHEAD` x the pixels of one whole pass on a large image (tiles that cover the image
    run it whole, at no cost). None when the margin is not registered (it is measured on first use; an
    :class:`Upscaler`'s ``minimum_tile`` knows it then) or the model never tiles (bicubic)."""
    from superres.zoo import MODELS

    name = model if isinstance(model, str) else getattr(model, "name", None)
    spec = MODELS.get(name) if name else None
    return _minimum_tile(spec.margin) if spec is not None and spec.margin is not None else None


def _ramp(margin: int) -> int:
    """Input pixels over which neighbouring tiles hand over (beyond the margin's zero weight)."""
    return max(4, margin // 8)


def _minimum_tile(margin: int) -> int:
    return smallest_tile(2 * margin + _ramp(margin), MAX_TILE_OVERHEAD)


def keep_solid_alpha(alpha_out: np.ndarray, alpha_in: np.ndarray, reach: int = ALPHA_REACH) -> None:
    """Set the upscaled alpha ``alpha_out`` (in place, any size and dtype) to exactly opaque (the dtype's
    maximum, 1.0 for floats) or exactly 0 where every input alpha sample within ``reach`` pixels of its
    source position is so. A network that sees a flat 255 gives 254 in places (realesrgan-x4plus-anime:
    all of an opaque disc's interior); the edges between stay the network's (or bicubic's)."""
    def top(dtype) -> float:
        return 1.0 if np.issubdtype(dtype, np.floating) else np.iinfo(dtype).max

    kernel = np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)
    # 1: solidly opaque, 2: solidly transparent, 0: near an edge; the image border is no edge (erode's default)
    solid = (cv2.erode((alpha_in >= top(alpha_in.dtype)).astype(np.uint8), kernel)
             + 2 * cv2.erode((alpha_in <= 0).astype(np.uint8), kernel))
    if not solid.any():
        return
    (h, w), (out_h, out_w) = alpha_in.shape, alpha_out.shape
    rows = np.minimum(((np.arange(out_h) + 0.5) * h / out_h).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(out_w) + 0.5) * w / out_w).astype(np.intp), w - 1)
    band = max(1, (1 << 20) // out_w)  # a band of output rows at a time: no full-size masks
    for y in range(0, out_h, band):
        state, view = solid[rows[y:y + band]][:, cols], alpha_out[y:y + band]
        view[state == 1] = top(alpha_out.dtype)
        view[state == 2] = 0


def output_size(h: int, w: int, outscale: float) -> tuple[int, int]:
    """(width, height) of an h x w image resized ``outscale`` x."""
    return max(1, round(w * outscale)), max(1, round(h * outscale))


def fill_transparent(color: np.ndarray, alpha: np.ndarray, levels: int = 12) -> np.ndarray:
    """Replace the color of (partly) transparent pixels by the alpha-weighted color around them.

    Push-pull: alpha-weighted averages on an image pyramid, each pixel taking the finest level
    where some opaque color is near. Opaque pixels are unchanged; partly transparent ones are
    blended towards their neighbourhood in proportion to their transparency.
    """
    pyramid = [(color * alpha[..., None], alpha)]
    for _ in range(levels):
        c, a = pyramid[-1]
        if min(a.shape) <= 1:
            break
        size = (max(1, a.shape[1] // 2), max(1, a.shape[0] // 2))
        pyramid.append((cv2.resize(c, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], 3),
                        cv2.resize(a, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0])))
    filled = None
    for c, a in reversed(pyramid):
        mean = c / np.maximum(a, 1e-6)[..., None]
        if filled is not None:
            up = cv2.resize(filled, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_LINEAR)
            up = up.reshape(a.shape[0], a.shape[1], 3)
            weight = np.clip(a, 0, 1)[..., None]
            mean = weight * mean + (1 - weight) * up
        filled = mean
    weight = alpha[..., None]
    return (weight * color + (1 - weight) * filled).astype(np.float32)


def device_memory(device) -> int:
    """Bytes free for work on ``device``: the GPU's free memory, or what the system reports available
    (MemAvailable, which counts the page cache the kernel can reclaim)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    from superres.runtime import available_memory

    return available_memory() or 4 * DEFAULT_BUDGET_CPU


def _default_budget(device) -> int:
    if device.type == "cuda":
        return int(device_memory(device) * 0.5)
    return int(min(DEFAULT_BUDGET_CPU, device_memory(device) // 4))


def _estimate_bytes_per_pixel(desc) -> float:
    """Activation bytes per input pixel: the widest layer output (relative to the input's area),
    times the number of such tensors alive at once in a typical SR network (5), in fp32."""
    import torch

    widest = [0.0]
    side = max(32, desc.min_size)
    side += -side % desc.size_multiple  # an input the network takes (Uformer: multiples of 128)

    def hook(_module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            widest[0] = max(widest[0], output.shape[1] * output.shape[2] * output.shape[3] / side**2)

    handles = [m.register_forward_hook(hook) for m in desc.module.modules() if not list(m.children())]
    try:
        with torch.inference_mode():
            desc.module(torch.zeros(1, desc.in_channels, side, side))
    finally:
        for h in handles:
            h.remove()
    return 4.0 * 5 * widest[0]


_CACHE: dict[tuple, Upscaler] = {}


def upscale(image: np.ndarray | str | os.PathLike, model: str | os.PathLike = DEFAULT_MODEL, *,
            outscale: float | None = None, options: RunOptions | None = None, alpha: str = "model",
            **option_fields) -> np.ndarray:
    """Upscale an image (a path or an HxW[xC] array) with a pretrained or user model.

    Arrays may be uint8, uint16 or float in [0, 1], gray, RGB or RGBA; the result has the same
    dtype and channel layout (a path gives the file's own bit depth and layout). The model
    runs at its native scale; ``outscale`` resizes the result to that factor of the input.
    ``options`` (or its fields as keywords: device, precision, backend, tile, tile_pad) say how.
    """
    opts = run_options(options, **option_fields)
    key = (str(model), opts, alpha)
    if key not in _CACHE:
        _CACHE.clear()  # keep one loaded model, not one per call
        _CACHE[key] = Upscaler(model, opts, alpha=alpha)
    up = _CACHE[key]
    if isinstance(image, str | os.PathLike):
        from superres.io.image import read_samples

        img, info = read_samples(Path(image))  # the file's own samples, without a float copy on the way
        if info.gray:
            img = img[..., [0, 3]] if info.alpha else img[..., 0]
        return up.upscale_array(img, outscale)
    return up.upscale_array(np.asarray(image), outscale)


def ncnn_files(spec) -> tuple[Path, Path] | None:
    """The ncnn param/bin pair a named model ships as, if the ncnn backend can run it (the whole network)."""
    from superres.zoo.pretrained import bundled, source_files

    return source_files(spec) if spec is not None and not bundled(spec) and spec.ncnn_whole else None
