"""Executors: where the work units of a long job run, in this process or on Ray actors across a cluster.

A job is a plan of independent **work units** (docs/cluster.md; DESIGN.md, "Work units"). A unit has a
``key`` (unique in the plan: it names the unit in messages) and three steps, so that an executor can overlap
one unit's reading and writing with another's network passes:

- ``load()``: input only (read and decode a file, from a path or a URL), no model;
- ``compute(engine, loaded)``: the device step, one unit at a time per engine;
- ``store(result)``: write the output atomically (a reader, or a re-run, sees it whole or not at all) and
  return what the caller wants to know of it (picklable).

A unit whose input or output is bad raises one of :data:`UNIT_ERRORS` with a one-line message: it is reported
and the others go on. Anything else is a bug and stops the run. The engine (a loaded model) is made once per
worker by a picklable factory, ``make_engine()``; the units never know which executor runs them, nor does the
runner. A video segment is a unit like a file of a folder: its ``compute`` decodes, upscales and encodes into a
staged local file, its ``store`` publishes it with :func:`superres.io.storage.atomic_put`.

:class:`LocalExecutor` runs units in this process (decode and encode in threads beside the network, as
``superres upscale`` does). :class:`RayExecutor` runs them on Ray actors, one per device (a GPU where the
cluster has GPUs, else one per node with the node's CPUs), each holding its engine; units are handed out as
actors free up, so a worker with the large files does fewer. A worker process that dies is restarted by Ray
on its node and its units retried there (``max_restarts``, ``max_task_retries``); the units of a node that
dies go to the other workers. ``ray`` is imported only when a :class:`RayExecutor` runs.

The image unit (:class:`ImageUnit`) and :func:`upscale_files`, the Python API for files and folders on
either executor, are at the end.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from superres.errors import SuperresError
from superres.io import storage
from superres.io.image import DEFAULT_MAX_PIXELS

UNIT_ERRORS: tuple[type[Exception], ...] = (SuperresError, ValueError, OSError)


class WorkUnit(Protocol):
    """One independent piece of a job: see the module's docstring. Must be picklable for Ray."""

    key: str

    def load(self) -> Any: ...

    def compute(self, engine: Any, loaded: Any) -> Any: ...

    def store(self, result: Any) -> Any: ...


Done = Callable[[Any, Any], None]  # (unit, what its store returned)
Failed = Callable[[Any, str], None]  # (unit, the one-line message)


class Executor(Protocol):
    """Runs units and reports each one, done or failed, exactly once; returns (done, failed)."""

    def run(self, units: Iterable[WorkUnit], on_done: Done, on_error: Failed) -> tuple[int, int]: ...


class LocalExecutor:
    """Units in this process, one engine: ``load`` runs ahead in threads and ``store`` in a thread behind,
    while ``compute`` runs here (:func:`superres.io.pipeline.run_pipelined`)."""

    def __init__(self, make_engine: Callable[[], Any]):
        self.make_engine = make_engine
        self._engine: Any = None

    @property
    def engine(self) -> Any:
        """The engine, made on first use and kept for later runs."""
        if self._engine is None:
            self._engine = self.make_engine()
        return self._engine

    def run(self, units: Iterable[WorkUnit], on_done: Done, on_error: Failed) -> tuple[int, int]:
        from superres.io.pipeline import run_pipelined

        engine = self.engine

        def store(unit: WorkUnit, result: Any) -> None:
            on_done(unit, unit.store(result))

        return run_pipelined(units, lambda unit: unit.load(), lambda unit, loaded: unit.compute(engine, loaded),
                             store, lambda unit, e: on_error(unit, str(e)), UNIT_ERRORS)


@dataclass(frozen=True)
class WorkerInfo:
    """A Ray worker once ready: its node (address and id), process, device and what its engine says of itself."""

    address: str
    node: str
    pid: int
    device: str
    summary: str = ""

    def __str__(self) -> str:
        return f"{self.address}, {self.device}" + (f" ({self.summary})" if self.summary else "")


