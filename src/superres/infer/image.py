"""Upscale one image: any bit depth, gray or color, with or without alpha, tiled or whole.

The network runs at its native scale; another ``outscale`` is reached by resizing its result
(area filter when shrinking, Lanczos when enlarging, as Real-ESRGAN's script does). RGBA images
have the color under transparent pixels filled from the nearest opaque colors first (push-pull),
so that dark "transparent black" does not bleed into visible edges; the alpha channel is
upscaled by the network (as a gray image) or by bicubic interpolation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from superres.infer.backend import NcnnRunner, Runner, flush_denormals, pick_backend, pick_device, pick_precision
from superres.infer.tiling import TilePlan, run_tiled

DEFAULT_BUDGET_CPU = 1152 << 20  # working memory of one tile on the CPU (activations and output)
BICUBIC = "bicubic"


@dataclass
class Upscaler:
    """A loaded model ready to upscale arrays; build it once and reuse it for a batch."""

    model: str | os.PathLike = "realesrgan-x4plus"
    tile: int | str = "auto"
    tile_pad: int | None = None
    precision: str = "auto"
    device: str = "auto"
    alpha: str = "model"
    budget: int | None = None
    backend: str = "auto"
    scale: int = field(init=False)
    margin: int = field(init=False, default=0)

    def __post_init__(self):
        if self.alpha not in ("model", "bicubic"):
            raise ValueError(f"alpha must be 'model' or 'bicubic', got {self.alpha!r}")
        if not (self.tile == "auto" or (isinstance(self.tile, int) and self.tile >= 0)):
            raise ValueError(f"tile must be 'auto', 0 or a positive number of pixels, got {self.tile!r}")
        if self.tile_pad is not None and self.tile_pad < 0:
            raise ValueError(f"tile_pad must be >= 0, got {self.tile_pad}")
        self.torch_device = pick_device(self.device)
        if str(self.model) == BICUBIC:
            self.scale, self.runner, self.in_channels = 4, None, 3
            self.precision_used, self.backend_used = "fp64", "numpy"
            return
        from superres.zoo import MODELS, load_model
        from superres.zoo.pretrained import bundled, source_files

        desc = load_model(self.model)
        if desc.purpose != "sr":
            raise ValueError(f"{self.model}: a {desc.arch} is a {desc.purpose} network, not an image upscaler")
        self.desc, self.scale, self.in_channels = desc, desc.scale, desc.in_channels
        self.precision_used = pick_precision(self.precision, self.torch_device, desc.supports_half)
        if self.torch_device.type == "cpu":
            flush_denormals()
        spec = MODELS.get(str(self.model))
        self._ncnn_files = source_files(spec) if spec and not bundled(spec) else None
        self.runner, self.backend_used = self._make_runner(self.precision_used)
        self._fp32_runner = self.runner if self.precision_used == "fp32" else None
        known_margin = spec.margin if spec else None
        self.margin = self.tile_pad if self.tile_pad is not None else known_margin or self._measured_margin()
        known_bpp = spec.bytes_per_pixel if spec else None
        self.bytes_per_pixel = known_bpp or _estimate_bytes_per_pixel(desc)

    def _make_runner(self, precision: str):
        backend = pick_backend(self.backend, self.torch_device, precision, self._ncnn_files is not None)
        if backend == "ncnn":
            return NcnnRunner(*self._ncnn_files), backend
        multiple = {4: 1, 2: 2, 1: 4}[self.desc.scale] if self.desc.arch == "RRDBNet" else 1
        return Runner(self.desc.module, self.torch_device, precision, multiple), backend

    def _runner_for(self, dtype: np.dtype):
        """``auto`` runs 8-bit images in bf16/fp16, which keeps their 256 levels (>= 50 dB), and
        16-bit and float images in fp32: half precision's 8 or 11 mantissa bits would throw away
        the levels they were saved with."""
        if self.precision != "auto" or dtype == np.uint8:
            return self.runner
        if self._fp32_runner is None:
            self._fp32_runner = self._make_runner("fp32")[0]
        return self._fp32_runner

    def _measured_margin(self) -> int:
        from superres.infer.context import cached_margin, measure_margin
        from superres.zoo.pretrained import cache_dir

        def measure() -> int:
            return measure_margin(self._forward_fp32, self.scale, self.in_channels)

        return cached_margin(self.desc.module.state_dict(), measure, cache_dir() / "margins.json")

    def _forward_fp32(self, x):
        import torch

        with torch.inference_mode():
            return self.desc.module(x)

    # --- planning ---------------------------------------------------------------------------

    def plan(self, height: int, width: int, fp32: bool = False) -> TilePlan:
        """Tiles for an image of this size: ``tile`` as given, or the largest the memory budget allows
        (for the fp32 runner if ``fp32``: see :meth:`_runner_for`)."""
        ramp = max(4, self.margin // 8)
        if self.runner is None:
            return TilePlan(0, 0, 0)
        if self.tile == "auto":
            tile = self._auto_tile(self.budget or _default_budget(self.torch_device), fp32)
            if height * width <= tile * tile:
                return TilePlan(0, self.margin, ramp)
        else:
            tile = int(self.tile)
            if tile == 0 or (tile >= height and tile >= width):
                return TilePlan(0, self.margin, ramp)
        need = 2 * self.margin + ramp + 8
        if tile < need:
            raise ValueError(f"tile {tile} is too small for {self.model}: it needs at least {need} pixels "
                             f"(2 x its {self.margin}-pixel receptive-field margin + a {ramp}-pixel blend)")
        return TilePlan(tile, self.margin, ramp)

    def _auto_tile(self, budget: int, fp32: bool = False) -> int:
        """The largest tile side t whose working memory fits the budget: the network's activations
        (t^2 x bytes_per_pixel, measured) and its float output (t^2 x scale^2 x 3 x 4 bytes).

        Not counted: the float band of output rows being blended (t x scale rows of the output,
        in float32), which grows with the output like the output array itself does.
        """
        activations = self.bytes_per_pixel * (1 if fp32 or self.precision_used == "fp32" else 0.5)
        return int(math.sqrt(budget / (activations + self.scale**2 * 12)))

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
        if self.runner is None:
            return self._bicubic(img, outscale)
        runner = self._runner_for(np.dtype(dtype))
        peak = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(np.dtype(dtype), 1.0)
        x = img.astype(np.float32) / np.float32(peak) if peak != 1.0 else np.clip(img, 0, 1).astype(np.float32)
        channels = x.shape[2]
        color = x[..., :3] if channels >= 3 else np.repeat(x[..., :1], 3, axis=2)
        alpha = x[..., -1] if channels in (2, 4) else None
        if alpha is not None and alpha.min() < 1.0:
            color = fill_transparent(color, alpha)

        def finish(rows: np.ndarray) -> np.ndarray:
            """Float rows (which may be overwritten) -> the output dtype, without float temporaries."""
            np.clip(rows, 0.0, 1.0, out=rows)
            if peak == 1.0:
                return rows
            rows *= np.float32(peak)
            return np.rint(rows, out=rows).astype(dtype)

        out_dtype = dtype if peak != 1.0 else np.float32
        h, w = x.shape[:2]
        result = np.empty((h * self.scale, w * self.scale, channels), out_dtype)
        if channels == 3:
            self._run(runner, color, result, finish, progress)
        else:
            color_out = np.empty((h * self.scale, w * self.scale, 3), out_dtype)
            self._run(runner, color, color_out, finish, progress)
            if channels <= 2:
                result[..., 0] = cv2.cvtColor(color_out, cv2.COLOR_RGB2GRAY)
            else:
                result[..., :3] = color_out
            del color_out
        if alpha is not None:
            if self.alpha == "model":
                alpha_out = np.empty((h * self.scale, w * self.scale, 3), out_dtype)
                self._run(runner, np.repeat(alpha[..., None], 3, axis=2), alpha_out, finish, progress)
                result[..., -1] = cv2.cvtColor(alpha_out, cv2.COLOR_RGB2GRAY)
            else:
                up = cv2.resize(alpha, (w * self.scale, h * self.scale), interpolation=cv2.INTER_CUBIC)
                result[..., -1] = finish(up)
        result = resize_to(result, outscale, self.scale, h, w)
        return result[..., 0] if squeeze else result

    def _run(self, runner, color: np.ndarray, out: np.ndarray, finish, progress) -> None:
        model = self._luma_model(runner) if self.in_channels == 1 else runner
        plan = self.plan(*color.shape[:2], fp32=runner is not self.runner)
        run_tiled(color, model, self.scale, plan, out, finish, progress)

    def _luma_model(self, runner):
        """One-channel networks (SRCNN, FSRCNN, ESPCN) see Y; Cb and Cr are upscaled by bicubic."""
        from superres.ops import rgb2ycbcr, ycbcr2rgb

        def run(tile: np.ndarray) -> np.ndarray:
            ycc = rgb2ycbcr(tile)
            y = runner(ycc[..., :1])
            h, w = y.shape[:2]
            cbcr = cv2.resize(ycc[..., 1:], (w, h), interpolation=cv2.INTER_CUBIC)
            return np.clip(ycbcr2rgb(np.concatenate([y, cbcr], axis=2)), 0, 1).astype(np.float32)

        return run

    def _bicubic(self, img: np.ndarray, outscale: float | None) -> np.ndarray:
        from superres.ops import imresize

        scale = outscale or self.scale
        squeeze = img.shape[2] == 1
        if img.dtype in (np.uint8, np.uint16):
            out = imresize(img, scale)  # rounds like MATLAB on integer images
        else:
            out = np.clip(imresize(img.astype(np.float32), scale), 0, 1).astype(np.float32)
        return out[..., 0] if squeeze and out.ndim == 3 else out


def resize_to(image: np.ndarray, outscale: float | None, native: int, h: int, w: int) -> np.ndarray:
    """The network's output (``native`` x) resized to ``outscale`` x the input size."""
    if outscale is None or outscale == native:
        return image
    if not outscale > 0:
        raise ValueError(f"outscale must be positive, got {outscale}")
    size = (max(1, round(w * outscale)), max(1, round(h * outscale)))
    interpolation = cv2.INTER_AREA if outscale < native else cv2.INTER_LANCZOS4
    out = cv2.resize(image, size, interpolation=interpolation)
    return out.reshape(size[1], size[0], image.shape[2]) if out.ndim == 2 else out


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


