"""Files at local paths or at fsspec URLs (``s3://bucket/key``, ``gs://bucket/key``): one interface for the
readers and writers of every command, so that workers on a cluster need no shared disk.

A local path goes through the operating system as before (atomic writes by a temporary file beside the target
and a rename). A URL goes through fsspec, imported on first use, with the file system its scheme names (s3fs
for ``s3://``, gcsfs for ``gs://``...). On object stores a single upload is atomic (an object appears whole, or
not at all: a multipart upload appears at its completion), so an output is written in one put; on other
file systems it is written under a temporary name and renamed.

Credentials and endpoints come from the standard places, never from an option of ours: for S3 the ``AWS_*``
variables, ``~/.aws`` and instance roles; an S3-compatible store (MinIO, Ceph) by ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL`` (applied here too, for s3fs releases whose botocore predates those variables), or by
fsspec's own configuration (``FSSPEC_S3_ENDPOINT_URL``, ``~/.config/fsspec/*.json``), which takes precedence.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

from superres.errors import SuperresError

Location = str | os.PathLike
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+)://")  # two letters at least: C:// is a drive
# Stores where one put is atomic: a reader sees the old object or the whole new one
_OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "memory"})
# Packages whose exceptions are a store's answers (no such bucket, no credentials, no connection)
_STORE_MODULES = frozenset({"botocore", "aiobotocore", "s3fs", "gcsfs", "google", "adlfs", "azure", "fsspec",
                            "aiohttp"})


def is_url(location: Location) -> bool:
    """Whether ``location`` is a URL for fsspec (``s3://...``); a path, or a ``file://`` URL, is local."""
    match = _SCHEME.match(os.fspath(location)) if isinstance(location, str | os.PathLike) else None
    return bool(match) and match["scheme"].lower() != "file"


def local_path(location: Location) -> Path:
    """The local path of a path or a ``file://`` URL."""
    text = os.fspath(location)
    return Path(text[len("file://"):] if text.lower().startswith("file://") else text)


def location(text: Location) -> Path | str:
    """A command-line location as the code keeps it: a :class:`Path`, or the URL as a string (``Path`` would
    fold ``s3://`` into ``s3:/``)."""
    return os.fspath(text) if is_url(text) else local_path(text)


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec file system, path within it) for a URL; a missing implementation (s3fs, gcsfs) or an unknown
    scheme is one line saying so."""
    try:
        import fsspec
    except ImportError:
        raise SuperresError(f"{url}: URLs need fsspec: pip install \"superres[ray]\"") from None
    scheme = url.split("://", 1)[0].lower()
    try:
        return fsspec.core.url_to_fs(url, **_endpoint(scheme, fsspec.config.conf))
    except ImportError as e:
        raise SuperresError(f"{url}: {e} (pip install \"superres[ray]\" brings s3fs)") from None
    except ValueError as e:
        raise SuperresError(f"{url}: {e}") from None


def _endpoint(scheme: str, conf: dict) -> dict:
    """The S3 endpoint from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` where fsspec's configuration
    names none. botocore reads these variables itself from 1.31 on; older ones (as s3fs 2023.x pins) do not."""
    if scheme not in ("s3", "s3a"):
        return {}
    given = conf.get(scheme, {})
    if "endpoint_url" in given or "endpoint_url" in given.get("client_kwargs", {}):
        return {}
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return {}
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return {"endpoint_url": url} if url else {}


@contextlib.contextmanager
def _errors(where: Location, doing: str = "read") -> Iterator[None]:
    """A store's errors (missing key, denied access, no connection, no credentials) as one line naming
    ``where``; each raised as an :class:`OSError` subclass or :class:`SuperresError`."""
    try:
        yield
    except SuperresError:
        raise
    except FileNotFoundError:
        raise SuperresError(f"{where}: no such file") from None
    except PermissionError as e:
        raise SuperresError(f"{where}: cannot {doing}: permission denied ({_reason(e)})") from None
    except Exception as e:  # OSError, or botocore's ClientError, EndpointConnectionError, NoCredentialsError...
        if not isinstance(e, OSError) and type(e).__module__.split(".")[0] not in _STORE_MODULES:
            raise  # a bug, not the store's answer
        raise SuperresError(f"{where}: cannot {doing}: {_reason(e)}") from None


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def exists(where: Location) -> bool:
    """Whether a file or folder is at ``where``."""
    if not is_url(where):
        return local_path(where).exists()
    fs, path = filesystem(os.fspath(where))
    with _errors(where):
        return fs.exists(path)


def isdir(where: Location) -> bool:
    """Whether ``where`` is a folder (on an object store: a prefix with objects under it)."""
    if not is_url(where):
        return local_path(where).is_dir()
    fs, path = filesystem(os.fspath(where))
    with _errors(where):
        return fs.isdir(path)


def isfile(where: Location) -> bool:
    if not is_url(where):
        return local_path(where).is_file()
    fs, path = filesystem(os.fspath(where))
    with _errors(where):
        return fs.isfile(path)


def join(base: Location, relative: str | PurePosixPath) -> Path | str:
    """``base`` / ``relative`` (a relative path with ``/`` separators), a Path or a URL as ``base`` is."""
    if not is_url(base):
        return local_path(base) / relative
    rel = PurePosixPath(relative).as_posix()
    return os.fspath(base).rstrip("/") + ("" if rel == "." else "/" + rel)


def name(where: Location) -> str:
    """The last part of a path or URL: the file name."""
    return PurePosixPath(os.fspath(where).rstrip("/")).name if is_url(where) else local_path(where).name


def parent(where: Location) -> Path | str:
    """The folder of a path or URL."""
    if not is_url(where):
        return local_path(where).parent
    text = os.fspath(where).rstrip("/")
    return text.rsplit("/", 1)[0] if text.count("/") > 2 else text


def key(where: Location) -> str:
    """One text for one file: a local path resolved (symbolic links followed), a URL with its scheme in lower
    case and without a trailing ``/``. For finding two inputs that are one file, or two outputs that collide."""
    if not is_url(where):
        return str(local_path(where).resolve())
    scheme, rest = os.fspath(where).split("://", 1)
    return f"{scheme.lower()}://{re.sub('/+', '/', rest).rstrip('/')}"


def relative(file: Location, root: Location) -> PurePosixPath:
    """``file``'s path under the folder ``root``, with ``/`` separators."""
    if not is_url(file):
        return PurePosixPath(local_path(file).relative_to(local_path(root)).as_posix())
    return PurePosixPath(key(file)[len(key(root)):].lstrip("/"))


def list_files(folder: Location, recursive: bool = False, exts: Iterable[str] | None = None) -> list[Path | str]:
    """The files in ``folder`` (sub-folders too with ``recursive``) whose extension (lower case, with its dot)
    is in ``exts`` (any without), sorted; hidden files (``.name``) are left out, as temporary files are."""
    wanted = None if exts is None else {e.lower() for e in exts}
    return [f for f in _scan(folder, recursive)
            if wanted is None or PurePosixPath(name(f)).suffix.lower() in wanted]


def _scan(folder: Location, recursive: bool) -> list[Path | str]:
    if not is_url(folder):
        from superres.io.files import scan_folder

        images, others = scan_folder(local_path(folder), recursive)
        return sorted(images + others)
    fs, root = filesystem(os.fspath(folder))
    with _errors(folder):
        if not fs.isdir(root):
            raise SuperresError(f"{folder}: {'not a folder' if fs.exists(root) else 'no such folder'}")
        found = fs.find(root, maxdepth=None if recursive else 1, withdirs=False)
    base = os.fspath(folder).rstrip("/")
    strip = root.rstrip("/")
    files = [base + "/" + p[len(strip):].lstrip("/") for p in found if p.startswith(strip)]
    return sorted(f for f in files if not PurePosixPath(f).name.startswith("."))


def existing(locations: Iterable[Location]) -> set[Path | str]:
    """Those of ``locations`` where a file is: for URLs, one listing per folder rather than one request per
    file (a million outputs on S3 are a thousand listings, not a million HEAD requests)."""
    found: set[Path | str] = set()
    by_folder: dict[str, list[str]] = {}
    for where in locations:
        if is_url(where):
            by_folder.setdefault(os.fspath(parent(where)), []).append(os.fspath(where))
        elif local_path(where).exists():
            found.add(where)
    for folder, files in by_folder.items():
        fs, root = filesystem(folder)
        with _errors(folder):
            try:
                listed = {p.rstrip("/") for p in fs.ls(root, detail=False, refresh=True)}
            except FileNotFoundError:
                continue
        found.update(f for f in files if fs._strip_protocol(f).rstrip("/") in listed)
    return found


def read_bytes(where: Location) -> bytes:
    """The whole file at a path or URL."""
    if not is_url(where):
        with _errors(where):
            return local_path(where).read_bytes()
    fs, path = filesystem(os.fspath(where))
    with _errors(where):
        return fs.cat_file(path)


@contextlib.contextmanager
def open_input(where: Location) -> Iterator[IO[bytes]]:
    """A file at a path or URL open for reading (binary; seekable: fsspec reads ranges as they are asked for)."""
    if not is_url(where):
        with _errors(where), open(local_path(where), "rb") as f:
            yield f
        return
    fs, path = filesystem(os.fspath(where))
    with _errors(where), fs.open(path, "rb") as f:
        yield f


@contextlib.contextmanager
def local_copy(where: Location) -> Iterator[Path]:
    """A local file with the contents of ``where``, for readers that need a path (image decoders that look at
    the file, video demuxers): the path itself, or a download into a temporary folder with the same file name,
    removed afterwards."""
    if not is_url(where):
        yield local_path(where)
        return
    fs, path = filesystem(os.fspath(where))
    with tempfile.TemporaryDirectory(prefix="superres-in-") as folder:
        copy = Path(folder) / (name(where) or "input")
        with _errors(where):
            fs.get_file(path, str(copy))
        yield copy


def makedirs(folder: Location) -> None:
    """Create a folder and its parents where the store has folders (not on object stores, whose "folders"
    are key prefixes: nothing to create, and no bucket is ever created here)."""
    if not is_url(folder):
        try:
            local_path(folder).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SuperresError(f"{folder}: cannot create the output folder: {e.strerror or e}") from None
        return
    fs, path = filesystem(os.fspath(folder))
    if _protocol(fs) in _OBJECT_STORES:
        return
    with _errors(folder, "create the folder"):
        fs.makedirs(path, exist_ok=True)


def _protocol(fs: Any) -> str:
    protocol = fs.protocol
    return (protocol if isinstance(protocol, str) else protocol[0]).lower()


def write_bytes_atomic(where: Location, data: bytes) -> None:
    """Write ``data`` at a path or URL so that a reader sees the old file or the whole new one, never a part:
    a temporary file and a rename locally, one put on an object store, a temporary name and a move elsewhere."""
    if not is_url(where):
        from superres.io.files import atomic_write

        atomic_write(local_path(where), data)
        return
    fs, path = filesystem(os.fspath(where))
    with _errors(where, "write"):
        if _protocol(fs) in _OBJECT_STORES:
            fs.pipe_file(path, data)
        else:
            tmp = _temp_name(path)
            fs.pipe_file(tmp, data)
            fs.mv(tmp, path)


def atomic_put(local_file: Location, where: Location) -> None:
    """Publish a finished local file at a path or URL, atomically as :func:`write_bytes_atomic` does (the
    local file stays: the caller removes it). For outputs made on local disk first, such as video files."""
    if not is_url(where):
        from superres.io.files import publish, temp_beside

        target = local_path(where)
        fd, tmp = temp_beside(target)
        os.close(fd)
        try:
            with _errors(where, "write"):
                shutil.copyfile(local_path(local_file), tmp)
            publish(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return
    fs, path = filesystem(os.fspath(where))
    with _errors(where, "write"):
        if _protocol(fs) in _OBJECT_STORES:
            fs.put_file(os.fspath(local_file), path)
        else:
            tmp = _temp_name(path)
            fs.put_file(os.fspath(local_file), tmp)
            fs.mv(tmp, path)


@contextlib.contextmanager
def staged_output(where: Location, suffix: str = "") -> Iterator[Path]:
    """A local path to write an output to (an encoder that takes a file name), published at ``where`` when the
    block ends without an error and removed otherwise. Locally it is a temporary file beside the target, renamed
    onto it (no copy); for a URL, a temporary file uploaded by :func:`atomic_put`."""
    if not is_url(where):
        from superres.io.files import publish, temp_beside

        target = local_path(where)
        fd, tmp = temp_beside(target)
        os.close(fd)
        try:
            yield tmp
            publish(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return
    fd, tmp_name = tempfile.mkstemp(prefix="superres-out-", suffix=suffix or PurePosixPath(name(where)).suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        atomic_put(tmp, where)
    finally:
        tmp.unlink(missing_ok=True)


def _temp_name(path: str) -> str:
    folder, _, base = path.rpartition("/")
    return f"{folder}/.{base}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
