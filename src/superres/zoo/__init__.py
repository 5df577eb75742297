"""Models by name or file: create, load (with architecture detection), save, interpolate."""

from __future__ import annotations

import inspect
import json
import os
import re
from functools import partial
from pathlib import Path

import torch
from torch import nn

from superres.archs.spec import ModelFacts
from superres.zoo.checkpoint import CheckpointError, read_checkpoint, save_state_dict, unwrap_state_dict
from superres.zoo.descriptor import ModelDescriptor
from superres.zoo.detect import detect, normalize_layout
from superres.zoo.pretrained import DEFAULT_MODEL, MODELS, ModelSpec

BICUBIC = "bicubic"


def architectures() -> dict[str, type[nn.Module]]:
    from superres.archs import ARCHITECTURES

    return ARCHITECTURES


def _registry():
    from superres.archs import REGISTRY

    return REGISTRY


def create_model(arch: str, **kwargs) -> ModelDescriptor:
    """A new (randomly initialised) network by its official class name, e.g. ``RRDBNet``, with its facts.

    The network is ``.module`` (it carries ``.superres_config``: the architecture and its full arguments).
    """
    registry = _registry()
    if arch not in registry:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(registry)}")
    spec = registry[arch]
    module = spec.cls(**kwargs)
    full = _full_kwargs(spec.cls, kwargs)
    module.superres_config = {"arch": arch, "kwargs": full}
    return ModelDescriptor(module=module, arch=arch, kwargs=full, facts=spec.facts(full))


def _full_kwargs(cls: type, kwargs: dict) -> dict:
    """The constructor arguments with defaults filled in (JSON-friendly)."""
    bound = inspect.signature(cls.__init__).bind_partial(None, **kwargs)
    bound.apply_defaults()
    args = dict(bound.arguments)
    args.pop("self", None)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}


def describe(module: nn.Module, source: str | None = None, metadata: dict | None = None) -> ModelDescriptor:
    """The descriptor of a network built by :func:`create_model`, or of one whose weights are detectable."""
    config = getattr(module, "superres_config", None)
    if config is None:
        found = detect(module.state_dict())
        if found is None:
            raise ValueError(f"cannot tell the architecture of {type(module).__name__}; build it with create_model")
        config = {"arch": found[0], "kwargs": found[1]}
    spec = _registry()[config["arch"]]
    kwargs = _full_kwargs(spec.cls, config["kwargs"])
    return ModelDescriptor(module=module, arch=config["arch"], kwargs=kwargs, facts=spec.facts(kwargs),
                           source=source, metadata=dict(metadata or {}))


def _bicubic(scale: float = 4) -> ModelDescriptor:
    """MATLAB's bicubic ``imresize`` as a model: on uint8/uint16 arrays it rounds after each pass, as the
    published baselines (and MATLAB) do; on float arrays it does not."""
    from superres.ops.imresize import imresize

    return ModelDescriptor(module=None, arch=BICUBIC, kwargs={"scale": scale}, facts=ModelFacts("sr", scale, 3, 3),
                           resample=partial(imresize, scale=scale))


def load_model(name_or_path: str | os.PathLike | dict, device: str | torch.device = "cpu",
               scale: float | None = None) -> ModelDescriptor:
    """Load a named model, a checkpoint file or a state dict, detecting its architecture.

    Files: ``.pth/.pt/.ckpt`` (``torch.load(weights_only=True)``) and ``.safetensors``; BasicSR,
    Real-ESRGAN, the original ESRGAN, MMagic (``generator_ema.``/``generator.``) and plain layouts.
    Weights are loaded with strict key matching. ``scale`` is needed only for SRCNN and FSRCNN
    files that are not ours (their scale is not in the weights; defaults: x4 and x3); ours record it.
    ``"bicubic"`` is MATLAB's bicubic resize at ``scale`` (default 4, may be fractional).
    """
    if isinstance(name_or_path, str) and name_or_path == BICUBIC:
        return _bicubic(4 if scale is None else scale)
    metadata: dict = {}
    name = None
    if isinstance(name_or_path, dict):
        state, source = unwrap_state_dict(name_or_path), None
    elif str(name_or_path) in MODELS:
        from superres.zoo.pretrained import pretrained_checkpoint

        name = str(name_or_path)
        state, metadata, source = pretrained_checkpoint(name)
    else:
        path = Path(name_or_path)
        if not path.exists():
            import difflib

            names = [*MODELS, BICUBIC]
            close = difflib.get_close_matches(str(name_or_path), names, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? " if close else ""
            raise CheckpointError(f"{path}: no such model name or file ({hint}named models: {', '.join(names)})")
        state, metadata = read_checkpoint(path)
        source = str(path)
    state, implied = normalize_layout(state)
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}  # numbers were markers for the layouts

    if "superres_arch" in metadata:
        arch, kwargs = metadata["superres_arch"], json.loads(metadata.get("superres_kwargs", "{}"))
    else:
        found = detect(state)
        if found is None:
            raise CheckpointError(_no_match_message(source or "<state dict>", state))
        arch, kwargs = found
        kwargs = {**kwargs, **implied}
        unstored = _registry()[arch].unstored_scale
        if scale is not None and unstored is not None:
            kwargs = {**kwargs, unstored: int(scale)}
    desc = create_model(arch, **kwargs)
    module = desc.module
    missing, unexpected = _key_mismatch(module.state_dict(), state)
    if missing or unexpected:
        raise CheckpointError(f"{source or '<state dict>'}: looks like {arch} but keys differ: "
                              f"missing {_few(missing)}; unexpected {_few(unexpected)}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        shape_errors = [line.strip() for line in str(e).splitlines() if "size mismatch" in line]
        raise CheckpointError(f"{source or '<state dict>'}: {arch} shapes differ: {_few(shape_errors)}") from None
    module.to(device).eval()
    desc.source, desc.name, desc.metadata = source, name, metadata
    return desc


def _key_mismatch(expected: dict, state: dict) -> tuple[list[str], list[str]]:
    return sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())