def _default_budget(device) -> int:
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        available = 4 * DEFAULT_BUDGET_CPU
    return int(min(DEFAULT_BUDGET_CPU, available // 4))


def _estimate_bytes_per_pixel(desc) -> float:
    """Activation bytes per input pixel: the widest layer output (relative to the input's area),
    times the number of such tensors alive at once in a typical SR network (5), in fp32."""
    import torch

    widest = [0.0]
    side = 32

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


def upscale(image: np.ndarray | str | os.PathLike, model: str | os.PathLike = "realesrgan-x4plus",
            outscale: float | None = None, tile: int | str = "auto", tile_pad: int | None = None,
            precision: str = "auto", device: str = "auto", alpha: str = "model", backend: str = "auto") -> np.ndarray:
    """Upscale an image (a path or an HxW[xC] array) with a pretrained or user model.

    Arrays may be uint8, uint16 or float in [0, 1], gray, RGB or RGBA; the result has the same
    dtype and channel layout (a path gives the file's own bit depth and layout). The model
    runs at its native scale; ``outscale`` resizes the result to that factor of the input.
    """
    key = (str(model), tile, tile_pad, precision, device, alpha, backend)
    if key not in _CACHE:
        _CACHE.clear()  # keep one loaded model, not one per call
        _CACHE[key] = Upscaler(model, tile, tile_pad, precision, device, alpha, backend=backend)
    up = _CACHE[key]
    if isinstance(image, str | os.PathLike):
        from superres.io import read_image, to_integer

        img, info = read_image(Path(image))
        img = to_integer(img, info.bit_depth)
        if info.gray:
            img = img[..., [0, 3]] if info.alpha else img[..., 0]
        return up.upscale_array(img, outscale)
    return up.upscale_array(np.asarray(image), outscale)
