"""Running a network on one tile: device, precision and memory format, chosen per machine.

CPU: bf16 weights and activations in channels-last layout where the CPU computes bf16 natively
(``avx512_bf16`` or AMX, where oneDNN's bf16 convolutions are several times faster than fp32),
fp32 elsewhere (emulated bf16 is slower than fp32); 16-bit and float images stay in fp32 (see
``Upscaler._runner_for``). For fp32 on the CPU, the named models that
ship as ncnn files run on the ncnn runtime when it is installed: its Winograd 3x3 convolutions
are 1.2-1.8x faster than PyTorch's on these networks (measured; see benchmarks/), with the same
weights and outputs within 1e-5. CUDA: fp16 on GPUs with tensor cores, channels-last (the layout
their convolutions read: RRDBNet in fp16 ran about 1.2x faster than NCHW on an H100, see
benchmarks/gpu_speed.py); some older cards produce NaNs (black images) in fp16, so a tile whose
output is not finite is run again in fp32 and fp32 is kept from then on.
"""

from __future__ import annotations

import ctypes
import functools
import os
import warnings
from pathlib import Path

import numpy as np
import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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


def pick_precision(precision: str, device: torch.device, supports_half: bool = True) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if device.type == "cpu" and precision == "fp16":
        raise ValueError("--precision fp16 is not supported on the CPU (use bf16 or fp32)")
    if precision != "auto":
        return precision
    if not supports_half:
        return "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return "fp16" if major >= 7 else "fp32"
    return "fp16"


class Runner:
    """Calls a network on HxWxC float32 arrays in [0, 1] and returns float32 arrays."""

    def __init__(self, module: torch.nn.Module, device: torch.device, precision: str, size_multiple: int = 1):
        self.device, self.precision, self.size_multiple = device, precision, size_multiple
        self._fp32_module = module
        self.module = self._prepare(module, precision)

    @property
    def channels_last(self) -> bool:
        """CPU: always; CUDA: in half precision (fp32 keeps NCHW and its cuDNN results)."""
        return self.device.type == "cpu" or (self.device.type == "cuda" and self.precision != "fp32")

    def _prepare(self, module: torch.nn.Module, precision: str) -> torch.nn.Module:
        import copy

        module = copy.deepcopy(module) if precision != "fp32" else module
        module = module.to(self.device, DTYPES[precision]).eval()
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        return module

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        h, w = tile.shape[:2]
        m = self.size_multiple
        x = torch.from_numpy(np.ascontiguousarray(tile.transpose(2, 0, 1)))[None]
        if h % m or w % m:
            x = torch.nn.functional.pad(x, (0, -w % m, 0, -h % m), mode="reflect")
        out = self._forward(x)
        scale_h, scale_w = out.shape[-2] // x.shape[-2], out.shape[-1] // x.shape[-1]
        out = out[..., :h * scale_h, :w * scale_w]
        return out[0].permute(1, 2, 0).numpy()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = DTYPES[self.precision]
        with torch.inference_mode():
            xd = x.to(self.device, dtype)
            if self.channels_last:
                xd = xd.contiguous(memory_format=torch.channels_last)
            out = self.module(xd).float()
            if self.precision != "fp32" and not torch.isfinite(out).all():
                warnings.warn(f"{self.precision} gave non-finite values on this {self.device.type} device "
                              "(a known fp16 problem on some GPUs); using fp32 from now on", stacklevel=3)
                self.precision = "fp32"
                self.module = self._prepare(self._fp32_module, "fp32")
                return self._forward(x)
            return out.clamp_(0, 1).to("cpu")


BACKENDS = ("auto", "torch", "ncnn")


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


class NcnnRunner:
    """Calls an ncnn param/bin network (CPU, fp32) on HxWx3 float32 arrays in [0, 1], like :class:`Runner`."""

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

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        import ncnn

        data = np.ascontiguousarray(tile.transpose(2, 0, 1), dtype=np.float32)  # must outlive the Mat
        extractor = self.net.create_extractor()
        extractor.input("data", ncnn.Mat(data))
        status, out = extractor.extract("output")
        if status:
            raise RuntimeError(f"ncnn failed on a {tile.shape[1]}x{tile.shape[0]} tile (status {status})")
        return np.clip(np.array(out).transpose(1, 2, 0), 0, 1)


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


def flush_denormals() -> None:
    """Treat denormal floats as zero: some trained networks produce them, and x86 CPUs are 10-100x
    slower on them (measured here: realesrgan-x4plus-anime ran 3x slower without this)."""
    torch.set_flush_denormal(True)
