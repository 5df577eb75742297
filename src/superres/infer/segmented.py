"""Long videos in segments: plan them at the shots, run them here or in several processes (one per
device, or the CPU's cores shared between them), keep each finished one, and join them.

The plan and the finished segments are kept in a work folder beside the output
(:class:`~superres.infer.segments.Manifest`), so running the same command again after a crash, a kill
or Ctrl-C redoes only the unfinished segments. Video outputs: each segment is encoded into its own file
(starting on a key frame) and the files are joined without re-encoding, with the source's audio,
subtitles and metadata (:func:`~superres.io.video.join_videos`); folders of frames: each segment
writes its frames into the output folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from superres.errors import SuperresError
from superres.infer.segments import (
    SHOT_WIDTH,
    Manifest,
    ShotDetector,
    Unit,
    file_fingerprint,
    new_plan,
    plan_segments,
    unit_outputs,
)
from superres.io import storage
from superres.io.files import remove_stale_temps_in
from superres.io.video import (
    Segment,
    VideoError,
    VideoReader,
    VideoWriter,
    is_video_path,
    join_videos,
    packet_times_path,
    write_packet_times,
)
from superres.runtime import RunOptions

# A segment's frames when neither memory nor the shots say less: a unit of resuming and of sharing
# between jobs (12 s at 25 frames/s; a video network's context frames are a few percent of it).
SEGMENT_FRAMES = 300


@dataclass
class Job:
    """Everything a process needs to run segments of one video (it travels to worker processes)."""

    src: Path
    dst: Path
    work: Path
    model: object
    outscale: float | None
    options: RunOptions
    face_model: object
    face_options: object
    segment: Segment
    files: list[Path] | None  # a folder of frames
    names: list[str] | None
    pts: list[int] | None  # a video file: every frame's pts, in the stream's time base
    rate: Fraction
    time_base: Fraction
    size: tuple[int, int]
    writer: dict = field(default_factory=dict)  # codec, crf, pix_fmt, preset, sample_aspect_ratio
    # interpolation: output frames per source frame, and how the new ones are made (method, model, first)
    factor: int = 1
    interpolation: dict = field(default_factory=dict)
    cuts: list[int] = field(default_factory=list)  # the frames that start a shot (the plan's)

    @property
    def video_out(self) -> bool:
        return is_video_path(self.dst)

    @property
    def total(self) -> int:
        """Source frames in the stream (the part to upscale)."""
        return len(self.files) if self.files is not None else len(self.pts)

    def pts_at(self, index: int) -> int | None:
        """Frame ``index``'s pts; one past the last frame: where the stream ends, the last frame lasting as long
        as its predecessor (None for a stream of one frame)."""
        if self.files is not None:
            return index
        if index < len(self.pts):
            return self.pts[index]
        return 2 * self.pts[-1] - self.pts[-2] if len(self.pts) > 1 else None

    def part(self, unit: Unit) -> Path:
        return self.work / f"part{unit.index:06d}.nut"  # NUT keeps any time base and every timestamp as it is

    def frames(self, first: int, last: int) -> Iterator[tuple[np.ndarray, int | None, Fraction]]:
        """Input frames ``first``..``last - 1`` of the stream."""
        if self.files is not None:
            from superres.io import read_rgb8

            size = None
            for i in range(first, last):
                rgb = read_rgb8(self.files[i], size=size)
                size = size or (rgb.shape[1], rgb.shape[0])
                yield rgb, i, 1 / self.rate
            return
        reader = VideoReader(self.src, self.segment)
        try:
            yield from reader.read_range(self.pts[first:last])
        finally:
            reader.close()


class Worker:
    """One process's model, loaded once, and the segments it runs."""

    def __init__(self, job: Job, options: RunOptions | None = None, enhance=None):
        from superres.infer.video import video_model

        self.job = job
        self.stack = contextlib.ExitStack()  # a copy of a source at a URL, parts made for a Ray driver
        if storage.is_url(job.src):
            job = self.job = dataclasses.replace(job, src=self.stack.enter_context(storage.local_copy(job.src)))
        self.enhance = enhance or video_model(job.model, job.outscale, options or job.options, whole_clips=True)
        self.faces = None
        if job.face_model is not None:
            from superres.faces import FaceRestorer

            self.faces = FaceRestorer(job.face_model, job.face_options, options or job.options)
        self.interpolator = None
        if job.factor > 1:
            from superres.infer.interpolate import FrameInterpolator

            self.interpolator = FrameInterpolator(job.interpolation.get("method", "rife"),
                                                  job.interpolation.get("model"), options or job.options)

    def close(self) -> None:
        """Remove what this worker keeps: a local copy of a source at a URL (and what :func:`segment_engine`
        adds)."""
        self.stack.close()

    def run(self, unit: Unit, on_frame: Callable[[], None] | None = None) -> int:
        """Run ``unit``; its output is complete (a part file in place, or its frames written) when this returns."""
        from superres.infer.video import BackgroundWriter, _undo

        job = self.job
        enhance = self.faces.stream(self.enhance) if self.faces is not None else self.enhance
        encoder = source = None
        abort = lambda: None  # noqa: E731 - what an interruption undoes, from the moment there is something to undo
        skip, outputs = unit.before * job.factor, unit_outputs(unit, job.factor, job.total)
        done = 0
        try:
            if job.video_out:
                part = job.part(unit)
                writer = VideoWriter(part, job.size, job.rate * job.factor, job.time_base / job.factor,
                                     stretch=job.files is None, **job.writer)
                writer.packet_times = []
                abort = writer.discard
                encoder = BackgroundWriter(writer.write)

                def finish() -> None:
                    writer.close()
                    write_packet_times(writer, packet_times_path(part))
            else:
                from superres.io import write_image

                def write(i: int, sr: np.ndarray, pts) -> None:
                    name = job.names[pts] if job.names and job.factor == 1 else f"frame_{i:06d}"
                    write_image(job.dst / f"{name}.png", sr)

                encoder, finish = BackgroundWriter(write), lambda: None
            source, stream = self.stream(unit, enhance)
            for k, (sr, pts, tb) in enumerate(stream):
                if k < skip:
                    continue
                if job.video_out:
                    encoder.put(sr, pts, tb)
                else:
                    encoder.put(unit.start * job.factor + done, sr, pts)
                done += 1
                if on_frame is not None:
                    on_frame()
                if done == outputs:
                    break
            source.close()
            encoder.close()
        except BaseException:
            _undo(source, encoder, abort)
            raise
        finish()
        return done

    def stream(self, unit: Unit, enhance) -> tuple[Iterator, Iterator]:
        """The unit's decoding (prefetched) and its output frames, context included. Interpolating, the new
        frames after the unit's last frame need the next one: it is fed too unless a shot or the stream ends
        there; then the last frame is held until the next frame's time, as across a cut in one stream."""
        from superres.infer.video import prefetch

        job = self.job
        last, end_pts = unit.last, None
        if job.factor > 1 and unit.after == 0:
            if unit.end < job.total and unit.end not in job.cuts:
                last += 1
            else:
                end_pts = job.pts_at(unit.end)
        source = prefetch(job.frames(unit.first, last))
        if self.interpolator is None:
            return source, enhance(source)
        from superres.infer.interpolate import interpolate_frames

        def interpolated(frames: Iterator) -> Iterator:
            return interpolate_frames(frames, job.factor, interpolator=self.interpolator, end_pts=end_pts)

        if job.interpolation.get("first"):
            return source, enhance(interpolated(source))
        return source, interpolated(enhance(source))

    def run_elsewhere(self, unit: Unit) -> tuple[int, int, bytes, str]:
        """Run ``unit`` into a part file here and hand it over: (index, frames, the part's bytes, its
        timestamps), for a driver on another machine (:class:`SegmentUnit`)."""
        part = self.job.part(unit)
        frames = self.run(unit)
        times = packet_times_path(part)
        try:
            return unit.index, frames, part.read_bytes(), times.read_text()
        finally:
            part.unlink(missing_ok=True)
            times.unlink(missing_ok=True)