class _Worker:
    """What a Ray actor holds: the engine, made once, and a lock so that one unit at a time computes while
    the actor's other threads load and store (the actor runs ``max_concurrency`` calls at once)."""

    def __init__(self, make_engine: Callable[[], Any]):
        self.lock = threading.Lock()
        self.engine, self.broken = None, None
        try:
            self.engine = make_engine()
        except UNIT_ERRORS as e:  # said by ready(), once, rather than by every call as a dead actor
            self.broken = str(e)

    def ready(self) -> tuple[str | None, WorkerInfo]:
        """(the engine's error or None, where this worker runs and how)."""
        import ray

        context = ray.get_runtime_context()
        gpus = context.get_accelerator_ids().get("GPU", [])
        cpus = context.get_assigned_resources().get("CPU", 0)
        device = f"GPU {','.join(map(str, gpus))}" if gpus else f"{cpus:g} CPUs"
        describe = getattr(self.engine, "summary", None)
        return self.broken, WorkerInfo(ray.util.get_node_ip_address(), context.get_node_id(), os.getpid(), device,
                                       describe() if describe else "")

    def close(self) -> None:
        """Let the engine remove what it keeps on this node (a downloaded source, a folder of parts), where it
        has a ``close`` method."""
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()

    def run(self, unit: WorkUnit) -> tuple[bool, Any]:
        """(True, what ``store`` returned) or (False, the unit's one-line error): a bad input is an answer,
        not a failure of the task, so Ray neither retries it nor prints a traceback."""
        try:
            loaded = unit.load()
            with self.lock:
                result = unit.compute(self.engine, loaded)
            del loaded
            return True, unit.store(result)
        except UNIT_ERRORS as e:
            return False, str(e)


@dataclass
class _Slot:
    """A worker as the driver sees it: its actor, node, and the units it holds."""

    actor: Any
    node: str
    info: WorkerInfo | None = None
    ready: bool = False
    lost: bool = False
    units: dict = field(default_factory=dict)  # ObjectRef -> unit


