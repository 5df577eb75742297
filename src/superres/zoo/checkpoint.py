"""Reading checkpoints safely: everyone's layouts in, plain state dicts out.

``.pth/.pt/.ckpt`` go through ``torch.load(weights_only=True)``: a pickle that would run code is
refused. ``.safetensors`` carry no code at all. Wrappers are unwrapped: BasicSR's ``params_ema``
(preferred) / ``params``, ``state_dict`` / ``model``, MMagic's ``generator_ema.`` / ``generator.``
prefixes (EMA preferred), and DataParallel's ``module.``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
from pathlib import Path

import torch

from superres.errors import SuperresError

StateDict = dict[str, torch.Tensor]

# the EMA generator first, as the official code exports it (``ema``: superres's own training checkpoints)
_WRAPPER_KEYS = ("params_ema", "ema", "params", "state_dict", "model", "net_g", "generator")
_PREFIXES = ("generator_ema.", "generator.")
_MMAGIC_PARTS = ("generator", "generator_ema", "discriminator", "discriminator_ema", "data_preprocessor")


class CheckpointError(SuperresError):
    """A checkpoint that cannot be read or matched to an architecture."""


def read_checkpoint(path: str | os.PathLike) -> tuple[StateDict, dict[str, str]]:
    """(state dict, metadata) of a ``.pth/.pt/.ckpt`` or ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
        return unwrap_state_dict(state, path), metadata
    obj = load_torch_file(path)
    return unwrap_state_dict(obj, path), {}


def load_torch_file(path: Path) -> object:
    """``torch.load(weights_only=True)`` with its failures as one line that says what the file is: a
    checkpoint with code or non-tensor objects in it (refused), a damaged checkpoint, or no checkpoint at all."""
    import warnings

    if not _torch_format(path):
        raise torch_load_error(path, None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the unpickler's protocol chatter
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise torch_load_error(path, e) from None


def _torch_format(path: Path) -> bool:
    """A zip archive, as torch.save writes, or a pickle as it wrote before PyTorch 1.6 (protocol 2 or later:
    0x80 first)."""
    import zipfile

    with _file_errors(path), open(path, "rb") as f:
        head = f.read(1)
    return head == b"\x80" or zipfile.is_zipfile(path)


def torch_load_error(path: Path, e: Exception | None) -> CheckpointError:
    """The one-line error for ``torch.load(path, weights_only=True)`` failing with ``e``: a file with code or
    objects that are not plain tensors in it (refused: PyTorch's unpickler runs none of it), a damaged
    checkpoint, or no checkpoint at all (``e`` None: not even its format)."""
    import zipfile

    if e is None or not _torch_format(path):
        return CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive as torch.save writes, "
                               "nor a pickle)")
    is_zip = zipfile.is_zipfile(path)
    if isinstance(e, pickle.UnpicklingError):
        imports = _pickle_imports(path, is_zip)
        if imports:
            return CheckpointError(f"{path}: refused: its pickle imports {', '.join(imports[:3])}: code or objects "
                                   "that are not plain tensors, so it was not loaded")
        operand = re.search(r"Unsupported operand \d+", str(e))
        return CheckpointError(f"{path}: not a readable PyTorch checkpoint (a damaged or foreign pickle"
                               f"{': ' + operand.group(0) if operand else ''})")
    # zip or pickle damage surfaces as many exception types
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    kind = "a damaged zip archive" if is_zip else "a damaged pickle"
    return CheckpointError(f"{path}: not a readable PyTorch checkpoint ({kind}: {first[:120]})")


_SAFE_IMPORTS = ("torch.", "collections.OrderedDict", "_codecs.encode", "numpy.")


def _pickle_imports(path: Path, is_zip: bool) -> list[str]:
    """What a pickle imports that a tensor file does not need, read from its opcodes without running
    it (``pickletools``); empty for a file that is not a pickle at all."""
    import pickletools
    import zipfile

    found, strings = [], []
    try:
        if is_zip:
            with zipfile.ZipFile(path) as z:
                name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                data = z.read(name) if name else b""
        else:
            data = path.read_bytes()
        for op, arg, _ in pickletools.genops(data):
            if isinstance(arg, str):
                strings.append(arg)
            if op.name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # not a pickle (random bytes, a damaged archive): nothing it would import
        return []
    return [name for name in dict.fromkeys(found) if not name.startswith(_SAFE_IMPORTS)]


@contextlib.contextmanager
def _file_errors(path: Path):
    try:
        yield
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from None


def unwrap_state_dict(obj: object, path: str | os.PathLike = "<state dict>") -> StateDict:
    """Find the generator's weights inside a training checkpoint and normalise key prefixes."""
    while isinstance(obj, dict) and not _is_state_dict(obj):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            raise CheckpointError(f"{path}: no weights found (top-level keys: {', '.join(map(str, list(obj)[:8]))})")
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: no weights found")
    # Plain numbers among the tensors are markers (Real-CUGAN's official pro models carry "pro": 1): kept for
    # the layout converters (superres.zoo.detect.normalize_layout), which turn them into tensors or leave them
    # to be dropped.
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor | bool | int | float)}
    for prefix in _PREFIXES if _is_mmagic(state) else ():  # keep the EMA generator if there is one, drop the rest
        chosen = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if chosen:
            state = chosen
            break
    if "n_averaged" in state and any(k.startswith("module.") for k in state):
        del state["n_averaged"]  # torch.optim.swa_utils.AveragedModel (an EMA): its count, then the network
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _is_mmagic(state: StateDict) -> bool:
    """Every key under one of MMagic's model parts (``generator.``, ``discriminator.``, ``*_loss.``...):
    a network whose own submodule is called ``generator`` (CodeFormer's VQGAN decoder) is not unwrapped."""
    tops = {k.split(".", 1)[0] for k in state}
    return all(top in _MMAGIC_PARTS or top.endswith("_loss") for top in tops)


def _is_state_dict(obj: dict) -> bool:
    """Tensors (and plain-number markers), not a training checkpoint that holds state dicts among tensors."""
    return bool(obj) and any(isinstance(v, torch.Tensor) for v in obj.values()) and \
        not any(isinstance(v, dict) for v in obj.values())


def save_state_dict(path: str | os.PathLike, state: StateDict, metadata: dict[str, object]) -> None:
    """Write safetensors atomically; metadata values are stored as JSON strings."""
    from safetensors.torch import save

    from superres.io.files import atomic_write

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    atomic_write(path, save(tensors, metadata=meta))
