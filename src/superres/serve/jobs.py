"""The server's job queue: one worker thread per device runs the jobs in the order they came, reusing the
loaded models; progress is kept per job, counted within a network pass too (one large image is one pass),
and cancellation is checked there as well: a cancelled job stops within a fraction of a second.

Nothing here knows about HTTP: the web app (:mod:`superres.serve.app`) submits, watches and cancels.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from superres.errors import SuperresError
from superres.runner import progress_scope
from superres.runtime import RunOptions

log = logging.getLogger("superres.serve")

TERMINAL = ("done", "failed", "cancelled")
RESULT_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}  # others come back as PNG (browsers show them)
SHUTTING_DOWN = "the server is shutting down"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_PREFIX = "superres-serve-"
_WORKDIR = re.compile(re.escape(_PREFIX) + r"[0-9]+-[A-Za-z0-9_]+")  # the PID, then mkdtemp's letters


class JobCancelledError(Exception):
    """Raised from a progress callback to stop the running job."""


def safe_name(name: str | None, default: str = "image") -> str:
    """A file name's last component with only [A-Za-z0-9._-] (no folders, no leading dots): for display
    and downloads only; files on disk are named by the server."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = _SAFE.sub("_", base).lstrip(".")[:100]
    return base or default


@dataclass
class Job:
    id: str
    name: str  # the client's file name, made safe
    kind: str  # "image" or "video"
    model: str
    source: Path
    folder: Path  # the job's own folder in the server's temporary folder
    outscale: float | None = None
    alpha: str = "model"
    width: int = 0
    height: int = 0
    status: str = "queued"
    done: int = 0  # tiles (frames) done
    total: int = 0
    progress: float = 0.0  # of the whole job, network passes under way included
    error: str | None = None
    result: Path | None = None
    preview: Path | None = None  # the input as an 8-bit PNG, for the page's "before" view
    out_width: int = 0
    out_height: int = 0
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    version: int = 0
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    finished_event: threading.Event = field(default_factory=threading.Event)

    @property
    def result_name(self) -> str:
        stem = Path(self.name).stem or "image"
        scale = self.outscale or (self.out_width / self.width if self.width and self.out_width else None)
        return (f"{stem}_x{scale:g}" if scale else f"{stem}_up") + (self.result.suffix if self.result else "")

    def public(self) -> dict:
        """What the API says about the job."""
        progress = 1.0 if self.status == "done" else self.progress
        return {"id": self.id, "name": self.name, "kind": self.kind, "model": self.model, "outscale": self.outscale,
                "status": self.status, "progress": round(progress, 4), "done": self.done, "total": self.total,
                "error": self.error, "width": self.width, "height": self.height,
                "out_width": self.out_width or None, "out_height": self.out_height or None,
                "created": self.created, "started": self.started, "finished": self.finished,
                "result_name": self.result_name if self.status == "done" else None}


