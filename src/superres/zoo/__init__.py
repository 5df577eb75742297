"""Models by name or file: create, load (with architecture detection), save, interpolate."""

from __future__ import annotations

import inspect
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from superres.zoo.checkpoint import CheckpointError, read_checkpoint, save_state_dict, unwrap_state_dict
from superres.zoo.detect import DETECTORS, detect, normalize_layout
from superres.zoo.pretrained import DEFAULT_MODEL, MODELS, ModelSpec

_PURPOSES = {"VGGStyleDiscriminator": "discriminator", "UNetDiscriminatorSN": "discriminator",
             "SpyNet": "optical flow", "BasicVSR": "video", "IconVSR": "video", "EDVR": "video",
             "TemporalAdaptiveNet": "video", "VSRTransformer": "video"}
_DISCRIMINATORS = {arch for arch, purpose in _PURPOSES.items() if purpose == "discriminator"}
_FIXED_SCALES = {"BasicVSR": 4, "IconVSR": 4, "EDVR": 4, "VSRTransformer": 4}
_SCALE_ARGS = ("upscale", "scale", "upscale_factor")


def architectures() -> dict[str, type[nn.Module]]:
    from superres.archs import ARCHITECTURES

    return ARCHITECTURES


def create_model(arch: str, **kwargs) -> nn.Module:
    """A new (randomly initialised) network by its official class name, e.g. ``RRDBNet``."""
    archs = architectures()
    if arch not in archs:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(archs)}")
    model = archs[arch](**kwargs)
    model.superres_config = {"arch": arch, "kwargs": _full_kwargs(archs[arch], kwargs)}
    return model


def _full_kwargs(cls: type, kwargs: dict) -> dict:
    """The constructor arguments with defaults filled in (JSON-friendly)."""
    bound = inspect.signature(cls.__init__).bind_partial(None, **kwargs)
    bound.apply_defaults()
    args = dict(bound.arguments)
    args.pop("self", None)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}


@dataclass
class ModelDescriptor:
    """A loaded network and what is known about it. Call it on N x C x H x W RGB in [0, 1]."""

    module: nn.Module
    arch: str
    kwargs: dict
    scale: int
    in_channels: int
    out_channels: int
    purpose: str  # "sr" (image to larger image), "video" (N x T x C x H x W), "discriminator", "optical flow"
    supports_half: bool = True
    source: str | None = None
    metadata: dict = field(default_factory=dict)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(x)


def _describe(module: nn.Module, arch: str, kwargs: dict, source: str | None, metadata: dict) -> ModelDescriptor:
    scale = next((int(kwargs[k]) for k in _SCALE_ARGS if k in kwargs), _FIXED_SCALES.get(arch))
    if arch == "SRCNN":
        channels = kwargs.get("channels", (3, 64, 32, 3))
        in_ch, out_ch = channels[0], channels[-1]
    elif arch in ("FSRCNN", "ESPCN"):
        in_ch = out_ch = kwargs.get("num_channels", 1)
    else:
        in_ch = kwargs.get("num_in_ch", 3)
        out_ch = 1 if arch in _DISCRIMINATORS else kwargs.get("num_out_ch", in_ch)
    return ModelDescriptor(module=module.eval(), arch=arch, kwargs=kwargs, scale=scale or 1,
                           in_channels=in_ch, out_channels=out_ch,
                           purpose=_PURPOSES.get(arch, "sr"),
                           source=source, metadata=metadata)


# Architectures whose scale is not stored in their weights, and the argument that holds it.
_SCALE_NOT_IN_WEIGHTS = {"SRCNN": "upscale_factor", "FSRCNN": "upscale"}