def _few(keys: list[str], n: int = 4) -> str:
    if not keys:
        return "none"
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def _dims(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def _no_match_message(source: str, state: dict) -> str:
    """Name the architecture whose layout shares the most key patterns, and the differences.

    Block indices are folded (``body.#.conv1.weight``) so that depth does not count as a difference.
    """
    def patterns(keys) -> set[str]:
        return {re.sub(r"(?<=\.)\d+(?=\.)", "#", k) for k in keys}

    have = patterns(state)
    best, best_score, best_keys = None, -1.0, set()
    for arch in _registry():
        with torch.device("meta"):  # key names only: no memory, no initialisation (face networks have ~90M)
            keys = patterns(create_model(arch).module.state_dict())
        score = len(keys & have) / len(keys | have)
        if score > best_score:
            best, best_score, best_keys = arch, score, keys
    missing, unexpected = sorted(best_keys - have), sorted(have - best_keys)
    if not missing and not unexpected:  # the layout is right: the shapes fit none of its configurations
        default = create_model(best).module.state_dict()
        differ = [f"{k} {_dims(v)} (default {_dims(default[k])})" for k, v in state.items()
                  if k in default and tuple(v.shape) != tuple(default[k].shape)]
        return (f"{source}: has the keys of {best}, but tensor shapes that fit none of its configurations; "
                f"shapes that differ from its default: {_few(differ, 3)}")
    return (f"{source}: matches no known architecture; closest is {best} ({best_score:.0%} of key patterns "
            f"shared): missing {_few(missing)}; unexpected {_few(unexpected)}")


def save_model(model: nn.Module | ModelDescriptor, path: str | os.PathLike, provenance: str = "") -> None:
    """Write safetensors with the architecture, its arguments and the scale in the metadata."""
    desc = model if isinstance(model, ModelDescriptor) else describe(model)
    if desc.module is None:
        raise ValueError(f"{desc.arch} has no weights to save")
    save_state_dict(path, desc.module.state_dict(), {"superres_arch": desc.arch, "superres_kwargs": desc.kwargs,
                                                     "scale": desc.scale, "provenance": provenance,
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
    if da.module is None or db.module is None:
        raise CheckpointError("bicubic has no weights to interpolate")
    if (da.arch, da.kwargs) != (db.arch, db.kwargs):
        raise CheckpointError(f"cannot interpolate {da.arch}({da.kwargs}) with {db.arch}({db.kwargs}): "
                              "the architectures differ")
    sa, sb = da.module.state_dict(), db.module.state_dict()
    mixed = {k: ((1 - alpha) * sa[k].double() + alpha * sb[k].double()).to(sa[k].dtype)
             if sa[k].is_floating_point() else sa[k] for k in sa}
    mixed_desc = create_model(da.arch, **da.kwargs)
    mixed_desc.module.load_state_dict(mixed, strict=True)
    mixed_desc.module.eval()
    mixed_desc.metadata = {"interpolated": f"{1 - alpha:g} x A + {alpha:g} x B"}
    return mixed_desc


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
    "describe",
    "interpolate",
    "list_models",
    "load_model",
    "save_model",
]
