"""Training checkpoints: one file per saved iteration, written atomically, the last N kept.

A checkpoint is a plain dict of tensors and numbers (model, EMA, optimizers, schedulers, RNG
states, iteration) read back with ``torch.load(weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import torch

from superres.errors import SuperresError
from superres.io import atomic_write

_NAME = re.compile(r"^iter_(\d+)\.pt$")


def checkpoint_path(folder: Path, iteration: int) -> Path:
    return folder / f"iter_{iteration:09d}.pt"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save_checkpoint(folder: Path, iteration: int, state: dict, keep_last: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    path = checkpoint_path(folder, iteration)
    atomic_write(path, buf.getvalue())
    for _, old in list_checkpoints(folder)[:-keep_last]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict:
    """A training checkpoint, read with ``torch.load(weights_only=True)``: a file with pickled code or
    objects that are not plain tensors and numbers is refused in one line, and nothing in it runs."""
    from superres.zoo.checkpoint import CheckpointError, load_torch_file

    if not path.is_file():
        raise SuperresError(f"{path}: no such checkpoint")
    try:
        state = load_torch_file(path)
    except CheckpointError as e:
        raise SuperresError(str(e).replace("not a readable PyTorch checkpoint", "not a readable training checkpoint")
                            ) from None
    if not isinstance(state, dict) or "iteration" not in state:
        raise SuperresError(f"{path}: not a superres training checkpoint (no iteration in it)")
    return state


def find_resume(folder: Path, resume: str | None) -> Path | None:
    """``auto``: the latest checkpoint in ``folder`` (an error if there is none); else the given file."""
    if resume is None:
        return None
    if resume == "auto":
        found = list_checkpoints(folder)
        if not found:
            raise SuperresError(f"--resume: no checkpoint in {folder} to resume from (run without --resume to "
                                "start this training)")
        return found[-1][1]
    return Path(resume)
