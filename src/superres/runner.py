"""The runner: the only code that runs a network on images.

It turns HxWxC arrays (a clip for video networks: TxHxWxC), uint8, uint16 or float in [0, 1],
into network input and back; pads to the network's size requirement and crops back; picks the
precision by the one policy (:func:`superres.runtime.pick_precision`) and falls back to fp32
when half precision gives non-finite values, saying so; chooses the memory layout and the
backend (PyTorch, or the ncnn runtime for the named models that ship as ncnn files). Tiling
(:mod:`superres.infer.image`), video windows and clips (:mod:`superres.infer.video`),
evaluation (:mod:`superres.metrics.evaluate`), training validation and the receptive-field
measurement (:mod:`superres.infer.context`) are loops around it.

One pass of a large image can take a minute on a CPU. Within :func:`progress_scope` a runner reports
how far each pass has gone (PyTorch: forward hooks on the layers that do the multiply-adds; ncnn: a few
of its convolutions' outputs, extracted in turn), and the scope's callback may raise to stop the pass (a
cancelled job).
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from superres.errors import SuperresError
from superres.ops.layout import chw_to_hwc, from_float, hwc_to_chw, to_float, to_image, to_tensor
from superres.runtime import (
    DTYPES,
    RunOptions,
    channels_last,
    denormals_flushed,
    fallback_precision,
    pick_backend,
    pick_device,
    pick_precision,
    tf32_disabled,
)


class NonFiniteOutputError(SuperresError, ValueError):
    """The network computes NaN or infinity in fp32 (broken weights): its output would be a black image."""


class _Scope:
    """What :func:`progress_scope` keeps: the passes finished in it and when it last reported."""

    def __init__(self, report: Callable[[float], None], every: float):
        self.report, self.every = report, every
        self.passes = 0  # finished in this scope
        self.last = -float("inf")

    def step(self, fraction: float) -> None:
        """The pass under way is ``fraction`` done: report it unless the last report was under ``every`` s ago."""
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.report(self.passes + min(fraction, 1.0))

    def finished(self) -> None:
        self.passes += 1
        self.step(0.0)


_SCOPE = threading.local()
_COUNTING = threading.local()


def counting() -> bool:
    """Whether this thread is in the pass that counts a network's multiply-adds (on zeros, for progress):
    not a pass over the image (:mod:`superres.infer.statistics` leaves it alone)."""
    return getattr(_COUNTING, "on", False)


def pass_cut_short() -> None:
    """Count the pass under way in this thread as finished: one stopped once it had done what it was for (a
    settling pass of :mod:`superres.infer.statistics`, which needs a tile's first layers only)."""
    scope = getattr(_SCOPE, "current", None)
    if scope is not None:
        scope.finished()


@contextlib.contextmanager
def progress_scope(report: Callable[[float], None], every: float = 0.1) -> Iterator[None]:
    """Report the network passes that runners make in this thread while the block runs.

    ``report(passes)`` gets the passes done since the block began, the one under way counted by the
    share of its multiply-adds done (2.25: two passes and a quarter of the third), at most every
    ``every`` seconds. It may raise to stop the pass: the exception reaches whoever called the runner
    (a cancelled job stops within ``every`` seconds plus one layer). Without a scope nothing is hooked
    and nothing is counted; a scope opened inside another hides the outer one until it closes.
    Compiled networks (``compile``) report at the end of each pass only.
    """
    outer = getattr(_SCOPE, "current", None)
    _SCOPE.current = _Scope(report, every)
    try:
        yield
    finally:
        _SCOPE.current = outer


class Runner:
    """Runs one model (a :class:`~superres.zoo.ModelDescriptor`) as the run options say.

    ``runner(image)``: an array in, the same dtype out (``scale`` x larger). ``runner.forward(x)``:
    float32 in [0, 1] in, float32 in [0, 1] out, at a given precision (what tiles and clips use).
    """

    def __init__(self, desc, options: RunOptions | None = None, *, ncnn_files: tuple[Path, Path] | None = None):
        self.desc, self.options = desc, options or RunOptions()
        self.device = pick_device(self.options.device)
        self._ncnn_files = ncnn_files
        self._nets: dict[tuple[str, str], object] = {}  # (precision, backend) -> prepared torch module or ncnn net
        self._fell_back = False
        self._work: dict[tuple, float] = {}  # (network, frame layout, dtype) -> multiply-adds per pixel
        self.precision_used: str | None = None  # the precision of the last run, fallback included
        self.precision_for(np.uint8)  # reject impossible explicit choices now, not at the first image

    # --- choices ------------------------------------------------------------------------------

    def precision_for(self, dtype: np.dtype | type | None = np.uint8) -> str:
        """The precision images of this sample type run in (fp32 for good after a fallback)."""
        if self.desc.module is None:
            return "fp64"
        if self._fell_back:
            return "fp32"
        return pick_precision(self.options.precision, self.device, self.desc.precisions, dtype)

    def backend_for(self, precision: str) -> str:
        if self.desc.module is None:
            return "numpy"
        return pick_backend(self.options.backend, self.device, precision, self._ncnn_files is not None)

    def _net(self, precision: str, backend: str | None = None):
        backend = backend or self.backend_for(precision)
        if backend == "ncnn" and self.backend_for(precision) != "ncnn":
            raise ValueError(f"the ncnn runtime cannot run {self.desc.arch} in {precision} here")
        key = (precision, backend)
        if key not in self._nets:
            self._nets[key] = NcnnRunner(*self._ncnn_files) if backend == "ncnn" else self._prepare(precision)
        return self._nets[key]

    def _prepare(self, precision: str) -> torch.nn.Module:
        module = self.desc.module
        layout = channels_last(self.device, precision) and self.desc.video is None  # 4-D input only
        key = (id(module), self.device, precision, layout)
        if self.options.compile and key in _COMPILED:
            return _COMPILED[key][1]
        if precision != "fp32" or layout:  # never change the caller's module in place
            module = copy.deepcopy(module)
        module = module.to(self.device, DTYPES[precision]).eval()
        if layout:  # 4-D weights only (StyleGAN2's modulated convolutions keep 5-D ones)
            for t in (*module.parameters(), *module.buffers()):
                if t.dim() == 4:
                    t.data = t.data.contiguous(memory_format=torch.channels_last)
        if self.options.compile:
            # Fixed-size work (video frames, equal tiles) compiles once per shape and process; CUDA graphs
            # are left out because tiles at an image's edge come in a few other sizes.
            mode = "max-autotune-no-cudagraphs" if self.device.type == "cuda" else None
            module = torch.compile(module, mode=mode, dynamic=False)
            _COMPILED[key] = (self.desc.module, module)  # the source module is kept alive with its id
        return module

    # --- running ------------------------------------------------------------------------------

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """HxWxC (video networks: TxHxWxC) uint8, uint16 or float -> the output in the same dtype."""
        return self.batch(image[None])[0]

    def batch(self, images: np.ndarray) -> np.ndarray:
        """A batch of same-size images (video networks: of clips), N x ... in, N x ... out, in their dtype.

        8-bit batches travel to the device as uint8 (pinned memory on CUDA), are converted there and
        come back as uint8: a quarter of the traffic of float32, and no float copies on the host.
        """
        if self.desc.resample is not None:  # on the samples themselves: MATLAB rounds integers after each pass
            outs = [self.desc.resample(image) for image in images]
            outs = [o if np.issubdtype(images.dtype, np.integer) else from_float(o, images.dtype) for o in outs]
            return np.stack(outs)
        precision = self.precision_for(images.dtype)
        if images.dtype != np.uint8 or images.shape[-1] != self.desc.in_channels or \
                self.backend_for(precision) != "torch":
            return np.stack([from_float(self.forward(x, precision), images.dtype) for x in to_float(images)])
        x = torch.from_numpy(np.ascontiguousarray(images))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        with torch.inference_mode():
            out = self._run(hwc_to_chw(x), precision)
            out = out.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
        return chw_to_hwc(out).cpu().numpy()

    def forward(self, x: np.ndarray, precision: str | None = None, backend: str | None = None) -> np.ndarray:
        """float32 HxWxC (or TxHxWxC) in [0, 1] -> float32 output in [0, 1].

        ``backend``: ``torch`` runs PyTorch where the options would pick ncnn (the tiler does so for
        images that ncnn, with its far larger working memory, could only run in tiny tiles).

        A 1-channel network given RGB sees the Y of YCbCr, and its chroma is upscaled by MATLAB
        bicubic (as the classic Y-channel networks are used); a 3-channel one given gray sees it as RGB.
        """
        if self.desc.resample is not None:
            return np.clip(self.desc.resample(x), 0, 1).astype(np.float32)
        precision = precision or self.precision_for(np.uint8)
        channels, wanted = x.shape[-1], self.desc.in_channels
        if channels == 3 and wanted == 1:
            return upscale_luma(lambda y: self.forward(y, precision, backend), x, self.desc.scale)[0]
        if channels == 1 and wanted == 3:
            return self.forward(np.repeat(x, 3, axis=-1), precision, backend)
        if channels != wanted:
            raise ValueError(f"{self.desc.arch} takes {wanted}-channel images, got {channels} channels")
        if (backend or self.backend_for(precision)) == "ncnn":
            self.precision_used = precision
            out = self._net(precision, "ncnn")(x)
            if not np.isfinite(out).all():
                raise NonFiniteOutputError(self._broken(precision))
            return out
        with torch.inference_mode():
            out = self._run(to_tensor(x)[None], precision)[0].clamp_(0, 1)
            return to_image(out)

    def _run(self, x: torch.Tensor, precision: str) -> torch.Tensor:
        """N x C x H x W (video networks: N x T x C x H x W) in [0, 1], integer or float, on any device ->
        the network's float32 output on the device, cropped to scale x the size; falls back to fp32 (and
        stays there) if half precision gives non-finite values."""
        out = self._torch_forward(self._net(precision, "torch"), x, precision)
        if (fallback := fallback_precision(precision, out)) is not None:
            if self._nonfinite_weights():
                raise NonFiniteOutputError(self._broken(precision))
            warnings.warn(f"{precision} gave non-finite values on this {self.device.type} device (a known fp16 "
                          f"problem on some GPUs); using {fallback} from now on", stacklevel=3)
            self._fell_back = True
            return self._run(x, fallback)  # the fallback's memory is PyTorch's, as planned
        if precision == "fp32" and not torch.isfinite(out).all():
            raise NonFiniteOutputError(self._broken(precision))
        self.precision_used = precision
        return out

    def _nonfinite_weights(self) -> int:
        return sum(not torch.isfinite(p).all() for p in self.desc.module.parameters())

    def _broken(self, precision: str) -> str:
        name = self.desc.name or self.desc.arch
        nan = self._nonfinite_weights()
        cause = (f"{nan} of its weight tensors hold NaN or infinity" if nan
                 else "its weights overflow on this input")
        return f"{name} computes non-finite values (NaN/inf) in {precision}: {cause}; the output would be black"

    def padded(self, height: int, width: int) -> tuple[int, int]:
        """The size an input of this size reaches the network at: padded at the bottom and right to the
        network's size multiple and minimum size."""
        m, least = self.desc.size_multiple, self.desc.min_size
        pad_h, pad_w = max(-height % m, least - height), max(-width % m, least - width)
        return height + pad_h + -(height + pad_h) % m, width + pad_w + -(width + pad_w) % m

    def _torch_forward(self, net: torch.nn.Module, x: torch.Tensor, precision: str) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = (a - b for a, b in zip(self.padded(h, w), (h, w), strict=True))
        x = x.to(self.device)
        if x.dtype == torch.uint8:  # converted where it now is: on the device
            x = x.to(DTYPES[precision]) / 255
        else:
            x = x.to(DTYPES[precision])
        if pad_h or pad_w:
            flat = x.flatten(0, -4)  # reflect/replicate pad takes N x C x H x W
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            flat = F.pad(flat, (0, pad_w, 0, pad_h), mode=mode)
            x = flat.view(*x.shape[:-2], h + pad_h, w + pad_w)
        if x.dim() == 4 and channels_last(self.device, precision):
            x = x.contiguous(memory_format=torch.channels_last)
        with denormals_flushed(self.device), tf32_disabled(self.device, precision):
            out = self._pass(net, x).float()
        s = self.desc.scale
        return out[..., : h * s, : w * s]

    def _pass(self, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``net(x)``, reporting its progress to this thread's :func:`progress_scope` if there is one."""
        scope = getattr(_SCOPE, "current", None)
        if scope is None:
            return net(x)
        # hooks inside a compiled graph would break it up; a network without convolutions or linear layers (as
        # PyTorch sees them) has nothing to count
        total = 0 if self.options.compile else self._multiply_adds(net, x)
        if not total:
            out = net(x)
            scope.finished()
            return out
        done = 0

        def add(multiply_adds: int) -> None:
            nonlocal done
            done += multiply_adds
            scope.step(done / total)

        with _counting(net, add):
            out = net(x)
        scope.finished()
        return out

    def _multiply_adds(self, net: torch.nn.Module, x: torch.Tensor) -> float:
        """The multiply-adds of ``net(x)`` as :func:`_counting` counts them: counted once per network and frame
        layout in a pass on zeros of 16x16 pixels (or the network's smallest size), then scaled by the area, as
        convolutions and windowed attention grow (the input is padded to the network's multiple). PyTorch's
        meta device would count without arithmetic, but its first use imports SymPy (1.5 s). 0 (no progress
        within a pass, only at its end) for a network that fails on that input."""
        key = (id(net), tuple(x.shape[1:-2]), x.dtype)
        if key not in self._work:
            side = max(self.desc.min_size, 16)
            side += -side % self.desc.size_multiple
            _COUNTING.on = True
            try:
                self._work[key] = _count(net, x.new_zeros((1, *x.shape[1:-2], side, side))) / side**2
            except Exception:  # whatever arbitrary network code raises: progress is optional, the run is not
                self._work[key] = 0.0
            finally:
                _COUNTING.on = False
        return self._work[key] * x.shape[0] * x.shape[-2] * x.shape[-1]


def _count(net: torch.nn.Module, x: torch.Tensor) -> int:
    """The multiply-adds :func:`_counting` counts in ``net(x)``."""
    count = 0

    def add(multiply_adds: int) -> None:
        nonlocal count
        count += multiply_adds

    with _counting(net, add):
        net(x)
    return count


@contextlib.contextmanager
def _counting(net: torch.nn.Module, add: Callable[[int], None]) -> Iterator[None]:
    """While the block runs, ``add(multiply-adds)`` after each convolution or linear layer of ``net`` runs: the
    layers that hold nearly all of an SR network's work (one hook each, removed at the end)."""

    def hook(per_output: int):
        def after(_module, _inputs, output) -> None:
            if isinstance(output, torch.Tensor):
                add(output.numel() * per_output)

        return after

    kinds = (torch.nn.modules.conv._ConvNd, torch.nn.Linear)
    handles = [m.register_forward_hook(hook(m.weight[0].numel())) for m in net.modules() if isinstance(m, kinds)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


_COMPILED: dict[tuple, tuple] = {}  # compiled modules, kept for the process (compiling costs seconds to minutes)


def upscale_luma(forward, rgb: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """A Y-channel network on an RGB float image: (RGB output, its Y output), both float in [0, 1].

    Y of YCbCr (BT.601, as MATLAB's rgb2ycbcr) goes through ``forward``; Cb and Cr are upscaled by
    MATLAB bicubic, the protocol of the classic Y-channel papers (SRCNN and its successors).
    """
    from superres.ops import imresize, rgb2ycbcr, ycbcr2rgb

    ycc = rgb2ycbcr(rgb)
    y = np.clip(forward(ycc[..., :1].astype(np.float32)), 0, 1)
    cbcr = imresize(ycc[..., 1:], scale)
    out = np.clip(ycbcr2rgb(np.concatenate([y.astype(cbcr.dtype), cbcr], axis=-1)), 0, 1)
    return out.astype(rgb.dtype if rgb.dtype == np.float64 else np.float32), y


_NCNN_WEIGHTED = {"Convolution", "ConvolutionDepthWise", "Deconvolution", "DeconvolutionDepthWise", "InnerProduct"}


class NcnnRunner:
    """An ncnn param/bin network (CPU, fp32) on HxWx3 float32 arrays in [0, 1], as :meth:`Runner.forward`."""

    def __init__(self, param: Path, bin_path: Path, threads: int | None = None):
        import ncnn

        self.net = ncnn.Net()
        opt = self.net.opt
        opt.use_vulkan_compute = False
        opt.num_threads = threads or torch.get_num_threads()
        # fp32 throughout, so results match the PyTorch network (fp16/bf16 storage would round)
        opt.use_fp16_storage = opt.use_fp16_arithmetic = opt.use_fp16_packed = opt.use_bf16_storage = False
        if self.net.load_param(str(param)) or self.net.load_model(str(bin_path)):
            raise ValueError(f"{param}: the ncnn runtime cannot load this model")
        names = [blob.name for blob in self.net.blobs()]
        weighted = [names[layer.tops[0]] for layer in self.net.layers() if layer.type in _NCNN_WEIGHTED]
        # A pass's progress points: (blob, share of the weighted layers done), a few: each extraction costs about
        # 1% of a pass (realesr-animevideov3, 320x240: one per convolution took 6% more CPU time).
        every = max(1, math.ceil(len(weighted) / 4))
        self.steps = [(weighted[i], (i + 1) / len(weighted)) for i in range(every - 1, len(weighted) - 1, every)]

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        import ncnn

        data = to_tensor(tile.astype(np.float32, copy=False)).numpy()  # must outlive the Mat
        extractor = self.net.create_extractor()
        extractor.input("data", ncnn.Mat(data))
        scope = getattr(_SCOPE, "current", None)
        if scope is not None:
            # Extracting a blob runs the layers up to it, and the next extraction goes on from there; type 1
            # leaves it in ncnn's packed layout (no conversion). The output is the same.
            for blob, share in self.steps:
                extractor.extract(blob, 1)
                scope.step(share)
        status, out = extractor.extract("output")
        if status:
            raise RuntimeError(f"ncnn failed on a {tile.shape[1]}x{tile.shape[0]} tile (status {status})")
        if scope is not None:
            scope.finished()
        return np.clip(to_image(torch.from_numpy(np.array(out))), 0, 1)