@dataclass
class SegmentUnit:
    """A segment as a work unit of :mod:`superres.infer.executors` (for Ray): computed on a worker, its
    encoded part sent back to the driver, which keeps it in the work folder."""

    unit: Unit

    @property
    def key(self) -> str:
        return f"segment {self.unit.index} (frames {self.unit.start}-{self.unit.end - 1})"

    def load(self) -> None:
        return None

    def compute(self, engine: Worker, loaded: None) -> tuple[int, int, bytes, str]:
        return engine.run_elsewhere(self.unit)

    def store(self, result: tuple[int, int, bytes, str]) -> tuple[int, int, bytes, str]:
        return result


def segment_engine(job: Job, options: RunOptions) -> Worker:
    """A Ray worker's engine: the model loaded once, parts made in a folder of its own (removed by
    :meth:`Worker.close`, with the worker's copy of the source)."""
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="superres-parts-"))
    try:
        worker = Worker(dataclasses.replace(job, work=work), options)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    worker.stack.callback(shutil.rmtree, work, ignore_errors=True)
    return worker


def run_on_ray(job: Job, source, units: list[Unit], address: str, options: RunOptions,
               on_done: Callable[[Unit, int], None], on_frame: Callable[[], None]) -> None:
    """Run ``units`` on Ray workers (:class:`~superres.infer.executors.RayExecutor`); each finished part is
    written into the work folder here before ``on_done``. A segment that fails stops the run."""
    import functools

    from superres.infer.executors import RayExecutor
    from superres.io.files import atomic_write

    remote = dataclasses.replace(job, src=source, work=None)
    errors: list[str] = []

    def done(segment: SegmentUnit, result: tuple[int, int, bytes, str]) -> None:
        _, frames, data, times = result
        part = job.part(segment.unit)
        atomic_write(part, data)
        atomic_write(packet_times_path(part), times.encode())
        for _ in range(frames):
            on_frame()
        on_done(segment.unit, frames)

    job.work.mkdir(parents=True, exist_ok=True)
    RayExecutor(functools.partial(segment_engine, remote, options), address).run(
        [SegmentUnit(u) for u in units], done, lambda segment, message: errors.append(message))
    if errors:
        raise VideoError(errors[0])