def connect(address: str | None = "auto") -> bool:
    """Connect this process to Ray: ``auto`` (or None) a cluster already running (``ray start``, or
    ``RAY_ADDRESS``) or else a new one on this machine; an address (``HOST:PORT``, ``ray://HOST:PORT``) that
    cluster. True where this call connected (the caller then disconnects); False where already connected."""
    try:
        import ray
    except ImportError:
        raise SuperresError("--ray needs Ray: pip install \"superres[ray]\"") from None
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "log_to_driver": True}
    try:
        if address in (None, "", "auto"):
            try:
                ray.init(address="auto", **quiet)
            except ConnectionError:
                ray.init(include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise SuperresError(f"--ray {address}: cannot connect: {' '.join(str(e).split())}") from None
    return True


def worker_slots(nodes: list[dict]) -> list[dict]:
    """Where the workers go, from ``ray.nodes()``: one per GPU where the cluster has GPUs (each with a CPU
    where its node has as many CPUs as GPUs), else one per node holding all its CPUs. Each is a dict of
    ``node`` (its id), ``num_cpus`` and ``num_gpus``, the actor's resource request."""
    alive = [n for n in nodes if n.get("Alive")]
    has_gpus = any(n["Resources"].get("GPU", 0) >= 1 for n in alive)
    slots = []
    for n in alive:
        cpus, gpus = n["Resources"].get("CPU", 0), int(n["Resources"].get("GPU", 0))
        if has_gpus:
            slots += [{"node": n["NodeID"], "num_cpus": 1 if cpus >= gpus else 0, "num_gpus": 1}] * gpus
        elif cpus >= 1:
            slots.append({"node": n["NodeID"], "num_cpus": int(cpus), "num_gpus": 0})
    return slots


class RayExecutor:
    """Units on Ray actors, one per device (:func:`worker_slots`), each with its engine made once.

    ``address``: as :func:`connect`; ``concurrency``: units held by each worker at once (one computing, the
    others loading or storing); ``max_restarts`` / ``max_task_retries``: Ray's restarts of a worker process
    that dies, and retries of its units on the restarted one; ``max_losses``: workers a unit may be lost with
    (its node gone, or its worker out of restarts) before it is reported as failed rather than moved again
    (a unit that kills every worker must not take the cluster down); ``poll``: seconds between looks at the
    nodes; ``on_worker``: called with each worker's :class:`WorkerInfo` when it is ready; ``on_warning``: with a
    line for the user when a worker is lost with units (they go to the others) or when no worker has started
    after ``start_warning`` seconds (the cluster may have no free CPU or GPU).
    """

    def __init__(self, make_engine: Callable[[], Any], address: str | None = "auto", *, concurrency: int = 3,
                 max_restarts: int = 2, max_task_retries: int = 2, max_losses: int = 2, poll: float = 0.5,
                 on_worker: Callable[[WorkerInfo], None] | None = None,
                 on_warning: Callable[[str], None] | None = None, start_warning: float = 60.0):
        self.make_engine, self.address, self.concurrency = make_engine, address, concurrency
        self.max_restarts, self.max_task_retries, self.max_losses = max_restarts, max_task_retries, max_losses
        self.poll, self.on_worker, self.on_warning, self.start_warning = poll, on_worker, on_warning, start_warning

    def run(self, units: Iterable[WorkUnit], on_done: Done, on_error: Failed) -> tuple[int, int]:
        import ray

        connected = connect(self.address)
        slots: list[_Slot] = []
        try:
            slots = self._start(ray)
            return self._schedule(ray, slots, deque(units), on_done, on_error)
        finally:
            _stop(ray, slots)
            if connected:
                ray.shutdown()

    def _start(self, ray) -> list[_Slot]:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        worker = ray.remote(_Worker)
        slots = []
        for slot in worker_slots(ray.nodes()):
            actor = worker.options(
                num_cpus=slot["num_cpus"], num_gpus=slot["num_gpus"], max_concurrency=self.concurrency,
                max_restarts=self.max_restarts, max_task_retries=self.max_task_retries,
                # a worker stays on its node: a node that dies takes its workers, and the driver moves their units
                scheduling_strategy=NodeAffinitySchedulingStrategy(slot["node"], soft=False),
            ).remote(self.make_engine)
            slots.append(_Slot(actor, slot["node"]))
        if not slots:
            raise SuperresError("the Ray cluster has no node with a CPU or a GPU to run on")
        return slots

    def _schedule(self, ray, slots: list[_Slot], pending: deque, on_done: Done, on_error: Failed) -> tuple[int, int]:
        bug, lost_errors = ray.exceptions.RayTaskError, ray.exceptions.RayError  # lost: the actor died, or its node
        # a worker whose node is gone cannot be restarted there (Ray 2.4x and later say so with this error)
        unschedulable = getattr(ray.exceptions, "ActorUnschedulableError", ())
        done = failed = 0
        losses: dict[str, int] = {}
        starting = {slot.actor.ready.remote(): slot for slot in slots}
        broken: list[str] = []
        next_look = time.monotonic() + self.poll
        slow_start = time.monotonic() + self.start_warning

        def lose(slot: _Slot, why: str) -> None:
            """A worker gone for good: its units go back to the front of the queue, or fail if lost too often."""
            nonlocal failed
            slot.lost = True
            ray.kill(slot.actor, no_restart=True)
            if slot.units and self.on_warning:
                where = f"{slot.info.address}, {slot.info.device}" if slot.info else f"node {slot.node}"
                self.on_warning(f"the worker on {where} was lost ({why}); its {len(slot.units)} unit(s) go to the "
                             "other workers")
            for unit in reversed(list(slot.units.values())):
                losses[unit.key] = losses.get(unit.key, 0) + 1
                if losses[unit.key] > self.max_losses:
                    on_error(unit, f"{unit.key}: its worker died {losses[unit.key]} times; not tried again")
                    failed += 1
                else:
                    pending.appendleft(unit)
            slot.units.clear()

        while pending or any(slot.units for slot in slots):
            for slot in slots:
                while slot.ready and not slot.lost and pending and len(slot.units) < self.concurrency:
                    unit = pending.popleft()
                    slot.units[slot.actor.run.remote(unit)] = unit
            if not any(not slot.lost for slot in slots):
                if broken and not done + failed:  # no worker could load the model: say why, once
                    raise SuperresError(broken[0])
                reason = broken[0] if broken else "every worker was lost"
                for unit in pending:
                    on_error(unit, f"{unit.key}: not done: {reason}")
                failed += len(pending)
                pending.clear()
                break
            refs = [*starting, *(ref for slot in slots for ref in slot.units)]
            ready, _ = ray.wait(refs, num_returns=1, timeout=self.poll)
            if ready:  # and all the others that are done by now
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in ready:
                if ref in starting:
                    slot = starting.pop(ref)
                    if slot.lost:  # its node died before it started
                        continue
                    try:
                        error, slot.info = ray.get(ref)
                    except bug:
                        raise
                    except lost_errors as e:
                        error = f"a worker could not start: {_first_line(e)}"
                    if error is not None:
                        broken.append(error)
                        lose(slot, "it could not start")
                    else:
                        slot.ready = True
                        if self.on_worker:
                            self.on_worker(slot.info)
                    continue
                slot = next((s for s in slots if ref in s.units), None)
                if slot is None:  # its worker was lost by an earlier ref of this batch: the unit is queued again
                    continue
                unit = slot.units.pop(ref)
                try:
                    ok, value = ray.get(ref)
                except bug as e:
                    raise e.as_instanceof_cause() from None  # a bug in a unit: stop, as a local run does
                except lost_errors as e:
                    slot.units[ref] = unit
                    lose(slot, "its node died" if isinstance(e, unschedulable) else _first_line(e))
                    continue
                if ok:
                    on_done(unit, value)
                    done += 1
                else:
                    on_error(unit, value)
                    failed += 1
            if slow_start and time.monotonic() >= slow_start and not any(slot.ready for slot in slots):
                slow_start = 0
                if self.on_warning:
                    self.on_warning(f"no worker has started after {self.start_warning:g} s: `ray status` shows "
                                    "whether the cluster has a free CPU or GPU for one")
            if time.monotonic() >= next_look:
                next_look = time.monotonic() + self.poll
                dead = {n["NodeID"] for n in ray.nodes() if not n.get("Alive")}
                for slot in slots:
                    if not slot.lost and slot.node in dead:
                        lose(slot, "its node died")
        return done, failed


def _stop(ray, slots: list[_Slot], wait: float = 10.0) -> None:
    """End the workers: each engine first removes what it keeps on its node (:meth:`_Worker.close`: a killed
    actor's process runs no exit handlers), then the actors are killed. Workers still starting are asked too
    (their engine may have made its folders already); a call waits for the actor's start."""
    try:
        closing = [slot.actor.close.remote() for slot in slots if not slot.lost]
        if closing:
            ray.wait(closing, num_returns=len(closing), timeout=wait)
    except ray.exceptions.RayError:  # (a worker or the session already gone)
        pass
    for slot in slots:
        try:
            ray.kill(slot.actor, no_restart=True)
        except ray.exceptions.RayError:  # (its session already gone: nothing left to stop)
            pass


def _first_line(e: BaseException) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(e).__name__


# --- images ------------------------------------------------------------------------------------------------


def image_engine(model: Any, options: Any = None, *, alpha: str = "model", max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 face_model: Any = None, faces: Any = None) -> Any:
    """The engine of :class:`ImageUnit`: an :class:`~superres.infer.image.Upscaler` (in a
    :class:`~superres.infer.faces.FaceEnhancer` with ``face_model``). Picklable through functools.partial."""
    from superres.infer.image import Upscaler

    upscaler = Upscaler(model, options, alpha=alpha, max_pixels=max_pixels)
    if face_model is None:
        return upscaler
    from superres.infer.faces import FaceEnhancer

    return FaceEnhancer(face_model, upscaler, faces)


def check_input(source: Path | str, max_pixels: int | None, scale: float | None) -> None:
    """Refuse, before the network runs, a local image file that :func:`~superres.io.read_samples` would not
    read (its pixels decode at 1/8 scale: a truncated file is found here) or whose output at ``scale`` would
    be over ``max_pixels``; one line naming ``source``."""
    from superres.infer.image import output_size
    from superres.io import check_image

    limit = max_pixels or DEFAULT_MAX_PIXELS
    _, width, height = check_image(source, limit)
    if scale:
        out_w, out_h = output_size(height, width, scale)
        if out_w * out_h > limit:
            raise SuperresError(f"{source}: the output would be {out_w}x{out_h}, over the limit of {limit} "
                                "pixels (--max-pixels raises it)")


def read_input(source: Path | str, max_pixels: int | None = None, *, check: bool = False,
               scale: float | None = None) -> tuple[Any, Any]:
    """(samples, :class:`~superres.io.ImageInfo`) of an image at a path or URL (a URL is downloaded to a
    temporary file first; errors name the URL). ``check``: :func:`check_input` first, with ``scale``."""
    from superres.io import read_samples

    with storage.local_copy(source) as path:
        try:
            if check:
                check_input(path, max_pixels, scale)
            return read_samples(path, max_pixels or DEFAULT_MAX_PIXELS)
        except SuperresError as e:
            if path == source:
                raise
            raise type(e)(str(e).replace(str(path), os.fspath(source))) from None


def write_output(target: Path | str, image: Any, info: Any, quality: int = 95) -> None:
    """Encode ``image`` as ``target``'s extension asks and write it atomically at the path or URL (its folder
    made where folders exist)."""
    from superres.io import encode_image, write_image
    from superres.io.image import image_format

    storage.makedirs(storage.parent(target))
    if not storage.is_url(target):
        write_image(target, image, info, quality=quality)
        return
    storage.write_bytes_atomic(target, encode_image(image, image_format(storage.name(target)), info, quality))


@dataclass(frozen=True)
class ImageUnit:
    """One image file: read (path or URL), upscale with the engine, write atomically (path or URL).

    ``check``: run :func:`check_input` before reading (where the caller has not, as ``superres upscale`` does
    for local files before the model loads); ``scale``: the scale that check assumes (None: no output-size
    check before the network's own)."""

    source: Path | str
    target: Path | str
    outscale: float | None = None
    quality: int = 95
    max_pixels: int | None = None
    check: bool = True
    scale: float | None = None

    @property
    def key(self) -> str:
        return os.fspath(self.source)

    def load(self) -> tuple[Any, Any]:
        return read_input(self.source, self.max_pixels, check=self.check, scale=self.scale)

    def compute(self, engine: Any, loaded: tuple[Any, Any]) -> tuple[Any, Any]:
        image, info = loaded
        return engine.upscale_array(image, self.outscale), info

    def store(self, result: tuple[Any, Any]) -> str:
        write_output(self.target, *result, quality=self.quality)
        return os.fspath(self.target)


FORMAT_EXTENSIONS = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tif": ".tif"}


def output_name(source: Path | str, relative: PurePosixPath | Path, fmt: str = "same", suffix: str = "") -> str:
    """The output's path under the output folder for ``source`` found at ``relative`` under its input folder:
    the same sub-folders and stem, ``suffix`` added, the source's extension (``same``) or ``fmt``'s."""
    ext = PurePosixPath(storage.name(source)).suffix.lower() if fmt == "same" else FORMAT_EXTENSIONS[fmt]
    rel = PurePosixPath(relative.as_posix())
    return (rel.parent / f"{rel.stem}{suffix}{ext}").as_posix()


@dataclass
class BatchResult:
    """What :func:`upscale_files` did: outputs written, skipped (they exist), and (input, message) per failure."""

    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def upscale_files(inputs: str | os.PathLike | Iterable[str | os.PathLike], output: str | os.PathLike,
                  model: Any = None, *, recursive: bool = False, suffix: str = "", format: str = "same",
                  outscale: float | None = None, options: Any = None, alpha: str = "model", quality: int = 95,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS, overwrite: bool = False, ray: str | None = None,
                  on_done: Done | None = None) -> BatchResult:
    """Upscale image files and folders (paths or fsspec URLs such as ``s3://bucket/in/``) into the folder
    ``output`` (a path or URL), named as ``superres upscale`` names them: the same sub-folders and stem,
    ``suffix``, and the source's extension or ``format``'s. Existing outputs are skipped unless ``overwrite``;
    outputs are written atomically. ``ray``: None runs here; ``"auto"`` or a cluster address runs on Ray
    (:class:`RayExecutor`), with the same outputs. ``options`` (a :class:`~superres.RunOptions`), ``alpha`` and
    ``max_pixels`` are :class:`~superres.Upscaler`'s. A bad file is recorded in ``failed`` and the others go
    on; ``on_done(unit, target)`` is called as each output is written."""
    from superres.io import IMAGE_EXTENSIONS
    from superres.zoo.pretrained import DEFAULT_MODEL

    if format not in ("same", *FORMAT_EXTENSIONS):
        raise ValueError(f"format must be 'same' or one of {', '.join(FORMAT_EXTENSIONS)}, got {format!r}")
    sources = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    claimed: dict[str, str] = {}
    jobs: list[tuple[Path | str, Path | str]] = []
    for given in map(storage.location, sources):
        if storage.isdir(given):
            files = storage.list_files(given, recursive, IMAGE_EXTENSIONS)
            found = [(f, storage.relative(f, given)) for f in files]
        elif storage.isfile(given):
            found = [(given, PurePosixPath(storage.name(given)))]
        else:
            raise SuperresError(f"{given}: no such file or folder")
        for src, rel in found:
            target = storage.join(storage.location(output), output_name(src, rel, format, suffix))
            if storage.key(target) == storage.key(src):
                raise SuperresError(f"{src}: the output {target} would overwrite the input; choose another output")
            if storage.key(target) in claimed:
                raise SuperresError(f"{src}: its output {target} is also the output of {claimed[storage.key(target)]}")
            claimed[storage.key(target)] = os.fspath(src)
            jobs.append((src, target))
    result = BatchResult()
    if not overwrite:
        there = storage.existing(target for _, target in jobs)
        result.skipped = sum(target in there for _, target in jobs)
        jobs = [(src, target) for src, target in jobs if target not in there]
    units = [ImageUnit(src, target, outscale, quality, max_pixels) for src, target in jobs]
    if not units:
        return result
    make = functools.partial(image_engine, model or DEFAULT_MODEL, options, alpha=alpha, max_pixels=max_pixels)
    executor: Executor = LocalExecutor(make) if ray is None else RayExecutor(make, ray)

    def done(unit: ImageUnit, target: str) -> None:
        if on_done:
            on_done(unit, target)

    result.done, _ = executor.run(units, done, lambda unit, message: result.failed.append((unit.key, message)))
    return result
