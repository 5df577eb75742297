"""File-system helpers: atomic writes and image discovery."""

from __future__ import annotations

import glob
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from superres.errors import SuperresError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"})


def temp_beside(path: Path) -> tuple[int, Path]:
    """An open temporary file (fd, path) in ``path``'s folder, to be renamed onto ``path`` when complete.

    Its name, ``.NAME.PID.RANDOM.tmp``, tells which process writes it (:func:`remove_stale_temps`)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent or ".")
    except OSError as e:
        raise SuperresError(f"{path}: cannot write: {e.strerror or e}") from None
    return fd, Path(tmp)


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete the temporary files of :func:`temp_beside` for ``path`` left by processes that are gone
    (killed with SIGKILL, or a power cut); a process still writing keeps its own. Returns those deleted."""
    removed = []
    prefix = f".{path.name}."
    for tmp in (path.parent or Path(".")).glob(f"{glob.escape(prefix)}*.tmp"):
        pid = tmp.name[len(prefix):].split(".")[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


# the name temp_beside gives: .NAME.PID.RANDOM.tmp, RANDOM being mkstemp's 8 characters
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[a-z0-9_]{8}\.tmp")


def remove_stale_temps_in(folder: Path) -> list[Path]:
    """Delete the temporary files of :func:`temp_beside` in ``folder`` (whatever file they were for) whose
    writing process is gone, in one listing of the folder; other files, and those of live processes, stay.
    Returns those deleted; a folder that does not exist has none."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.fullmatch(entry.name)
        if not match or _alive(int(match["pid"])):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file or folder: the same path once resolved (symbolic links followed),
    or the same inode (hard links)."""
    try:
        if Path(a).resolve() == Path(b).resolve():
            return True
    except (OSError, RuntimeError):  # a symbolic link loop
        return False
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: no process can have that number
        return False
    except (PermissionError, OSError):
        return True  # someone else's process: leave its file alone
    return True


def publish(tmp: Path, path: Path) -> None:
    """Rename a finished temporary file onto ``path``, with the permissions a new file would get
    (mkstemp makes 0600 files)."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    A reader (or a re-run after an interruption) sees either the old file or the complete new
    one, never a truncated file.
    """
    path = Path(path)
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise SuperresError(f"{path}: cannot write: {e.strerror or e}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """The image files in ``folder`` (by extension, sorted by path); hidden files are skipped."""
    return scan_folder(folder, recursive)[0]


def scan_folder(folder: str | os.PathLike, recursive: bool = False) -> tuple[list[Path], list[Path]]:
    """(image files, other files) in ``folder``, each sorted by path: images by extension, the others
    (GIFs, text...) for the caller to count as skipped. Hidden files are in neither."""
    folder = Path(folder)
    if not folder.exists():
        raise SuperresError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise SuperresError(f"{folder}: not a folder")
    try:
        entries: Iterable[Path] = folder.rglob("*") if recursive else folder.iterdir()
        files = sorted(p for p in entries if not p.name.startswith(".") and p.is_file())
    except PermissionError as e:
        raise SuperresError(f"{e.filename or folder}: permission denied") from None
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    return images, [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]


def describe_skipped(folder: Path, others: list[Path]) -> str:
    """One line for the files of a folder that are not images superres reads, counted by extension."""
    from collections import Counter

    kinds = Counter(p.suffix.lower() or "(no extension)" for p in others)
    listing = ", ".join(f"{n} {ext}" for ext, n in kinds.most_common())
    return (f"{folder}: {len(others)} file(s) skipped, not in a format superres reads ({listing}; it reads "
            f"{' '.join(sorted(IMAGE_EXTENSIONS))})")


def require_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """:func:`list_images`, where a folder without images is an error naming it."""
    files = list_images(folder, recursive)
    if not files:
        raise SuperresError(f"{folder}: no images found (looked for .png .jpg .jpeg .webp .tif .tiff .bmp)")
    return files