def temporal_context(enhance, name: str) -> int:
    """Frames of context a segment needs at each end for ``enhance`` (a frame-stream upscaler): none for
    image networks, half the window for window networks, the clip overlap for networks that take a fixed
    number of frames, and for recurrent networks the measured reach of their propagation (cached per
    set of weights, as the spatial margin is)."""
    from superres.infer.video import ClipUpscaler, WindowUpscaler

    if isinstance(enhance, WindowUpscaler):
        return enhance.half
    if not isinstance(enhance, ClipUpscaler):
        return 0
    if enhance.fixed:
        return enhance.overlap
    from superres.infer.context import cached_margin, measure_temporal_context
    from superres.zoo.pretrained import cache_dir

    return cached_margin(enhance.runner.desc.module.state_dict(),
                         lambda: measure_temporal_context(enhance, name=name), cache_dir() / "temporal_context.json")


def model_key(model) -> object:
    """What identifies the model in the manifest: its name, its file's fingerprint, or its weights' digest."""
    if isinstance(model, str | os.PathLike):
        path = Path(model)
        return {"file": str(path.resolve()), **file_fingerprint(path)} if path.is_file() else str(model)
    import hashlib

    digest = hashlib.sha256()
    module = getattr(model, "module", None)
    if module is not None:
        for k, v in sorted(module.state_dict().items()):
            digest.update(k.encode())
            digest.update(v.detach().cpu().float().numpy().tobytes())
    return {"arch": getattr(model, "arch", type(model).__name__), "weights": digest.hexdigest()[:32]}


def job_options(options: RunOptions, jobs: int | None) -> tuple[list[RunOptions], int]:
    """One RunOptions per job, their devices taken in turn from ``options.device`` (``cuda:0,cuda:1``)."""
    devices = [d.strip() for d in str(options.device).split(",") if d.strip()] or ["auto"]
    jobs = jobs or len(devices)
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    return [dataclasses.replace(options, device=devices[i % len(devices)]) for i in range(jobs)], jobs


_WORKER: Worker | None = None


