"""Import ncnn models (``.param`` graph + ``.bin`` weights) onto our PyTorch architectures.

ncnn (Tencent) stores, for each ``Convolution`` layer in ``.param`` order, its weights as one
blob that starts with a 4-byte tag (``0x01306B47``: fp16, padded to 4 bytes; ``0``: raw fp32),
then its bias as raw fp32; ``PReLU`` slopes are raw fp32. We read the graph to tell the
architecture (RRDBNet or SRVGGNetCompact, as converted by Real-ESRGAN's ncnn models), then copy
the blobs onto the network's convs and PReLUs in the same order, with strict shape checks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from superres.zoo.checkpoint import CheckpointError

_MAGIC = 7767517
_TAG_FP16 = 0x01306B47


@dataclass
class Layer:
    type: str
    name: str
    params: dict[int, str] = field(default_factory=dict)

    def int(self, key: int, default: int = 0) -> int:
        return int(self.params.get(key, default))


def read_param(path: str | os.PathLike) -> list[Layer]:
    """The layers of a text ``.param`` file, in order."""
    lines = Path(path).read_text().split("\n")
    if not lines or lines[0].strip() != str(_MAGIC):
        raise CheckpointError(f"{path}: not an ncnn .param file (magic number {_MAGIC} missing)")
    layers = []
    for line in lines[2:]:
        fields = line.split()
        if not fields:
            continue
        kind, name, n_in, n_out = fields[0], fields[1], int(fields[2]), int(fields[3])
        params = {}
        for item in fields[4 + n_in + n_out:]:
            key, _, value = item.partition("=")
            params[int(key)] = value
        layers.append(Layer(kind, name, params))
    return layers


def detect_ncnn(layers: list[Layer], path: str | os.PathLike = "<param>") -> tuple[str, dict]:
    """(architecture, arguments) of a Real-ESRGAN ncnn graph."""
    convs = [layer for layer in layers if layer.type == "Convolution"]
    shuffle = [layer for layer in layers if layer.type == "PixelShuffle"]
    if not convs:
        raise CheckpointError(f"{path}: no Convolution layers")
    num_feat = convs[0].int(0)
    if any(layer.type == "PReLU" for layer in layers) and shuffle:
        upscale = shuffle[0].int(0)
        return "SRVGGNetCompact", {"num_in_ch": convs[0].int(6) // (9 * num_feat), "num_feat": num_feat,
                                   "num_conv": len(convs) - 2, "upscale": upscale,
                                   "num_out_ch": convs[-1].int(0) // upscale**2, "act_type": "prelu"}
    num_block, rest = divmod(len(convs) - 6, 15)
    upsamples = sum(layer.type == "Interp" for layer in layers)
    if rest or num_block < 1 or upsamples != 2:
        raise CheckpointError(f"{path}: {len(convs)} convolutions and {upsamples} upsampling layers match neither "
                              "RRDBNet x4 nor SRVGGNetCompact")
    return "RRDBNet", {"num_in_ch": convs[0].int(6) // (9 * num_feat), "num_out_ch": convs[-1].int(0), "scale": 4,
                       "num_feat": num_feat, "num_block": num_block, "num_grow_ch": convs[1].int(0)}


class _Blob:
    def __init__(self, data: bytes, path: str | os.PathLike):
        self.data, self.pos, self.path = data, 0, path

    def take(self, nbytes: int) -> bytes:
        if self.pos + nbytes > len(self.data):
            raise CheckpointError(f"{self.path}: ends early ({len(self.data)} bytes; the .param asks for more)")
        chunk = self.data[self.pos:self.pos + nbytes]
        self.pos += nbytes
        return chunk

    def raw_fp32(self, count: int) -> np.ndarray:
        return np.frombuffer(self.take(4 * count), dtype="<f4")

    def tagged(self, count: int) -> np.ndarray:
        tag = int.from_bytes(self.take(4), "little")
        if tag == _TAG_FP16:
            values = np.frombuffer(self.take((2 * count + 3) // 4 * 4), dtype="<f2")[:count]
            return values.astype(np.float32)
        if tag == 0:
            return self.raw_fp32(count)
        raise CheckpointError(f"{self.path}: weight blob tag {tag:#010x} at byte {self.pos - 4} is not fp16 or fp32 "
                              "(int8-quantised ncnn models are not supported)")


def read_ncnn(param_path: str | os.PathLike, bin_path: str | os.PathLike) -> nn.Module:
    """An ncnn model as our network (built by ``create_model``), shapes checked layer by layer."""
    from superres.zoo import create_model

    layers = read_param(param_path)
    arch, kwargs = detect_ncnn(layers, param_path)
    module = create_model(arch, **kwargs).module
    targets = [(name, m) for name, m in module.named_modules() if isinstance(m, nn.Conv2d | nn.PReLU)]
    sources = [layer for layer in layers if layer.type in ("Convolution", "PReLU")]
    if [type(m).__name__ for _, m in targets] != ["Conv2d" if s.type == "Convolution" else "PReLU" for s in sources]:
        raise CheckpointError(f"{param_path}: layer sequence does not match {arch}({kwargs})")
    blob = _Blob(Path(bin_path).read_bytes(), bin_path)
    state: dict[str, torch.Tensor] = {}
    for (name, m), layer in zip(targets, sources, strict=True):
        if isinstance(m, nn.Conv2d):
            w, b = m.weight, m.bias
            if layer.int(0) != w.shape[0] or layer.int(6) != w.numel() or layer.int(5) != (b is not None):
                raise CheckpointError(f"{param_path}: {layer.name} has {layer.int(0)} outputs, {layer.int(6)} "
                                      f"weights; {arch} {name} needs {w.shape[0]}, {w.numel()}")
            state[f"{name}.weight"] = torch.from_numpy(blob.tagged(w.numel()).reshape(w.shape).copy())
            if b is not None:
                state[f"{name}.bias"] = torch.from_numpy(blob.raw_fp32(b.numel()).copy())
        else:
            if layer.int(0) != m.weight.numel():
                raise CheckpointError(f"{param_path}: {layer.name} has {layer.int(0)} slopes; {name} needs "
                                      f"{m.weight.numel()}")
            state[f"{name}.weight"] = torch.from_numpy(blob.raw_fp32(m.weight.numel()).copy())
    if blob.pos != len(blob.data):
        raise CheckpointError(f"{bin_path}: {len(blob.data) - blob.pos} bytes left over after the last layer")
    module.load_state_dict(state, strict=True)
    return module