class JobQueue:
    """Jobs run one at a time on ``options.device``, in submission order, in a worker thread.

    ``workdir``: where inputs and results live (one folder per job; the whole folder is removed by
    :meth:`close`); ``keep``: finished jobs kept (the oldest are forgotten and their files removed);
    ``models_kept``: loaded models kept for reuse (least recently used dropped first).
    """

    def __init__(self, options: RunOptions, workdir: Path, *, max_pixels: int | None, keep: int = 200,
                 models_kept: int = 2):
        self.options, self.workdir, self.max_pixels = options, workdir, max_pixels
        self.keep, self.models_kept = keep, models_kept
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._pending: queue.Queue[Job | None] = queue.Queue()
        self._models: OrderedDict[tuple, object] = OrderedDict()
        self._version = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="superres-serve-worker", daemon=True)
        self._thread.start()

    # --- the API's side ---------------------------------------------------------------------

    def new_folder(self) -> tuple[str, Path]:
        job_id = uuid.uuid4().hex
        folder = self.workdir / job_id
        folder.mkdir(parents=True)
        return job_id, folder

    def submit(self, job: Job) -> Job:
        """Queue ``job``; once :meth:`stop` was called it is cancelled at once (no worker would run it)."""
        with self._lock:
            self._jobs[job.id] = job
            self._touch(job)
            self._forget_old()
            if self._stopping:
                job.cancel_requested.set()
                self._finish(job, "cancelled", SHUTTING_DOWN)
                return job
        self._pending.put(job)
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            return self._jobs[job_id]  # KeyError: no such job

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def cancel(self, job_id: str) -> Job:
        """Stop a job: a queued one never starts, a running one stops within a fraction of a second (at the
        next layer of its network that reports progress)."""
        with self._lock:
            job = self._jobs[job_id]
            if job.status not in TERMINAL:
                job.cancel_requested.set()
                if job.status == "queued":
                    self._finish(job, "cancelled")
        return job

    def delete(self, job_id: str) -> None:
        """Cancel a job and remove its files."""
        self.cancel(job_id)
        with self._lock:
            job = self._jobs.pop(job_id)
            self._version += 1
        if job.status in TERMINAL:
            shutil.rmtree(job.folder, ignore_errors=True)
        # a running job's folder is removed by the worker once it stops

    def changes(self, since: int) -> tuple[int, list[dict]]:
        """(the current version, the jobs changed after version ``since``)."""
        with self._lock:
            return self._version, [j.public() for j in self._jobs.values() if j.version > since]

    @property
    def version(self) -> int:
        return self._version

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        """Take no more work: queued jobs are cancelled now (whoever waits for them is told at once), the
        running one within a fraction of a second. Quick and thread-safe: the server calls it on SIGTERM."""
        with self._lock:
            self._stopping = True
            for job in self._jobs.values():
                if job.status not in TERMINAL:
                    job.cancel_requested.set()
                    if job.status == "queued":
                        self._finish(job, "cancelled", SHUTTING_DOWN)

    def close(self, timeout: float = 5) -> None:
        """:meth:`stop`, wait up to ``timeout`` seconds for the running job to stop, and remove every file
        the jobs left. A job still running then (a model loading, one long tile) ends with the process: the
        worker is a daemon thread, and a folder it leaves is removed by the next server (:func:`claim_workdir`)."""
        self.stop()
        self._pending.put(None)
        self._thread.join(timeout)
        shutil.rmtree(self.workdir, ignore_errors=True)

    # --- the worker's side ------------------------------------------------------------------

    def _touch(self, job: Job) -> None:
        """Called with the lock held after a job changed."""
        self._version += 1
        job.version = self._version

    def _finish(self, job: Job, status: str, error: str | None = None) -> None:
        job.status, job.error, job.finished = status, error, time.time()
        self._touch(job)
        job.finished_event.set()

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.status in TERMINAL]
        for job in finished[:max(0, len(finished) - self.keep)]:
            del self._jobs[job.id]
            shutil.rmtree(job.folder, ignore_errors=True)

    def _work(self) -> None:
        while True:
            job = self._pending.get()
            if job is None:
                return
            with self._lock:
                if job.cancel_requested.is_set():
                    if job.status not in TERMINAL:  # whoever waits for it must hear that it ended
                        self._finish(job, "cancelled")
                    continue
                job.status, job.started = "running", time.time()
                self._touch(job)
            try:
                self._run(job)
                status, error = "done", None
            except JobCancelledError:
                status, error = "cancelled", None
            except (SuperresError, ValueError, OSError) as e:  # the client's name for the file, not the server's path
                status, error = "failed", one_line(e).replace(str(job.source), job.name)
            except Exception:
                log.exception("job %s (%s) failed", job.id, job.name)
                status, error = "failed", "internal error (see the server's log)"
            with self._lock:
                self._finish(job, status, error)
                forgotten = job.id not in self._jobs
            if forgotten or status != "done":
                for name in ("result", "partial"):
                    for f in job.folder.glob(f"{name}*"):
                        f.unlink(missing_ok=True)
                if forgotten:
                    shutil.rmtree(job.folder, ignore_errors=True)

    def _loaded(self, key: tuple, load):
        """A loaded model (or upscaler) from the cache, or ``load()`` it, dropping the least recently used."""
        if key in self._models:
            self._models.move_to_end(key)
        else:
            while len(self._models) >= self.models_kept:
                self._models.popitem(last=False)
            self._models[key] = load()
        return self._models[key]

    def _upscaler(self, model: str, alpha: str):
        from superres.infer import Upscaler

        return self._loaded(("image", model, alpha), lambda: Upscaler(model, self.options, alpha=alpha))

    def _run(self, job: Job) -> None:
        if job.kind == "video":
            self._run_video(job)
        else:
            self._run_image(job)

    def _run_image(self, job: Job) -> None:
        from superres.io import encode_image, read_samples, write_image

        img, info = read_samples(job.source, self.max_pixels)  # the file's own samples, as `superres upscale` runs them
        with self._lock:  # the size as read, EXIF orientation applied: the result's name comes from it
            job.height, job.width = img.shape[:2]
            self._touch(job)
        job.preview = job.folder / "preview.png"
        job.preview.write_bytes(encode_image(img, "PNG", info))
        upscaler = self._upscaler(job.model, job.alpha)
        progress = _Progress(self._lock, self._touch, job, upscaler.passes(img))
        with progress_scope(progress.passes):
            out = upscaler.upscale_array(img, job.outscale, progress.loop)
        del img
        if job.cancel_requested.is_set():
            raise JobCancelledError
        result = job.folder / f"result{RESULT_FORMATS.get(info.format, '.png')}"
        write_image(result, out, info)
        with self._lock:
            job.result, (job.out_height, job.out_width) = result, out.shape[:2]

    def _run_video(self, job: Job) -> None:
        from superres.infer.video import upscale_video
        from superres.zoo import MODELS, load_model

        spec = MODELS.get(job.model)
        if spec is not None and spec.video:
            model = self._loaded(("video", job.model), lambda: load_model(job.model))
        else:
            model = self._upscaler(job.model, "model").desc
        result = job.folder / "result.mp4"
        progress = _Progress(self._lock, self._touch, job)
        with progress_scope(progress.passes):
            outcome = upscale_video(job.source, result, model, outscale=job.outscale, options=self.options,
                                    progress=progress.loop)
        with self._lock:
            job.result, (job.out_width, job.out_height) = result, outcome.size


