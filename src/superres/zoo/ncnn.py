"""Import ncnn models (``.param`` graph + ``.bin`` weights) onto our PyTorch architectures.

ncnn (Tencent) stores, for each ``Convolution``, ``Deconvolution`` and ``InnerProduct`` layer in
``.param`` order, its weights as one blob that starts with a 4-byte tag (``0x01306B47``: fp16,
padded to 4 bytes; ``0``: raw fp32), then its bias as raw fp32; ``PReLU`` slopes are raw fp32.
We read the graph to tell the architecture (RRDBNet or SRVGGNetCompact, as converted by
Real-ESRGAN's ncnn models; Real-CUGAN's UpCunet, whose squeeze-and-excitation 1x1 convs are
``InnerProduct`` layers; waifu2x's UpConv7 and CUNet), then copy the blobs onto the network's convs,
transposed convs and PReLUs in the same order, with strict shape checks. Real-CUGAN's and waifu2x's
files hold the unpadded network alone: the edge padding (reflect for Real-CUGAN, replicate for
waifu2x), the x4 residual and the pro models' input range are the network's own code. waifu2x's x2
CUNet graph is Real-CUGAN's UpCunet2x graph; the caller names the architecture (``arch=``).
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
    """(architecture, arguments) of a Real-ESRGAN, Real-CUGAN or waifu2x ncnn graph."""
    convs = [layer for layer in layers if layer.type == "Convolution"]
    shuffle = [layer for layer in layers if layer.type == "PixelShuffle"]
    if not convs:
        raise CheckpointError(f"{path}: no Convolution layers")
    num_feat = convs[0].int(0)
    num_in_ch = convs[0].int(6) // (9 * num_feat)
    deconvs = [layer for layer in layers if layer.type == "Deconvolution"]
    inner = any(layer.type == "InnerProduct" for layer in layers)
    if len(convs) == 6 and len(deconvs) == 1 and not inner and not shuffle:  # waifu2x's UpConv7
        return "UpConv7", {"in_channels": num_in_ch, "out_channels": deconvs[0].int(0)}
    if len(deconvs) == 3 and inner:  # waifu2x's x1 CUNet: UNet1 ends in a conv, not a transposed conv
        return "CUNet", {"in_channels": num_in_ch, "out_channels": convs[-1].int(0), "scale": 1}
    if deconvs and inner:
        up = deconvs[1].int(3)  # UNet1's last layer, after its one transposed conv of stride 2
        scale = 4 if shuffle else up
        if (up, deconvs[1].int(1)) not in ((2, 4), (3, 5)) or (shuffle and up != 2):
            raise CheckpointError(f"{path}: transposed convolutions do not match Real-CUGAN's UpCunet")
        out = convs[-1].int(0) // 4 if shuffle else convs[-1].int(0)
        return f"UpCunet{scale}x", {"in_channels": num_in_ch, "out_channels": out}
    if any(layer.type == "PReLU" for layer in layers) and shuffle:
        upscale = shuffle[0].int(0)
        return "SRVGGNetCompact", {"num_in_ch": num_in_ch, "num_feat": num_feat,
                                   "num_conv": len(convs) - 2, "upscale": upscale,
                                   "num_out_ch": convs[-1].int(0) // upscale**2, "act_type": "prelu"}
    num_block, rest = divmod(len(convs) - 6, 15)
    upsamples = sum(layer.type == "Interp" for layer in layers)
    if rest or num_block < 1 or upsamples != 2:
        raise CheckpointError(f"{path}: {len(convs)} convolutions and {upsamples} upsampling layers match neither "
                              "RRDBNet x4, SRVGGNetCompact nor UpCunet")
    return "RRDBNet", {"num_in_ch": num_in_ch, "num_out_ch": convs[-1].int(0), "scale": 4,
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


# ncnn layer -> the PyTorch module it becomes, and its (outputs, bias flag, weight count) parameter ids
_WEIGHTED = {"Convolution": (nn.Conv2d, (0, 5, 6)), "InnerProduct": (nn.Conv2d, (0, 1, 2)),
             "Deconvolution": (nn.ConvTranspose2d, (0, 5, 6))}


def read_ncnn(param_path: str | os.PathLike, bin_path: str | os.PathLike, arch: str | None = None,
              **kwargs) -> nn.Module:
    """An ncnn model as our network (built by ``create_model``), shapes checked layer by layer.

    ``arch``: the architecture, where the graph alone cannot tell it (waifu2x's x2 CUNet has the graph of
    Real-CUGAN's UpCunet2x); ``kwargs``: constructor arguments the graph does not tell (Real-CUGAN's ``pro``).
    """
    from superres.zoo import create_model

    layers = read_param(param_path)
    detected_arch, detected = detect_ncnn(layers, param_path)
    arch = arch or detected_arch
    kwargs = {**detected, **kwargs}
    try:
        module = create_model(arch, **kwargs).module
    except (TypeError, ValueError) as e:  # arguments of another architecture
        raise CheckpointError(f"{param_path}: the graph is {detected_arch}({detected}), not {arch} ({e})") from None
    kinds = nn.Conv2d | nn.ConvTranspose2d | nn.PReLU
    targets = [(name, m) for name, m in module.named_modules() if isinstance(m, kinds)]
    sources = [layer for layer in layers if layer.type in ("PReLU", *_WEIGHTED)]
    if [type(m) for _, m in targets] != [_WEIGHTED.get(s.type, (nn.PReLU,))[0] for s in sources]:
        raise CheckpointError(f"{param_path}: layer sequence does not match {arch}({kwargs})")
    blob = _Blob(Path(bin_path).read_bytes(), bin_path)
    state: dict[str, torch.Tensor] = {}
    for (name, m), layer in zip(targets, sources, strict=True):
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            w, b = m.weight, m.bias
            n_out = w.shape[1] if isinstance(m, nn.ConvTranspose2d) else w.shape[0]
            outputs, bias, size = (layer.int(i) for i in _WEIGHTED[layer.type][1])
            if outputs != n_out or size != w.numel() or bias != (b is not None):
                raise CheckpointError(f"{param_path}: {layer.name} has {outputs} outputs, {size} "
                                      f"weights; {arch} {name} needs {n_out}, {w.numel()}")
            values = blob.tagged(w.numel())
            if isinstance(m, nn.ConvTranspose2d):  # ncnn: outputs first; PyTorch: inputs first
                weight = values.reshape(w.shape[1], w.shape[0], *w.shape[2:]).transpose(1, 0, 2, 3)
            else:
                weight = values.reshape(w.shape)
            state[f"{name}.weight"] = torch.from_numpy(weight.copy())
            if b is not None:
                state[f"{name}.bias"] = torch.from_numpy(blob.raw_fp32(b.numel()).copy())
        else:
            if layer.int(0) != m.weight.numel():
                raise CheckpointError(f"{param_path}: {layer.name} has {layer.int(0)} slopes; {name} needs "
                                      f"{m.weight.numel()}")
            state[f"{name}.weight"] = torch.from_numpy(blob.raw_fp32(m.weight.numel()).copy())
    if blob.pos != len(blob.data):
        raise CheckpointError(f"{bin_path}: {len(blob.data) - blob.pos} bytes left over after the last layer")
    weights = {name for name, _ in module.named_parameters()}
    buffers = {k: v for k, v in module.state_dict().items() if k not in weights}  # e.g. Real-CUGAN's pro marker
    module.load_state_dict({**state, **buffers}, strict=True)
    return module
