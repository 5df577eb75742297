"""The machine a network runs on: device, precision, backend, memory settings. Neutral ground:
architectures, training and inference all import from here, and it imports nothing of superres.

The precision policy (:func:`pick_precision`) is decided here and only here:

- CPU: bf16 (weights and activations, channels-last) where the CPU computes bf16 natively
  (``avx512_bf16`` or AMX: oneDNN's bf16 convolutions are several times faster than fp32 there),
  fp32 elsewhere (emulated bf16 is slower than fp32).
- CUDA: fp16 on GPUs with tensor cores (compute capability 7+), channels-last; some older cards
  produce NaNs (black images) in fp16, so the runner falls back to fp32 when an output is not
  finite (:func:`fallback_precision`).
- ``auto`` runs 8-bit images in half precision, which keeps their 256 levels (>= 50 dB), and
  16-bit and float images in fp32: bf16's 8 and fp16's 11 mantissa bits would throw away the
  levels they were saved with. A network that does not compute correctly in half precision
  (its architecture's facts say so) runs in fp32.

For fp32 on the CPU, the named models that ship as ncnn files run on the ncnn runtime when it is
installed (:func:`pick_backend`): its Winograd 3x3 convolutions are 1.2-1.8x faster than
PyTorch's on these networks (measured; see benchmarks/), with the same weights and outputs
within 1e-5.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from superres.memory import available_memory  # noqa: F401  (re-exported: a memory fact of the machine)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
BACKENDS = ("auto", "torch", "ncnn")


@functools.cache
def cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("--device mps: MPS is not available on this machine")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise ValueError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")
    return torch.device(device)


def pick_precision(requested: str, device: torch.device, supported: tuple[str, ...] = ("fp32", "bf16", "fp16"),
                   image_dtype: np.dtype | type | None = None) -> str:
    """The precision to compute in: ``requested`` if explicit (and possible), else the policy above.

    ``supported``: the precisions the network computes correctly in (its architecture's facts);
    ``image_dtype``: the samples of the image it will run on (None: 8-bit, as video frames are).
    """
    if requested not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if device.type == "cpu" and requested == "fp16":
        raise ValueError("--precision fp16 is not supported on the CPU (use bf16 or fp32)")
    if requested != "auto":
        if requested not in supported:
            raise ValueError(f"--precision {requested}: this network computes in {', '.join(supported)} only")
        return requested
    if image_dtype is not None and np.dtype(image_dtype) != np.uint8:
        return "fp32"
    if device.type == "cpu":
        half = "bf16" if cpu_has_native_bf16() else None
    elif device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        half = "fp16" if major >= 7 else None
    else:
        half = "fp16"
    return half if half in supported else "fp32"


def fallback_precision(precision: str, output: torch.Tensor) -> str | None:
    """fp32 if a half-precision ``output`` is not finite (the fp16 "black image" problem), else None."""
    if precision != "fp32" and not torch.isfinite(output).all():
        return "fp32"
    return None


def channels_last(device: torch.device, precision: str) -> bool:
    """The memory layout convolutions run fastest in: channels-last on the CPU (oneDNN) and in half
    precision on CUDA (the layout tensor cores read); fp32 on CUDA keeps NCHW and cuDNN's results."""
    return device.type == "cpu" or (device.type == "cuda" and precision != "fp32")


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How to run a network, whoever calls it: upscale, Upscaler, upscale_video, the video runners,
    evaluation. ``tile``: input pixels per tile side, ``"auto"`` (from memory) or 0 (whole image);
    ``tile_pad``: context margin per tile edge (None: the model's measured one); ``batch``: video
    frames per network call; ``compile``: ``torch.compile`` for repeated same-size inputs."""

    device: str = "auto"
    precision: str = "auto"
    backend: str = "auto"
    tile: int | str = "auto"
    tile_pad: int | None = None
    batch: int | str = "auto"  # frames (or windows, clips) per network call: auto = as many as memory allows
    compile: bool = False  # torch.compile the network once per input size (slow to start, faster after)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if not (self.tile == "auto" or (isinstance(self.tile, int) and self.tile >= 0)):
            raise ValueError(f"tile must be 'auto', 0 or a positive number of pixels, got {self.tile!r}")
        if not (self.batch == "auto" or (isinstance(self.batch, int) and self.batch >= 1)):
            raise ValueError(f"batch must be 'auto' or a positive number of frames, got {self.batch!r}")
        if self.tile_pad is not None and self.tile_pad < 0:
            raise ValueError(f"tile_pad must be >= 0, got {self.tile_pad}")


def ncnn_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ncnn") is not None


def pick_backend(backend: str, device: torch.device, precision: str, has_ncnn_files: bool) -> str:
    """``auto``: ncnn for fp32 on the CPU when the model has ncnn files and ncnn is installed."""
    if backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "ncnn":
        if not has_ncnn_files:
            raise ValueError("--backend ncnn runs the named models that ship as ncnn files only")
        if device.type != "cpu" or precision != "fp32":
            raise ValueError("--backend ncnn runs on the CPU in fp32 only")
        if not ncnn_available():
            raise ValueError("--backend ncnn needs the ncnn package (pip install ncnn)")
        return "ncnn"
    if backend == "auto" and has_ncnn_files and device.type == "cpu" and precision == "fp32" and ncnn_available():
        return "ncnn"
    return "torch"


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back to the system.

    By default glibc gives large freed blocks back (munmap, heap trimming), so a training loop that
    allocates the same activations every step page-faults them in again each time: half the CPU
    time went to the kernel in ESPCN training here, and this setting made those steps 1.3x
    faster (``benchmarks/malloc_speed.py``). The process's memory then stays at its peak, which a
    training run reaches anyway. Returns False (and changes nothing) where the C library is not
    glibc or the user set ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_THRESHOLD_`` themselves.
    """
    if any(k in os.environ for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # Windows, macOS: no mallopt
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    # Blocks up to 32 MiB (the ceiling of glibc's own adaptive threshold, and the most older glibc
    # versions accept) come from the heap, which is no longer trimmed below 1 GiB of free space.
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


@contextmanager
def denormals_flushed(device: torch.device) -> Iterator[None]:
    """Treat denormal floats as zero on the CPU while a network runs: some trained networks produce them,
    and x86 CPUs are 10-100x slower on them (measured here: realesrgan-x4plus-anime ran 3x slower without
    this). The processor flag is the caller's thread's state, so it is cleared again afterwards (left set,
    it broke the caller's own float arithmetic, e.g. hypothesis's subnormal floats)."""
    if device.type != "cpu":
        yield
        return
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@contextmanager
def tf32_disabled(device: torch.device, precision: str) -> Iterator[None]:
    """No TF32 while a network runs in ``fp32`` on a GPU: PyTorch lets cuDNN run fp32 convolutions in TF32
    (a 10-bit mantissa, about 1e-3 relative error) on Ampere and newer GPUs by default, so "fp32" would not
    compute what it does on a CPU, and the 8-bit outputs, PSNR and NIQE would move with the GPU. The flags
    are the process's; they are restored afterwards (training may allow TF32 for itself)."""
    if device.type != "cuda" or precision != "fp32":
        yield
        return
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
