"""ONNX export of any loaded model, checked in ONNX Runtime against PyTorch on a real photo crop.

The graph takes ``input`` (N x C x H x W, video networks N x T x C x H x W) with batch, height and
width dynamic, in [0, 1], and gives ``output`` at scale x the size, not clamped. Height and width
must meet the architecture's size requirements (a multiple of ``size_multiple``, at least
``min_size``); the runner's padding is not part of the graph. Export traces the network with
PyTorch's TorchScript exporter (no extra dependency beyond ``onnx``); the check needs
``onnxruntime`` (both in ``pip install "superres[export]"``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from superres.ops.layout import to_tensor
from superres.zoo.checkpoint import CheckpointError
from superres.zoo.descriptor import ModelDescriptor

DEFAULT_OPSET = 17
FP32_TOLERANCE = 1e-4
# fp16 weights and activations: 11-bit mantissas (relative rounding 2^-11 = 4.9e-4 per operation,
# compounded over dozens of layers; 5e-4 measured on RRDBNet, SRVGGNetCompact, EDSR and UpCunet):
# the check catches a broken graph, not fp16's own error.
FP16_TOLERANCE = 1e-2


class ExportError(CheckpointError):
    """A model that ONNX (or ONNX Runtime) cannot express, or whose export does not match PyTorch."""


@dataclass
class ExportReport:
    path: Path
    arch: str
    opset: int
    fp16: bool
    sizes: list[tuple[int, int]]  # the input sizes checked (height, width)
    max_abs_diff: float  # ONNX Runtime vs PyTorch (fp32), over the checked sizes

    def __str__(self) -> str:
        sizes = ", ".join(f"{w}x{h}" for h, w in self.sizes)
        return (f"{self.path}: {self.arch}, opset {self.opset}, {'fp16' if self.fp16 else 'fp32'}, dynamic batch/"
                f"height/width; ONNX Runtime vs PyTorch on real crops ({sizes}): max abs diff {self.max_abs_diff:.3g}")


def _crop(desc: ModelDescriptor, height: int, width: int) -> torch.Tensor:
    """A crop of a bundled photo at an allowed size near ``height`` x ``width``: 1 x [T x] C x H x W."""
    from superres.io import read_image

    photo = read_image(Path(__file__).resolve().parents[1] / "samples" / "chelsea.png")[0][..., :3]
    m = desc.size_multiple
    h, w = (max(desc.min_size, n + -n % m) for n in (height, width))
    h, w = h + -h % m, w + -w % m
    frames = desc.video.frames if desc.video is not None else 1
    crops = [photo[40 + t:40 + t + h, 150 + t:150 + t + w] for t in range(frames)]  # a little motion
    if desc.in_channels == 1:
        from superres.ops.color import rgb2ycbcr

        crops = [rgb2ycbcr(c, y_only=True) for c in crops]
    x = to_tensor(np.stack(crops).astype(np.float32))
    return x[None] if desc.video is not None else x


def _operator(message: str) -> str | None:
    found = re.search(r"\b(\w+::\w+)\b", message) or re.search(r"implementation for (\w+\(\d+\))", message)
    return found.group(1) if found else None


def export_onnx(model: ModelDescriptor | str | os.PathLike, path: str | os.PathLike, *, fp16: bool = False,
                opset: int = DEFAULT_OPSET, check_sizes: tuple[tuple[int, int], ...] = ((48, 64), (37, 29))
                ) -> ExportReport:
    """Write ``model`` (a descriptor, a named model or a checkpoint) as ONNX and check it.

    The file is run in ONNX Runtime on crops of a bundled photo at each of ``check_sizes`` (rounded
    up to the architecture's size requirements) and compared with PyTorch in fp32; a difference over
    1e-4 (fp32) raises :class:`ExportError`, as does an operator ONNX or ONNX Runtime cannot run
    (named in the message, e.g. EDVR's ``torchvision::deform_conv2d``).
    """
    from superres.zoo import load_model

    desc = model if isinstance(model, ModelDescriptor) else load_model(model)
    if desc.module is None:
        raise ExportError(f"{desc.arch} has no network to export")
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError('ONNX export needs onnx and onnxruntime: pip install "superres[export]"') from None
    path = Path(path)
    module = desc.module.float().eval()
    name = f"{desc.name or desc.source}: {desc.arch}" if desc.name or desc.source else desc.arch
    broken = sum(not torch.isfinite(t).all() for t in (*module.parameters(), *module.buffers()))
    if broken:  # as superres upscale refuses it: every output would be NaN
        raise ExportError(f"{name} computes non-finite values (NaN/inf): {broken} of its weight tensors hold NaN or "
                          "infinity; not exported")
    dtype = torch.float16 if fp16 else torch.float32
    net = copy.deepcopy(module).half() if fp16 else module
    crops = [_crop(desc, h, w) for h, w in check_sizes]
    with torch.no_grad():
        refs = [module(x).numpy() for x in crops]
    if not all(np.isfinite(ref).all() for ref in refs):
        raise ExportError(f"{name} computes non-finite values (NaN/inf) in fp32 on a photo crop: its weights "
                          "overflow; not exported")
    from superres.io.files import publish, remove_stale_temps, temp_beside

    remove_stale_temps(path)  # of an export killed half-way
    fd, tmp = temp_beside(path)  # written and checked there, renamed onto path only when it passes
    os.close(fd)
    try:
        worst = _export_and_check(desc, net, crops, refs, tmp, path, dtype, opset, ort)
        limit = FP16_TOLERANCE if fp16 else FP32_TOLERANCE
        if not worst <= limit:
            raise ExportError(f"{path}: ONNX Runtime differs from PyTorch by {worst:.3g} (> {limit:g})")
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    sizes = [tuple(x.shape[-2:]) for x in crops]
    return ExportReport(path, desc.arch, opset, fp16, sizes, worst)


def _export_and_check(desc: ModelDescriptor, net: torch.nn.Module, crops: list[torch.Tensor], refs: list[np.ndarray],
                      tmp: Path, path: Path, dtype: torch.dtype, opset: int, ort) -> float:
    """Write ``net`` as ONNX to ``tmp`` and run it on ``crops`` in ONNX Runtime: the largest difference from
    PyTorch's ``refs`` (messages name ``path``, where the file is meant to go)."""
    spatial = (3, 4) if desc.video is not None else (2, 3)
    axes = {0: "batch", spatial[0]: "height", spatial[1]: "width"}

    def first_line(e: Exception) -> str:
        return str(e).replace(str(tmp), str(path)).splitlines()[0]

    try:
        # Traced with gradients on: networks' inference-only memory savers (RRDBNet's upsampling in row
        # strips) loop over sizes in Python, which a trace would freeze. The exporter prints its whole
        # graph to stderr when it fails: the error below says what matters.
        with torch.enable_grad(), warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(net, (crops[0].to(dtype),), str(tmp), dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": axes, "output": {0: "batch", spatial[0]: "out_height",
                                                                      spatial[1]: "out_width"}})
    except Exception as e:  # the exporter raises several types; all mean "cannot express"
        op = _operator(str(e))
        what = f"the operator {op} has no ONNX form" if op else first_line(e)
        raise ExportError(f"{desc.arch} cannot be exported to ONNX (opset {opset}): {what}") from None
    try:
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    except Exception as e:
        op = _operator(str(e))
        what = f"ONNX Runtime has no kernel for {op}" if op else first_line(e)
        raise ExportError(f"{path}: {desc.arch} exported but does not run: {what}") from None
    worst = 0.0
    for x, ref in zip(crops, refs, strict=True):
        try:
            out = session.run(["output"], {"input": x.to(dtype).numpy()})[0].astype(np.float32)
        except Exception as e:  # onnxruntime's own error types
            raise ExportError(f"{path}: {desc.arch} exported but fails in ONNX Runtime: {first_line(e)}") from None
        if out.shape != ref.shape:
            raise ExportError(f"{path}: ONNX Runtime gives {out.shape} where PyTorch gives {ref.shape}")
        bad = int((~np.isfinite(out)).sum())  # PyTorch's are finite (checked): NaN is a mismatch, never a 0
        if bad:
            raise ExportError(f"{path}: ONNX Runtime gives NaN or infinity at {bad} output values where PyTorch's "
                              "are finite")
        worst = max(worst, float(np.abs(out - ref).max()))
    return worst
