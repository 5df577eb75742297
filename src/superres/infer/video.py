"""Video upscaling as a stream: decode a frame, upscale it, encode it; memory does not grow with length.

Input: a video file (anything PyAV/FFmpeg reads) or a folder of frames; output: a video file or a
folder of PNG frames. Image networks run frame by frame; video networks as their architecture's
facts say: recurrent ones on overlapping clips (:class:`ClipUpscaler`), others on a sliding window
(:class:`WindowUpscaler`). From a file, timestamps are kept frame by frame (constant and variable
frame rates), audio and subtitles are copied without re-encoding, and rotation and pixel aspect
are kept (:mod:`superres.io.video`). Decoding and encoding run in background threads beside the
network, so they overlap its work instead of adding to it.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from superres.infer.image import Upscaler, resize_to, run_options
from superres.io import read_rgb8
from superres.io.files import same_file
from superres.io.video import Segment, VideoError, VideoReader, VideoWriter, is_video_path, seekable
from superres.runner import Runner
from superres.runtime import RunOptions

DEFAULT_VIDEO_MODEL = "realesr-animevideov3"  # the model Real-ESRGAN uses for video


@dataclass(frozen=True)
class VideoResult:
    frames: int
    size: tuple[int, int]
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def prefetch(items: Iterator, depth: int = 3) -> Iterator:
    """Produce ``items`` in a thread, up to ``depth`` ahead; its exceptions reach the consumer. Once the
    consumer is done (or interrupted) the thread no longer touches ``items``: a decoder's file can be closed."""
    q: queue.Queue = queue.Queue(depth)
    stop, running, end = threading.Event(), threading.Event(), object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def work() -> None:
        running.set()
        if stop.is_set():  # stopped before it ran: SIGTERM raised in the main thread inside thread.start()
            return
        try:
            for item in items:
                if not put(item):
                    return
            put(end)
        except BaseException as e:
            put(e)

    thread = threading.Thread(target=work, daemon=True)
    try:
        thread.start()  # waits for the thread to start: a signal can raise here, and the thread runs on
        while (item := q.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        if running.is_set():  # else it returns as soon as it runs, without touching items
            thread.join()


class BackgroundWriter:
    """Call ``write`` on items in a thread (bounded queue); its errors surface on the next put/close."""

    def __init__(self, write: Callable[..., None], depth: int = 3):
        self.q: queue.Queue = queue.Queue(depth)
        self.error: BaseException | None = None
        self.closed = False
        self.thread = threading.Thread(target=self._run, args=(write,), daemon=True)
        self.thread.start()

    def _run(self, write: Callable[..., None]) -> None:
        while (item := self._next()) is not None:
            if self.error is None:
                try:
                    write(*item)
                except BaseException as e:
                    self.error = e

    def _next(self):
        """The next item, polled: SIGTERM raises in the main thread (:class:`superres.errors.Terminated`), and
        raised inside ``put``'s wake-up of this thread (``Condition.notify``) it can leave a spent waiter first
        in line; the next wake-up then goes to it, and this thread (and ``close``, joining it) would wait for
        ever (seen: 1 in 6 runs of SIGTERM on a busy 2-core machine)."""
        while True:
            try:
                return self.q.get(timeout=0.1)
            except queue.Empty:
                pass

    def put(self, *item) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(item)

    def close(self) -> None:
        """Write what is queued and end the thread. A signal can interrupt this (the join waits for the
        encoding): a second call, as the clean-up after it makes, still waits until nothing is written."""
        if not self.closed:  # the thread keeps taking items until None, even after an error
            self.q.put(None)
            self.closed = True
        self.thread.join()
        if self.error is not None:
            raise self.error


Frame = tuple[np.ndarray, int | None, Fraction]  # RGB uint8, pts, time base


class FrameUpscaler:
    """A single-image model applied to each frame, several frames per network call where they fit."""

    def __init__(self, upscaler: Upscaler, outscale: float | None):
        self.upscaler, self.outscale, self.scale = upscaler, outscale, upscaler.scale

    def __call__(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        held: list[Frame] = []
        size = None
        for frame in frames:
            if size is None:
                size = self.upscaler.frames_per_batch(*frame[0].shape[:2])
            held.append(frame)
            if len(held) == size:
                yield from self._run(held)
                held = []
        if held:
            yield from self._run(held)

    def _run(self, frames: list[Frame]) -> Iterator[Frame]:
        outs = self.upscaler.upscale_batch([rgb for rgb, _, _ in frames], self.outscale)
        for out, (_, pts, tb) in zip(outs, frames, strict=True):
            yield out, pts, tb


class _VideoNetwork:
    """A video network on the frames of a stream, through its :class:`~superres.runner.Runner`."""

    def __init__(self, runner: Runner, outscale: float | None):
        self.runner, self.scale, self.outscale = runner, runner.desc.scale, outscale

    def _infer(self, frames: list[Frame]) -> np.ndarray:
        """The network on ``frames`` together -> its uint8 output frames (T' x sH x sW x 3)."""
        out = self.runner(np.stack([f[0] for f in frames]))
        return out if out.ndim == 4 else out[None]  # a window network gives its centre frame

    def _output(self, sr: np.ndarray, frame: Frame) -> Frame:
        h, w = frame[0].shape[:2]
        return resize_to(sr, self.outscale, self.scale, h, w), frame[1], frame[2]


class ClipUpscaler(_VideoNetwork):
    """A recurrent video network on a stream, clip by clip.

    Each clip gives ``clip - 2 * overlap`` output frames and sees ``overlap`` frames of context on
    each side, so recurrent propagation is not cut short at the clip's edges; at most ``clip``
    frames are held, unless ``whole_up_to`` lets a short stream run whole. The whole frame goes
    through the network (no spatial tiles).
    """

    def __init__(self, runner: Runner, outscale: float | None, clip: int = 15, overlap: int = 3, fixed: bool = False,
                 whole_up_to: int = 0):
        if clip <= 2 * overlap:
            raise ValueError(f"clip ({clip} frames) must be longer than twice the overlap ({overlap})")
        super().__init__(runner, outscale)
        self.clip, self.overlap, self.fixed = clip, overlap, fixed
        self.whole_up_to = whole_up_to  # hold a stream of up to this many frames x pixels and run it whole

    def _run(self, frames: list[Frame], first: int, last: int) -> Iterator[Frame]:
        """Upscale ``frames`` together; yield outputs ``first``..``last - 1`` (indices into ``frames``).
        With ``fixed`` (networks that take exactly ``clip`` frames) short clips repeat their last frame."""
        out = self._infer(frames + frames[-1:] * (self.clip - len(frames)) if self.fixed else frames)
        for i in range(first, last):
            yield self._output(out[i], frames[i])

    def __call__(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        """The stream whole if it is short enough (``whole_up_to``), as the papers evaluate; else in clips."""
        if not self.whole_up_to:
            yield from self._clips(frames)
            return
        held: list[Frame] = []
        for frame in frames:
            held.append(frame)
            if len(held) * frame[0].shape[0] * frame[0].shape[1] > self.whole_up_to:
                yield from self._clips(itertools.chain(held, frames))
                return
        if held:
            yield from self._run(held, 0, len(held))

    def _clips(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        core, o = self.clip - 2 * self.overlap, self.overlap
        held: list[Frame] = []
        base = 0  # stream index of held[0]
        start = 0  # stream index of the next frame to output
        for index, frame in enumerate(frames):
            held.append(frame)
            if index + 1 >= start + core + o:  # the core and its right context are here
                lo = max(start - o, base)
                yield from self._run(held[lo - base:], start - lo, start - lo + core)
                start += core
                drop = start - o - base
                if drop > 0:
                    del held[:drop]
                    base += drop
        if start < base + len(held):
            lo = max(start - o, base)
            yield from self._run(held[lo - base:], start - lo, base + len(held) - lo)


class WindowUpscaler(_VideoNetwork):
    """A sliding-window video network (``frames`` frames in, the centre frame out).

    Frames beyond the ends are the first or last frame repeated; at most ``frames`` are held.
    """

    def __init__(self, runner: Runner, outscale: float | None, frames: int, single_frame: bool = False):
        super().__init__(runner, outscale)
        self.half = frames // 2
        self.single_frame = single_frame  # every window is copies of its centre frame (the ablation)

    def __call__(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        held: list[Frame] = []
        base, nxt = 0, 0  # stream index of held[0]; the next frame to output

        def window(last: int) -> Frame:
            picks = [min(max(j, 0), last) - base for j in range(nxt - self.half, nxt + self.half + 1)]
            if self.single_frame:
                picks = [nxt - base] * len(picks)
            return self._output(self._infer([held[max(p, 0)] for p in picks])[0], held[nxt - base])

        for index, frame in enumerate(frames):
            held.append(frame)
            while nxt + self.half <= index:
                yield window(index)
                nxt += 1
                while base < nxt - self.half:
                    held.pop(0)
                    base += 1
        while nxt < base + len(held):
            yield window(base + len(held) - 1)
            nxt += 1


def _folder_frames(files: list[Path], rate: Fraction, segment: Segment) -> Iterator[tuple[np.ndarray, int, Fraction]]:
    size = None  # every frame must have the first one's size: a video has one
    for i, f in enumerate(files):
        if segment.contains(float(i / rate)):
            frame = read_rgb8(f, size=size)
            size = size or (frame.shape[1], frame.shape[0])
            yield frame, i, 1 / rate


def upscale_video(src: str | os.PathLike, dst: str | os.PathLike, model=DEFAULT_VIDEO_MODEL, *,
                  outscale: float | None = None, options: RunOptions | None = None, codec: str = "auto",
                  crf: int | None = 18, pix_fmt: str = "yuv420p", start: float | None = None,
                  end: float | None = None, fps: float | None = None, preset: str | None = "veryfast",
                  progress: bool | Callable[[int, int | None], None] = False, face_model=None,
                  face_options=None, jobs: int | None = None, segment_frames: int | None = None,
                  shots: bool = True, log: Callable[[str], None] | None = None,
                  on_segment: Callable[[int, int, int], None] | None = None, ray: str | None = None,
                  work_folder: str | os.PathLike | None = None, interpolate: int = 1, target_fps: float | None = None,
                  interpolation: str = "rife", interpolation_model=None, interpolate_first: bool = False,
                  **option_fields) -> VideoResult:
    """Upscale a video file or a folder of frames into a video file or a folder of PNG frames.

    ``model``: a name, a checkpoint path, ``bicubic`` or a loaded descriptor; video networks run on
    windows or clips of frames as their architecture says, image networks frame by frame.
    ``options`` (or its fields as keywords: device, precision, backend, tile) say how it runs.
    ``fps`` is the frame rate of a folder of frames (default 25); files keep their own timing.
    ``preset`` is x264/x265's speed preset: ``veryfast`` leaves the CPU to the network (at a given
    CRF the quality is about the same as slower presets; the files are somewhat larger).
    ``progress``: True for a progress bar, or a function called with (frames done, frames expected or
    None) after each frame; an exception it raises stops the run and leaves no output file.
    ``face_model`` (a face network's path or descriptor): faces are also restored, tracked over time so
    that they do not flicker (``face_options``: :class:`superres.faces.FaceOptions`).

    Long videos run in segments (:mod:`superres.infer.segmented`): cut at the shots (``shots``) and at
    ``segment_frames`` (default: 300, or what a recurrent network's memory budget holds; 0: one stream),
    each with the temporal context its network needs, kept in a work folder beside the output so that the
    same call after an interruption redoes only the unfinished ones. ``jobs`` processes run segments at
    once (default: one per device listed in ``options.device``, e.g. ``cuda:0,cuda:1``); the output is
    the same. ``log`` receives one-line notes (resuming, starting afresh and why); ``on_segment`` is called
    with (segments done, segments in all, segments reused). An input that cannot seek (a pipe) runs as one
    stream, and says so. ``work_folder``: where the segments are kept (default: beside the output; for an
    output at a URL, in the cache folder).

    ``src`` and ``dst`` may be URLs (``s3://bucket/clip.mp4``: :mod:`superres.io.storage`): the source is read
    from a local copy, the output written locally and uploaded when complete. ``ray``: the segments run on a
    Ray cluster (``auto`` or an address: :class:`superres.infer.executors.RayExecutor`), each worker reading
    the source itself (a URL, or a path every node sees) and sending its encoded segment back.

    ``interpolate`` (or ``target_fps``, a whole multiple of the source's rate): that many times the frames,
    the new ones made by ``interpolation`` (``rife`` with ``interpolation_model``, default ``rife-v4.0``;
    ``blend``; ``repeat``) between each pair of neighbours, with exact timestamps and the sound untouched;
    across a scene cut the frame is repeated instead. After upscaling by default (RIFE's frames are better
    made from sharp frames, and the upscaler runs on the source's frames only: docs/video.md measures both);
    ``interpolate_first`` interpolates the small frames, then upscales them all. It
    works in segments (resuming, jobs, Ray) as upscaling does, and gives the same frames as one stream.
    """
    from superres.io import storage

    kw = {"outscale": outscale, "options": options, "codec": codec, "crf": crf, "pix_fmt": pix_fmt, "start": start,
          "end": end, "fps": fps, "preset": preset, "progress": progress, "face_model": face_model,
          "face_options": face_options, "jobs": jobs, "segment_frames": segment_frames, "shots": shots, "log": log,
          "on_segment": on_segment, "ray": ray, "interpolate": interpolate, "target_fps": target_fps,
          "interpolation": interpolation, "interpolation_model": interpolation_model,
          "interpolate_first": interpolate_first, **option_fields}
    if storage.is_url(src) or storage.is_url(dst):
        return _at_urls(src, dst, model, work_folder=work_folder, **kw)
    return _upscale_video(src, dst, model, work_folder=work_folder, source=src, **kw)


def _at_urls(src, dst, model, *, work_folder, **kw) -> VideoResult:
    """:func:`upscale_video` with a source or an output at a URL: a local copy in, a staged file out."""
    import contextlib
    import hashlib

    from superres.io import storage

    if storage.is_url(dst) and not is_video_path(storage.name(dst)):
        raise VideoError(f"{dst}: an output at a URL is a video file (a folder of frames is written locally)")
    with contextlib.ExitStack() as stack:
        local_src = stack.enter_context(storage.local_copy(src))
        local_dst = stack.enter_context(storage.staged_output(dst)) if storage.is_url(dst) else Path(dst)
        if work_folder is None and storage.is_url(dst):
            from superres.zoo.pretrained import cache_dir

            work_folder = cache_dir().parent / "video-work" / hashlib.sha256(str(dst).encode()).hexdigest()[:20]
        return _upscale_video(local_src, local_dst, model, source=src, work_folder=work_folder, **kw)


def _upscale_video(src: str | os.PathLike, dst: str | os.PathLike, model=DEFAULT_VIDEO_MODEL, *,
                   outscale: float | None = None, options: RunOptions | None = None, codec: str = "auto",
                   crf: int | None = 18, pix_fmt: str = "yuv420p", start: float | None = None,
                   end: float | None = None, fps: float | None = None, preset: str | None = "veryfast",
                   progress: bool | Callable[[int, int | None], None] = False, face_model=None,
                   face_options=None, jobs: int | None = None, segment_frames: int | None = None,
                   shots: bool = True, log: Callable[[str], None] | None = None,
                   on_segment: Callable[[int, int, int], None] | None = None, ray: str | None = None,
                   work_folder: str | os.PathLike | None = None, source=None, interpolate: int = 1,
                   target_fps: float | None = None, interpolation: str = "rife", interpolation_model=None,
                   interpolate_first: bool = False, **option_fields) -> VideoResult:
    """:func:`upscale_video` on local paths; ``source``: where Ray workers read the source (a URL or a path)."""
    src, dst = Path(src), Path(dst)
    if same_file(src, dst):  # a file, or a folder of frames: its frames would be replaced as they are read
        raise ValueError(f"{src}: the output {dst} would overwrite the input; choose another output")
    if dst.suffix and not is_video_path(dst) and not dst.is_dir():
        from superres.io.video import VIDEO_EXTENSIONS

        raise VideoError(f"{dst}: unknown video container (use one of {', '.join(sorted(VIDEO_EXTENSIONS))}, "
                         "or a folder name for PNG frames)")
    if segment_frames is not None and segment_frames < 0:
        raise ValueError(f"segment_frames must be >= 0 (0: one stream), got {segment_frames}")
    log = log or (lambda line: None)
    segment = Segment(start, end)
    options = run_options(options, **option_fields)
    if fps is not None and not src.is_dir():
        raise ValueError("fps is for folders of frames: a video file keeps its own timestamps")
    if interpolate != 1 and target_fps is not None:
        raise ValueError("give interpolate (a factor) or target_fps, not both")
    if interpolate < 1:
        raise ValueError(f"interpolate must be a whole number >= 1, got {interpolate}")
    interpolating = interpolate > 1 or target_fps is not None
    segmented = segment_frames != 0
    if segmented and src.exists() and not src.is_dir() and not seekable(src):
        log(f"{src}: cannot seek (a pipe or device): it runs as one stream, without segments, resuming or jobs")
        segmented = False
    if not segmented and ((jobs or 1) > 1 or ray):
        raise ValueError(f"{'ray' if ray else 'jobs'}: several jobs share a video by segments; they need segments "
                         "(segment_frames other than 0) and an input that can seek")
    if ray and not is_video_path(dst):
        raise ValueError("ray: the segments come back to this machine as encoded video: write a video file")
    reader = None
    if src.is_dir():
        from superres.io import list_images

        files = list_images(src)
        if not files:
            raise VideoError(f"{src}: no frames found (looked for image files)")
        height, width = read_rgb8(files[0]).shape[:2]
        rate = Fraction(fps or 25).limit_denominator(1001)
        total, rotation, aspect, time_base = len(files), 0, None, 1 / rate
        names = [f.stem for f in files]
    else:
        from superres.io.video import probe

        files = None
        # a pipe is read once: its reader says what it holds; a file is probed now and read later
        reader = VideoReader(src, segment) if not seekable(src) else None
        info = reader.info if reader is not None else probe(src)
        width, height, rate, total = info.width, info.height, info.frame_rate, info.frames
        rotation, aspect, time_base, names = info.rotation, info.sample_aspect_ratio, info.time_base, None
    per_job = None
    if segmented:
        from superres.infer.segmented import job_options, prepare_work

        prepare_work(dst)  # an output folder that cannot be written fails before any work
        per_job, jobs = job_options(options, jobs)
        options = per_job[0]
    enhance = video_model(model, outscale, options, whole_clips=segmented)
    if face_model is not None and not segmented:
        from superres.faces import FaceRestorer

        enhance = FaceRestorer(face_model, face_options, options).stream(enhance)
    scale = outscale or enhance.scale
    size = (round(width * scale), round(height * scale))
    factor = 1
    if interpolating:
        from superres.infer.interpolate import interpolation_factor

        factor = interpolation_factor(rate, target_fps) if target_fps is not None else interpolate
    if segmented:
        from superres.infer.segmented import run_segmented

        return run_segmented(src, dst, model, enhance, outscale=outscale, options=options, per_job=per_job,
                             jobs=jobs, face_model=face_model, face_options=face_options, segment=segment,
                             files=files, names=names, rate=rate, time_base=time_base, size=size,
                             rotation=rotation, writer={"codec": codec, "crf": crf, "pix_fmt": pix_fmt,
                                                        "preset": preset, "sample_aspect_ratio": aspect},
                             segment_frames=segment_frames, shots=shots, progress=progress, log=log,
                             on_segment=on_segment, ray=ray, work=work_folder, source=source, factor=factor,
                             interpolation={"method": interpolation, "model": interpolation_model,
                                            "first": interpolate_first})

    if segment.start is not None or segment.end is not None:
        duration = float(total / rate) if total else (info.duration if files is None else None)
        if duration:
            total = round((min(segment.end or duration, duration) - (segment.start or 0)) * rate)
    from tqdm import tqdm

    cuts = ()
    if factor > 1:
        cuts = _shot_cuts(src, files, segment, reader) if shots else ()
        total = total * factor if total else total
    bar = None
    tic, count = time.perf_counter(), 0
    if files is None and reader is None:
        reader = VideoReader(src, segment)
    encoder = source = None
    abort = lambda: None  # noqa: E731 - what an interruption undoes, from the moment there is something to undo
    try:
        if is_video_path(dst):
            writer = VideoWriter(dst, size, rate * factor, time_base / factor, codec, crf, pix_fmt, rotation, preset,
                                 aspect, copy_from=reader, segment=segment)
            abort, finish = writer.discard, writer.close
            frames = reader.frames(writer.copy) if reader else _folder_frames(files, rate, segment)
            encoder = BackgroundWriter(writer.write)

            def item(i: int, sr: np.ndarray, pts, tb) -> tuple:
                return sr, pts, tb
        else:
            from superres.io import write_image

            dst.mkdir(parents=True, exist_ok=True)
            frames = reader.frames() if reader else _folder_frames(files, rate, segment)
            encoder = BackgroundWriter(lambda name, img: write_image(dst / f"{name}.png", img))
            finish = lambda: None  # noqa: E731 - frames already written stay

            def item(i: int, sr: np.ndarray, pts, tb) -> tuple:
                return (names[pts] if names and factor == 1 else f"frame_{i:06d}"), sr

        bar = tqdm(total=total or None, unit="frame", disable=progress is not True, dynamic_ncols=True)
        report = progress if callable(progress) else None
        source = prefetch(frames)
        stream = enhance(source)
        if factor > 1:
            stream = _interpolated(stream if not interpolate_first else source, factor, cuts, interpolation,
                                   interpolation_model, options)
            if interpolate_first:
                stream = enhance(stream)
        for i, (sr, pts, tb) in enumerate(stream):
            encoder.put(*item(i, sr, pts, tb))
            count += 1
            bar.update(1)
            if report:
                report(count, total or None)
        encoder.close()
        finish()
    except BaseException:
        _undo(source, encoder, abort)
        raise
    finally:
        if bar is not None:
            bar.close()
        if reader is not None:
            reader.close()
    return VideoResult(count, size, time.perf_counter() - tic)


def _shot_cuts(src: Path, files: list[Path] | None, segment: Segment, reader: VideoReader | None) -> list[int]:
    """The frames that start a new shot (PySceneDetect), from a pass over small frames."""
    from superres.infer.segmented import SHOT_WIDTH, small_frames
    from superres.infer.segments import find_cuts

    if files is not None:
        return find_cuts(small_frames(files))
    if reader is not None:  # a pipe is read once: no pass ahead of the run
        return []
    scan = VideoReader(src, segment)
    try:
        return find_cuts(small for small, _ in scan.scan(SHOT_WIDTH))
    finally:
        scan.close()


def _interpolated(frames: Iterator, factor: int, cuts, method: str, model, options: RunOptions) -> Iterator:
    """``frames`` with ``factor - 1`` new ones between neighbours (:func:`superres.infer.interpolate.
    interpolate_frames`); the last frame is held for ``factor - 1`` more steps of its predecessor's length, so
    the video lasts as long as its sound."""
    from superres.infer.interpolate import interpolate_frames

    seen: list = []

    def remember(items: Iterator) -> Iterator:
        for item in items:
            seen[:] = [*seen[-1:], item[1]]
            yield item

    last = None
    for last in interpolate_frames(remember(frames), factor, method=method, model=model, options=options,
                                   cuts=cuts):
        yield last
    if last is not None and len(seen) == 2 and None not in seen and last[1] is not None:
        step = (seen[1] - seen[0]) * factor  # the last source interval, in the output's finer ticks
        for k in range(1, factor):
            yield last[0], last[1] + step * k // factor, last[2]


def video_runner(desc, outscale: float | None = None, options: RunOptions | None = None, *,
                 frames: int | None = None, single_frame: bool = False, whole_clips: bool = False) -> _VideoNetwork:
    """How a video network runs on a stream of frames, as its architecture's facts say: sliding
    windows (of ``frames``, default its own) or clips (recurrent networks: overlapping clips; networks
    that take a fixed number of frames: clips of exactly that many, ``frames`` if given).
    ``single_frame``, the network fed one frame (the ablation): each window is copies of its centre
    frame; each clip is one frame. ``whole_clips``: a recurrent network sees a whole stream at once
    when it fits in memory (:func:`whole_clip_pixels`), as the papers evaluate test clips."""
    run = desc.video
    if run is None:
        raise ValueError(f"{desc.arch} is not a video network")
    if desc.in_channels != 3:
        raise ValueError(f"this {desc.arch} works on {desc.in_channels}-channel frames; video upscaling runs RGB "
                         "networks")
    if single_frame and not run.single_frame:
        raise ValueError(f"{desc.arch} cannot be fed single frames (it takes exactly {run.frames} frames)")
    options = options or RunOptions()
    if options.tile not in ("auto", 0):
        raise ValueError(f"--tile: {desc.arch} is a video network and runs on whole frames (tiles are for image "
                         "models)")
    runner = Runner(desc, options)
    if run.mode == "window":
        return WindowUpscaler(runner, outscale, frames or run.frames, single_frame)
    if run.fixed:
        return ClipUpscaler(runner, outscale, clip=frames or run.frames, overlap=run.overlap, fixed=True)
    if single_frame:
        return ClipUpscaler(runner, outscale, clip=1, overlap=0)
    whole = whole_clip_pixels(runner.device) if whole_clips else 0
    return ClipUpscaler(runner, outscale, clip=run.frames, overlap=run.overlap, whole_up_to=whole)


# Memory of a recurrent network run on a whole clip, per LR pixel of the clip (frames x height x width): the
# official BasicVSR (64 features, fp32, CPU) on Vid4 calendar whole (41 frames of 180x144, 1.06M pixels) peaked
# at 1653 MiB RSS, the process included, against 1331 MiB in 15-frame chunks (benchmarks/vid4_basicvsr.py).
WHOLE_CLIP_BYTES_PER_PIXEL = 1024


def whole_clip_pixels(device) -> int:
    """The longest clip (frames x LR pixels) run whole: a quarter of the memory available."""
    from superres.infer.image import device_memory

    return int(device_memory(device) // 4 // WHOLE_CLIP_BYTES_PER_PIXEL)


def video_model(model, outscale: float | None = None, options: RunOptions | None = None, whole_clips: bool = False):
    """A model (name, path or descriptor) as a frame-stream upscaler: video networks on their windows
    or clips (``whole_clips``: see :func:`video_runner`), image networks (and bicubic) frame by frame."""
    from superres.zoo import load_model

    desc = load_model(model) if isinstance(model, str | os.PathLike) else model
    if desc.video is not None:
        return video_runner(desc, outscale, options, whole_clips=whole_clips)
    return FrameUpscaler(Upscaler(desc, options), outscale)


def _undo(source: Iterator | None, encoder: BackgroundWriter | None, abort: Callable[[], None]) -> None:
    """After an error or a signal (which can come at any point, even while a thread starts), what there is so
    far: the decoding thread stops before the files it reads (and copies packets into) are closed (a traceback
    keeps the generators alive, so they would not be closed in time on their own), the encoder thread stops
    (its own errors ignored: the first error is the one to report), then ``abort`` undoes the output."""
    if source is not None:
        source.close()
    if encoder is not None:
        try:
            encoder.close()
        except BaseException:
            pass
    abort()
