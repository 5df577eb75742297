"""Models by name or file: create, load (with architecture detection), save, interpolate."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import threading
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
    Weights are loaded with strict key matching, into a network built only once its keys and shapes
    are known to be the file's (its metadata's arguments are untrusted). ``scale`` is needed only for
    SRCNN and FSRCNN files that are not ours (their scale is not in the weights; defaults: x4 and x3);
    ours record it.
    ``"bicubic"`` is MATLAB's bicubic resize at ``scale`` (default 4, may be fractional).

    Architectures superres does not implement load through spandrel (:mod:`superres.zoo.spandrel`), given
    the state dict read here; superres's own code wins where both read a file. ``desc.origin`` says which.
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

            from superres.zoo.pretrained import missing_file_hint

            release = missing_file_hint(path)
            if release is not None:
                raise CheckpointError(f"{path}: no such file; {release}")
            names = [*MODELS, BICUBIC]
            close = difflib.get_close_matches(str(name_or_path), names, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? " if close else ""
            raise CheckpointError(f"{path}: no such model name or file ({hint}named models: {', '.join(names)})")
        state, metadata = read_checkpoint(path)
        source = str(path)
    as_read = state  # spandrel's detectors expect the file's own layout, not our renames
    state, implied = normalize_layout(state)
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}  # numbers were markers for the layouts
    where = source or "<state dict>"

    if "superres_arch" in metadata:
        arch, kwargs = _metadata_arguments(metadata, where)
        desc = _build_matching(arch, kwargs, state, where, "its metadata (superres_kwargs)")
    elif (found := detect(state)) is None:
        from superres.zoo.spandrel import CannotBuildError, extra_hint

        try:
            desc = _spandrel(as_read, where)  # an architecture superres does not implement
        except CannotBuildError as e:  # spandrel's detectors are loose: ours say more about what differs
            raise CheckpointError(f"{_no_match_message(where, state)}; spandrel takes it for {e.arch} but cannot "
                                  f"build it ({e.what})") from None
        if desc is None:
            raise CheckpointError(_no_match_message(where, state) + extra_hint())
    else:
        arch, kwargs = found
        kwargs = {**kwargs, **implied}
        unstored = _registry()[arch].unstored_scale
        if scale is not None and unstored is not None:
            kwargs = {**kwargs, unstored: int(scale)}
        try:
            desc = _build_matching(arch, kwargs, state, where, "the arguments detected")
        except CheckpointError as ours:  # a variant our code does not build (ESRGAN+): spandrel's may
            desc = _spandrel(as_read, where, quiet=True)
            if desc is None:
                raise ours from None
    desc.module.to(device).eval()
    desc.source, desc.name, desc.metadata = source, name, metadata
    return desc


_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
               type(None): "null"}


def _spandrel(state: dict, source: str, quiet: bool = False) -> ModelDescriptor | None:
    """The state dict as one of spandrel's architectures (:mod:`superres.zoo.spandrel`), or None. ``quiet``:
    None, not spandrel's own error, where it recognises the file but cannot build it (the caller has a
    better one)."""
    from superres.zoo import spandrel

    try:
        return spandrel.load(state, source, _bounded_parts(8 * len(state) + 1000))
    except _TooManyPartsError:
        if quiet:
            return None
        raise CheckpointError(f"{source}: spandrel's reading of it would build far more parts than the file's "
                              f"{len(state)} tensors") from None
    except CheckpointError:
        if quiet:
            return None
        raise


def _metadata_arguments(metadata: dict, source: str) -> tuple[str, dict]:
    """The architecture and arguments a file's metadata names: untrusted text, checked before use."""
    arch = metadata["superres_arch"]
    spec = _registry().get(arch)
    if spec is None:
        raise CheckpointError(f"{source}: its metadata names an architecture superres does not know: {arch!r} "
                              "(superres_arch)")
    try:
        kwargs = json.loads(metadata.get("superres_kwargs", "{}"))
    except ValueError as e:
        raise CheckpointError(f"{source}: its metadata superres_kwargs is not JSON ({e})") from None
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{source}: its metadata superres_kwargs is not a JSON object of {arch}'s arguments "
                              f"but {_JSON_TYPES.get(type(kwargs), type(kwargs).__name__)}")
    try:
        inspect.signature(spec.cls.__init__).bind(None, **kwargs)
    except TypeError as e:
        raise CheckpointError(f"{source}: its metadata superres_kwargs do not fit {arch}: {e}") from None
    return arch, kwargs


class _TooManyPartsError(CheckpointError):
    """A network under construction with far more parts than the file has tensors."""