def load_model(name_or_path: str | os.PathLike | dict, device: str | torch.device = "cpu",
               scale: int | None = None) -> ModelDescriptor:
    """Load a named model, a checkpoint file or a state dict, detecting its architecture.

    Files: ``.pth/.pt/.ckpt`` (``torch.load(weights_only=True)``) and ``.safetensors``; BasicSR,
    Real-ESRGAN, the original ESRGAN, MMagic (``generator_ema.``/``generator.``) and plain layouts.
    Weights are loaded with strict key matching. ``scale`` is needed only for SRCNN and FSRCNN
    files that are not ours (their scale is not in the weights; defaults: x4 and x3); ours record it.
    """
    metadata: dict = {}
    if isinstance(name_or_path, dict):
        state, source = unwrap_state_dict(name_or_path), None
    elif str(name_or_path) in MODELS:
        from superres.zoo.pretrained import pretrained_checkpoint

        state, metadata, source = pretrained_checkpoint(str(name_or_path))
    else:
        path = Path(name_or_path)
        if not path.exists():
            raise CheckpointError(f"{path}: no such model name or file (named models: {', '.join(MODELS)})")
        state, metadata = read_checkpoint(path)
        source = str(path)
    state, implied = normalize_layout(state)

    if "superres_arch" in metadata:
        arch, kwargs = metadata["superres_arch"], json.loads(metadata.get("superres_kwargs", "{}"))
    else:
        found = detect(state)
        if found is None:
            raise CheckpointError(_no_match_message(source or "<state dict>", state))
        arch, kwargs = found
        kwargs = {**kwargs, **implied}
    if scale is not None and arch in _SCALE_NOT_IN_WEIGHTS and "superres_arch" not in metadata:
        kwargs = {**kwargs, _SCALE_NOT_IN_WEIGHTS[arch]: int(scale)}
    module = create_model(arch, **kwargs)
    missing, unexpected = _key_mismatch(module.state_dict(), state)
    if missing or unexpected:
        raise CheckpointError(f"{source or '<state dict>'}: looks like {arch} but keys differ: "
                              f"missing {_few(missing)}; unexpected {_few(unexpected)}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        shape_errors = [line.strip() for line in str(e).splitlines() if "size mismatch" in line]
        raise CheckpointError(f"{source or '<state dict>'}: {arch} shapes differ: {_few(shape_errors)}") from None
    return _describe(module.to(device), arch, module.superres_config["kwargs"], source, metadata)


def _key_mismatch(expected: dict, state: dict) -> tuple[list[str], list[str]]:
    return sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())


def _few(keys: list[str], n: int = 4) -> str:
    if not keys:
        return "none"
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def _no_match_message(source: str, state: dict) -> str:
    """Name the architecture whose layout shares the most key patterns, and the differences.

    Block indices are folded (``body.#.conv1.weight``) so that depth does not count as a difference.
    """
    def patterns(keys) -> set[str]:
        return {re.sub(r"(?<=\.)\d+(?=\.)", "#", k) for k in keys}

    have = patterns(state)
    best, best_score, best_keys = None, -1.0, set()
    for arch in DETECTORS:
        keys = patterns(create_model(arch).state_dict())
        score = len(keys & have) / len(keys | have)
        if score > best_score:
            best, best_score, best_keys = arch, score, keys
    missing, unexpected = sorted(best_keys - have), sorted(have - best_keys)
    return (f"{source}: matches no known architecture; closest is {best} ({best_score:.0%} of key patterns "
            f"shared): missing {_few(missing)}; unexpected {_few(unexpected)}")


def save_model(model: nn.Module | ModelDescriptor, path: str | os.PathLike, provenance: str = "") -> None:
    """Write safetensors with the architecture, its arguments and the scale in the metadata."""
    if isinstance(model, ModelDescriptor):
        arch, kwargs, module = model.arch, model.kwargs, model.module
    else:
        module = model
        config = getattr(model, "superres_config", None)
        if config is None:
            found = detect(model.state_dict())
            if found is None:
                raise ValueError(f"cannot tell the architecture of {type(model).__name__}; build it with create_model")
            config = {"arch": found[0], "kwargs": found[1]}
        arch, kwargs = config["arch"], config["kwargs"]
    scale = next((kwargs[k] for k in _SCALE_ARGS if k in kwargs), 1)
    save_state_dict(path, module.state_dict(), {"superres_arch": arch, "superres_kwargs": kwargs,
                                                "scale": scale, "provenance": provenance,
                                                "format": "superres-1"})


def interpolate(a: ModelDescriptor | str | os.PathLike, b: ModelDescriptor | str | os.PathLike,
                alpha: float) -> ModelDescriptor:
    """Network interpolation (ESRGAN Sec. 3.4): weights (1 - alpha) * a + alpha * b.

    With a = the PSNR-oriented model and b = the GAN model, alpha trades fidelity for detail.
    Both must be the same architecture with the same arguments.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    da = a if isinstance(a, ModelDescriptor) else load_model(a)
    db = b if isinstance(b, ModelDescriptor) else load_model(b)
    if (da.arch, da.kwargs) != (db.arch, db.kwargs):
        raise CheckpointError(f"cannot interpolate {da.arch}({da.kwargs}) with {db.arch}({db.kwargs}): "
                              "the architectures differ")
    sa, sb = da.module.state_dict(), db.module.state_dict()
    mixed = {k: ((1 - alpha) * sa[k].double() + alpha * sb[k].double()).to(sa[k].dtype)
             if sa[k].is_floating_point() else sa[k] for k in sa}
    module = create_model(da.arch, **da.kwargs)
    module.load_state_dict(mixed, strict=True)
    return _describe(module, da.arch, da.kwargs, None, {"interpolated": f"{1 - alpha:g} x A + {alpha:g} x B"})


def list_models() -> list[str]:
    """Names of the registered pretrained models (see ``superres models`` for details)."""
    return list(MODELS)


__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "CheckpointError",
    "ModelDescriptor",
    "ModelSpec",
    "architectures",
    "create_model",
    "interpolate",
    "list_models",
    "load_model",
    "save_model",
]