class _Progress:
    """A running job's progress from two callbacks: its loop's (tiles or frames: done of total) and the
    runner's (network passes made, the one under way counted by its share done: :func:`progress_scope`).
    Either raises :class:`JobCancelledError` once the job is cancelled; the progress never goes back.

    ``expected``: the passes the whole job makes, when known ahead (an image: its tiles); without it (a
    video) the progress is the frames done, plus the pass under way as up to one more frame.
    """

    def __init__(self, lock: threading.Lock, touch, job: Job, expected: int = 0):
        self.lock, self.touch, self.job, self.expected = lock, touch, job, expected
        self.made = self.made_at_loop = 0.0  # passes made in all, and when the loop last reported

    def loop(self, done: int, total: int | None) -> None:
        self._check()
        with self.lock:
            self.job.done, self.job.total = done, total or 0
            self.made_at_loop = self.made
            self._update()

    def passes(self, made: float) -> None:
        self._check()
        with self.lock:
            self.made = made
            self._update()

    def _check(self) -> None:
        if self.job.cancel_requested.is_set():
            raise JobCancelledError

    def _update(self) -> None:
        """With the lock held."""
        job = self.job
        if self.expected:
            share = self.made / self.expected
        elif job.total:
            share = (job.done + min(1.0, self.made - self.made_at_loop)) / job.total
        else:
            share = 0.0
        job.progress = max(job.progress, min(share, 0.999))  # 1 only once done
        self.touch(job)


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def claim_workdir(parent: Path | None = None) -> tuple[Path, int | None]:
    """A new folder for a server's files, ``superres-serve-PID-*`` in ``parent`` (default: the system's
    temporary folder), and an open descriptor of it that holds a lock on it (``flock``) until it is closed.

    First the folders of servers that died without removing theirs (SIGKILL, a power cut) are removed:
    those no process holds a lock on. The folder is locked before it gets its name, so a server starting
    at the same moment never sees it unlocked. Without ``fcntl`` (Windows) there is no lock and no cleanup.
    """
    parent = Path(parent or tempfile.gettempdir())
    try:
        import fcntl
    except ImportError:
        return Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=parent)), None
    remove_stale_workdirs(parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{_PREFIX}{os.getpid()}-", dir=parent))
    fd = os.open(staging, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # a file system without locks: the folder is removed at exit, but never by another server
        os.close(fd)
        fd = None
    return staging.rename(parent / staging.name[1:]), fd


def remove_stale_workdirs(parent: Path) -> list[Path]:
    """Remove the folders in ``parent`` named as :func:`claim_workdir` names them that no process holds a
    lock on, and that are this user's own (not links). Returns the folders removed."""
    import fcntl

    removed = []
    for folder in parent.glob(_PREFIX + "*"):
        if not _WORKDIR.fullmatch(folder.name):
            continue
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            continue
        try:
            if os.fstat(fd).st_uid != os.getuid():
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live server's (or a lock this file system cannot take)
        else:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            os.close(fd)
    if removed:
        log.info("removed %d folder(s) left by servers that did not stop cleanly", len(removed))
    return removed