def _worker_start(job: Job, options: list[RunOptions], slots, frames, threads: int) -> None:
    """A worker process: ignore Ctrl-C (the parent stops the pool), take a device, share the cores."""
    import signal

    import torch

    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    torch.set_num_threads(threads)
    _worker_start.frames = frames
    _WORKER = Worker(job, options[slots.get()])


def _die_with_parent() -> None:
    """On Linux, a worker gets SIGTERM when the process that started it dies (even by SIGKILL), instead of
    running on alone."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _worker_run(unit: Unit) -> tuple[int, int]:
    frames = _worker_start.frames
    return unit.index, _WORKER.run(unit, lambda: frames.put(1))


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_units(job: Job, units: list[Unit], jobs: int, on_done: Callable[[Unit, int], None],
              on_frame: Callable[[], None], worker: Worker | None = None,
              options: list[RunOptions] | None = None) -> None:
    """Run ``units``: here with ``worker`` (one job), or in ``jobs`` processes started with the spawn method,
    each with one of ``options`` (their devices) and, on the CPU, its share of the cores. ``on_done`` is
    called in this process as each unit finishes, in the order they finish."""
    if not units:
        return
    if jobs == 1:
        for unit in units:
            on_done(unit, worker.run(unit, on_frame))
        return
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    slots, frames = context.Queue(), context.Queue()
    for i in range(jobs):
        slots.put(i)
    cpu_jobs = sum(1 for o in options if not str(o.device).startswith(("cuda", "mps")))
    threads = max(1, cpu_count() // max(cpu_jobs, 1))
    by_index = {u.index: u for u in units}
    stop = threading.Event()

    def count_frames() -> None:
        import queue

        while not stop.is_set():
            try:
                frames.get(timeout=0.1)
            except queue.Empty:
                continue
            on_frame()

    counter = threading.Thread(target=count_frames, daemon=True)
    counter.start()
    pool = context.Pool(jobs, initializer=_worker_start, initargs=(job, options, slots, frames, threads))
    try:
        for index, written in pool.imap_unordered(_worker_run, units, chunksize=1):
            on_done(by_index[index], written)
        pool.close()
        pool.join()
    except BaseException:
        pool.terminate()
        pool.join()
        raise
    finally:
        stop.set()
        counter.join()


def scan_job(job: Job, reader: VideoReader | None, shots: bool) -> tuple[list[int] | None, list[int], int]:
    """Find the frames and the shots: (every frame's pts, or None for a folder; the cuts; the frames)."""
    detector = ShotDetector() if shots else None
    if reader is not None:
        pts = []
        for small, p in reader.scan(SHOT_WIDTH):
            if p is None:
                raise VideoError(f"{job.src}: its frames have no timestamps, so it cannot be cut into segments")
            pts.append(p)
            if detector:
                detector.add(small)
        total = len(pts)
    else:
        pts, total = None, len(job.files)
        if detector:
            for small in small_frames(job.files):
                detector.add(small)
    if total == 0:
        raise VideoError(f"{job.src}: no frames in the part to upscale")
    return pts, detector.finish() if detector else [], total


def plan_job(job: Job, reader: VideoReader | None, enhance, name: str, requested: int | None, shots: bool) -> dict:
    """Find the frames and the shots and cut the segments: at most ``requested`` frames each (default
    :func:`segment_length`). The temporal context of a video network is measured only when a shot is cut
    (once per set of weights): segments that are whole shots need none."""
    import itertools

    pts, cuts, total = scan_job(job, reader, shots)
    fed = job.factor if job.interpolation.get("first") else 1  # the network sees the interpolated frames
    pixels = _lr_pixels(job, job.outscale, enhance) * fed
    context, length = 0, segment_length(enhance, 0, pixels, requested)
    if max(b - a for a, b in itertools.pairwise([0, *cuts, total])) > length:
        context = temporal_context(enhance, name)
        length = segment_length(enhance, context, pixels, requested)
    return new_plan(plan_segments(total, cuts, length, context), pts, cuts, context, job.factor)


def small_frames(files: list[Path]) -> Iterator[np.ndarray]:
    """The frames of a folder, :data:`SHOT_WIDTH` wide, for shot detection."""
    import cv2

    from superres.io import read_rgb8

    size = None  # every frame must have the first one's size: a video has one
    for f in files:
        rgb = read_rgb8(f, size=size)
        size = size or (rgb.shape[1], rgb.shape[0])
        h, w = rgb.shape[:2]
        yield cv2.resize(rgb, (min(SHOT_WIDTH, w), max(1, round(h * min(SHOT_WIDTH, w) / w))),
                         interpolation=cv2.INTER_AREA)


def work_folder(dst: Path) -> Path:
    return dst.parent / f".{dst.name}.superres-work"


def prepare_work(dst: Path) -> None:
    """Check that the output's folder can be written (made if need be), before any work is done."""
    from superres.io.files import temp_beside

    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = temp_beside(dst)
        os.close(fd)
        probe.unlink()
    except (OSError, SuperresError) as e:
        raise VideoError(f"{dst}: cannot write beside the output ({getattr(e, 'strerror', None) or e})") from None


def finish_job(job: Job, manifest: Manifest, reader: VideoReader | None, rotation: int) -> int:
    """Join the parts (video outputs) and remove the work folder. Returns the frames written."""
    units = manifest.units()
    if job.video_out:
        frames = join_videos([job.part(u) for u in units], job.dst, copy_from=reader, segment=job.segment,
                             rotation=rotation, time_base=job.time_base / job.factor, rate=job.rate * job.factor)
    else:
        frames = sum(manifest.done.values())
    expected = sum(manifest.outputs(u) for u in units)
    if frames != expected:
        raise SuperresError(f"{job.dst}: joined {frames} frames, expected {expected}")
    shutil.rmtree(job.work, ignore_errors=True)
    return frames


def segment_length(enhance, context: int, pixels: int, requested: int | None) -> int:
    """Frames a segment holds: ``requested``, or :data:`SEGMENT_FRAMES`, or for a recurrent network that runs
    a segment whole, what its memory budget holds with the context frames."""
    if requested:
        return requested
    budget = getattr(enhance, "whole_up_to", 0)
    if budget:
        return max(1, min(SEGMENT_FRAMES, budget // pixels - 2 * context))
    return SEGMENT_FRAMES


def check_frames(manifest: Manifest, job: Job) -> None:
    """Forget finished segments whose part file has gone (a work folder tidied by hand)."""
    if job.video_out:
        parts = {i: job.part(Unit(index=i, start=0, end=0)) for i in manifest.done}
        for index in [i for i, part in parts.items() if not (part.is_file() and packet_times_path(part).is_file())]:
            del manifest.done[index]


def fraction_text(value: Fraction | float | None) -> str | None:
    return None if value is None else str(value)


def job_key(job: Job, extra: dict, source=None) -> dict:
    """The settings a manifest is valid for: source, model and every option that changes the output. A source
    at a URL (``source``; ``job.src`` is its local copy) counts by its URL, size and contents' ends."""
    from superres.infer.segments import MANIFEST_VERSION

    options = {
        "output": job.dst.suffix.lower() or "frames", "outscale": job.outscale, "start": job.segment.start,
        "end": job.segment.end, "rate": fraction_text(job.rate), "precision": job.options.precision,
        "backend": job.options.backend, "tile": job.options.tile, "tile_pad": job.options.tile_pad,
        "face_model": None if job.face_model is None else model_key(job.face_model),
        "face_options": None if job.face_options is None else repr(job.face_options),
        **{k: fraction_text(v) if isinstance(v, Fraction) else v for k, v in job.writer.items()}, **extra,
    }
    fingerprint = file_fingerprint(job.src)
    if source is not None and storage.is_url(source):
        fingerprint = {"url": str(source), **{k: v for k, v in fingerprint.items() if k != "mtime_ns"}}
    return {"version": MANIFEST_VERSION, "source": fingerprint, "model": model_key(job.model), "options": options}


def run_segmented(src: Path, dst: Path, model, enhance, *, outscale, options: RunOptions, per_job: list[RunOptions],
                  jobs: int, face_model, face_options, segment: Segment, files: list[Path] | None,
                  names: list[str] | None, rate: Fraction, time_base: Fraction, size: tuple[int, int],
                  rotation: int, writer: dict, segment_frames: int | None, shots: bool, progress,
                  log: Callable[[str], None], on_segment: Callable[[int, int, int], None] | None,
                  ray: str | None = None, work: Path | None = None, source=None, factor: int = 1,
                  interpolation: dict | None = None):
    """:func:`~superres.infer.video.upscale_video` in segments (its arguments, checked and worked out);
    ``factor`` > 1: interpolated, as ``interpolation`` says (method, model, first)."""
    import time

    from tqdm import tqdm

    from superres.infer.video import VideoResult

    tic = time.perf_counter()
    job = Job(src, dst, Path(work) if work else work_folder(dst), model, outscale, options, face_model, face_options,
              segment, files, names, None, rate, time_base, size, writer, factor, dict(interpolation or {}))
    extra = {"segment_frames": segment_frames, "shots": shots}
    if factor > 1:
        model_of = job.interpolation.get("model")
        extra.update(interpolate=factor, interpolation=job.interpolation.get("method"),
                     interpolate_first=bool(job.interpolation.get("first")),
                     interpolation_model=None if model_of is None else model_key(model_of))
    key = job_key(job, extra, source)
    manifest, why = Manifest.resume(job.work, key)
    if why:
        log(f"{dst}: starting afresh ({why})")
    if manifest is None:
        name = model if isinstance(model, str) else getattr(model, "arch", "this model")
        reader = None if files is not None else VideoReader(src, segment)
        try:
            plan = plan_job(job, reader, enhance, str(name), segment_frames, shots)
        finally:
            if reader is not None:
                reader.close()
        manifest = Manifest(job.work, key, plan)
        manifest.save()
        reused = 0
    else:
        check_frames(manifest, job)
        reused = len(manifest.done)
    job.pts, job.cuts = manifest.plan["pts"], manifest.plan["cuts"]
    if not job.video_out:
        dst.mkdir(parents=True, exist_ok=True)
    units = manifest.units()
    if reused:
        log(f"{dst}: resuming: {reused} of {len(units)} segments were done and are reused")
    pending = [u for u in units if u.index not in manifest.done]
    total = sum(manifest.outputs(u) for u in units)
    done_frames = sum(manifest.done.values())
    bar = tqdm(total=total, initial=done_frames, unit="frame", disable=progress is not True, dynamic_ncols=True)
    report = progress if callable(progress) else None
    lock = threading.Lock()

    def on_frame() -> None:
        nonlocal done_frames
        with lock:
            done_frames += 1
            bar.update(1)
            if report:
                report(done_frames, total)

    def status() -> None:
        bar.set_postfix_str(f"segments {len(manifest.done)}/{len(units)}" + (f", {reused} reused" if reused else ""))
        if on_segment:
            on_segment(len(manifest.done), len(units), reused)

    def on_done(unit: Unit, written: int) -> None:
        manifest.finish(unit, written)
        status()

    status()
    try:
        if ray:
            del enhance  # each Ray worker loads its own copy
            run_on_ray(job, source if source is not None else src, pending, ray, options, on_done, on_frame)
        else:
            worker = Worker(job, options, enhance) if jobs == 1 else None
            if jobs > 1:
                del enhance  # each worker process loads its own copy
            run_units(job, pending, jobs, on_done, on_frame, worker, per_job)
    except BaseException as e:
        if not manifest.done:  # nothing worth keeping
            shutil.rmtree(job.work, ignore_errors=True)
        else:
            remove_stale_temps_in(job.work)
            if isinstance(e, KeyboardInterrupt) or not isinstance(e, Exception):
                log(f"{dst}: stopped; {len(manifest.done)} of {len(units)} segments are kept in {job.work}: the "
                    "same command goes on from there")
        raise
    finally:
        bar.close()
    reader = None if files is not None or not job.video_out else VideoReader(src, segment)
    try:
        frames = finish_job(job, manifest, reader, rotation)
    finally:
        if reader is not None:
            reader.close()
    return VideoResult(frames, size, time.perf_counter() - tic)


def _lr_pixels(job: Job, outscale, enhance) -> int:
    """Input pixels of a frame (the output size divided by the scale)."""
    scale = outscale or enhance.scale
    return max(1, round(job.size[0] / scale) * round(job.size[1] / scale))