@contextlib.contextmanager
def _bounded_parts(limit: int):
    """Abort a network's construction (in this thread) once it has registered more than ``limit``
    modules, parameters and buffers: arguments that ask for millions of blocks cannot match a file."""
    from torch.nn.modules import module as registration

    thread, count = threading.get_ident(), 0

    def hook(*_) -> None:
        nonlocal count
        if threading.get_ident() == thread:
            count += 1
            if count > limit:
                raise _TooManyPartsError

    handles = [registration.register_module_module_registration_hook(hook),
               registration.register_module_parameter_registration_hook(hook),
               registration.register_module_buffer_registration_hook(hook)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _build_matching(arch: str, kwargs: dict, state: dict, source: str, origin: str) -> ModelDescriptor:
    """``arch(**kwargs)`` with ``state`` loaded strictly, built for real only once its keys and shapes
    are known to be the file's: ``kwargs`` may come from a file's metadata, and a wrong width would
    otherwise allocate and initialise gigabytes (or fail to) before the mismatch shows. The skeleton
    is built on the meta device (no memory), and may have only a few times as many parts as the
    file has tensors (every architecture has about two per tensor)."""
    try:
        with torch.device("meta"), _bounded_parts(8 * len(state) + 1000):
            skeleton = create_model(arch, **kwargs).module.state_dict()
    except _TooManyPartsError:
        raise CheckpointError(f"{source}: {arch} from {origin} would have far more parts than the file's "
                              f"{len(state)} tensors") from None
    except Exception as e:  # constructors reject wrong values with many exception types
        what = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{source}: {arch} cannot be built from {origin}: {type(e).__name__}"
                              f"{': ' + what[:200] if what else ''}") from None
    missing, unexpected = _key_mismatch(skeleton, state)
    if missing or unexpected:
        raise CheckpointError(f"{source}: looks like {arch} but keys differ: "
                              f"missing {_few(missing)}; unexpected {_few(unexpected)}")
    differ = [f"{k} {_dims(state[k])} vs {_dims(v)}" for k, v in skeleton.items()
              if tuple(state[k].shape) != tuple(v.shape)]
    if differ:
        raise CheckpointError(f"{source}: {arch} shapes differ between the file and {origin}: {_few(differ, 3)}")
    desc = create_model(arch, **kwargs)
    desc.module.load_state_dict(state, strict=True)
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
    """Write safetensors with the architecture, its arguments and the scale in the metadata.

    The name must end in ``.safetensors``: readers (``load_model`` included) tell the format by it, and
    safetensors bytes under ``x.pth`` would be taken for a PyTorch pickle and refused."""
    check_safetensors_name(path)
    desc = model if isinstance(model, ModelDescriptor) else describe(model)
    if desc.module is None:
        raise ValueError(f"{desc.arch} has no weights to save")
    if desc.code != "superres":  # the file's own layout: spandrel detects it again when it is loaded
        save_state_dict(path, _weights(desc), {"spandrel_arch": desc.arch, "scale": desc.scale,
                                               "provenance": provenance, "format": "superres-1"})
        return
    save_state_dict(path, desc.module.state_dict(), {"superres_arch": desc.arch, "superres_kwargs": desc.kwargs,
                                                     "scale": desc.scale, "provenance": provenance,
                                                     "format": "superres-1"})


def _weights(desc: ModelDescriptor) -> dict[str, torch.Tensor]:
    """The network's state dict in its checkpoints' layout (spandrel's networks without our wrapper)."""
    return (desc.module.model if desc.code != "superres" else desc.module).state_dict()


def check_safetensors_name(path: str | os.PathLike) -> None:
    """Refuse a file name for :func:`save_model` that readers would not take for safetensors."""
    if Path(path).suffix != ".safetensors":
        raise ValueError(f"{path}: superres writes models as safetensors; give the file the .safetensors "
                         "extension (load_model and -m read it by that name)")


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
    if (da.arch, da.kwargs, da.code) != (db.arch, db.kwargs, db.code):
        raise CheckpointError(f"cannot interpolate {da.arch}({da.kwargs}) with {db.arch}({db.kwargs}): "
                              "the architectures differ")
    sa, sb = _weights(da), _weights(db)
    if {k: v.shape for k, v in sa.items()} != {k: v.shape for k, v in sb.items()}:
        raise CheckpointError(f"cannot interpolate two {da.arch} networks of different sizes")
    mixed = {k: ((1 - alpha) * sa[k].double() + alpha * sb[k].double()).to(sa[k].dtype)
             if sa[k].is_floating_point() else sa[k] for k in sa}
    if da.code != "superres":
        mixed_desc = _spandrel(mixed, "<interpolated>")
    else:
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
