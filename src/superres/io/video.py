"""Video files as streams (PyAV): frames are decoded one at a time and encoded one at a time, and
the other streams (audio, subtitles) are copied packet by packet without re-encoding.

Timestamps are carried over frame by frame in the input's time base, so constant and variable
frame rates both survive; the display rotation and the sample (pixel) aspect ratio are copied.
The output is written to a temporary file beside the destination and renamed when complete, so
an interrupted run never leaves a broken file where the result should be.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from superres.errors import SuperresError
from superres.io.files import publish, remove_stale_temps, temp_beside

VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts", ".mpg", ".mpeg"})
_MUXERS = {".mkv": "matroska", ".m4v": "mp4", ".ts": "mpegts", ".mpg": "mpeg", ".mpeg": "mpeg"}


class VideoError(SuperresError):
    """A video that cannot be read or written: the message names the file."""


def is_video_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    frame_rate: Fraction  # average; frames keep their own timestamps
    time_base: Fraction
    frames: int  # as the container says (0 if it does not say)
    duration: float | None  # seconds
    rotation: int  # degrees, from the display matrix
    sample_aspect_ratio: Fraction | None


@dataclass(frozen=True)
class Segment:
    """The part of the input to process, in seconds (None: from the start / to the end)."""

    start: float | None = None
    end: float | None = None

    def __post_init__(self):
        if self.start is not None and self.start < 0:
            raise ValueError(f"start must be >= 0 seconds, got {self.start}")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end} s) must be after start ({self.start} s)")

    def contains(self, t: float) -> bool:
        return (self.start is None or t >= self.start) and (self.end is None or t < self.end)

    def shift(self, ts: int | None, time_base: Fraction) -> int | None:
        """A timestamp moved so that the segment starts at 0."""
        if ts is None or not self.start:
            return ts
        return ts - round(self.start / time_base)


def _reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e)


def _open_input(path: Path):
    import av

    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if path.is_dir():
        raise VideoError(f"{path}: is a folder, not a video file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VideoError(f"{path}: not a readable video ({_reason(e)})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: has no video stream")
    return container


def probe(path: str | os.PathLike) -> VideoInfo:
    """What the file holds, from its headers and its first frame."""
    import av

    path = Path(path)
    with _open_input(path) as container:
        stream = container.streams.video[0]
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as e:
            raise VideoError(f"{path}: cannot decode its video ({_reason(e)})") from None
        if first is None:
            raise VideoError(f"{path}: its video stream has no frames")
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        if stream.duration:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = container.duration / 1e6 if container.duration else None
        return VideoInfo(first.width, first.height, Fraction(rate), Fraction(stream.time_base), stream.frames,
                         duration, round(first.rotation or 0), stream.sample_aspect_ratio)


class VideoReader:
    """Frames of the first video stream as (RGB uint8 array, pts, time base), in the segment.

    Packets of the other streams met on the way go to ``on_packet`` (for copying), in file order,
    so nothing is buffered beyond what the demuxer holds.
    """

    def __init__(self, path: str | os.PathLike, segment: Segment = Segment()):
        self.path, self.segment = Path(path), segment
        self.info = probe(self.path)
        self.container = _open_input(self.path)
        self.video = self.container.streams.video[0]
        self.video.thread_type = "AUTO"
        self.others = [s for s in self.container.streams if s.type in ("audio", "subtitle")]

    def frames(self, on_packet: Callable | None = None) -> Iterator[tuple[np.ndarray, int | None, Fraction]]:
        import av

        seg = self.segment
        if seg.start:
            self.container.seek(int(seg.start / self.video.time_base), stream=self.video, backward=True)
        streams = [self.video, *(self.others if on_packet else [])]
        try:
            for packet in self.container.demux(*streams):
                if packet.stream.index != self.video.index:
                    if packet.dts is not None and packet.size:
                        on_packet(packet)
                    continue
                for frame in packet.decode():
                    t = float(frame.time) if frame.time is not None else None
                    if t is not None and seg.end is not None and t >= seg.end:
                        return
                    if t is None or seg.contains(t):
                        yield frame.to_ndarray(format="rgb24"), seg.shift(frame.pts, frame.time_base), frame.time_base
        except av.FFmpegError as e:
            raise VideoError(f"{self.path}: decoding failed ({_reason(e)})") from None

    def close(self) -> None:
        self.container.close()


# tags that describe the source's encode rather than its content (the muxer writes its own; mkvmerge's
# statistics and DURATION would be stale after re-encoding or cutting with --start/--end)
_ENCODER_TAGS = {"encoder", "major_brand", "minor_version", "compatible_brands", "creation_time", "duration",
                 "bps", "number_of_frames", "number_of_bytes"}


def _content_tags(metadata: dict) -> dict:
    return {k: v for k, v in metadata.items()
            if k.lower() not in _ENCODER_TAGS and not k.upper().startswith("_STATISTICS")}


def _copy_metadata(src, dst) -> None:
    dst.metadata.update(_content_tags(src.metadata))


class VideoWriter:
    """Encode RGB frames into ``dst`` (temp file + rename on :meth:`close`), optionally copying
    streams of a :class:`VideoReader` packet by packet.

    Frames have the ``size`` given (odd sizes are padded to even ones where the pixel format needs it).
    A frame of another size is refused rather than stretched, unless the frames come from a video file
    (``copy_from``): a stream may change its resolution midway, and is scaled to its first size, as FFmpeg
    does.
    """

    def __init__(self, dst: str | os.PathLike, size: tuple[int, int], rate: Fraction, time_base: Fraction | None = None,
                 codec: str = "auto", crf: int | None = 18, pix_fmt: str = "yuv420p", rotation: int = 0,
                 preset: str | None = None,
                 sample_aspect_ratio: Fraction | None = None, copy_from: VideoReader | None = None,
                 segment: Segment = Segment()):
        import av

        self.dst, self.segment, self.size = Path(dst), segment, tuple(size)
        self.stretch, self.frames = copy_from is not None, 0
        self.lock = threading.Lock()  # frames and copied packets may come from different threads
        if not is_video_path(self.dst):
            raise VideoError(f"{self.dst}: unknown video container (use one of {', '.join(sorted(VIDEO_EXTENSIONS))})")
        try:
            self.dst.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise VideoError(f"{self.dst}: cannot create the output folder: {e.strerror or e}") from None
        remove_stale_temps(self.dst)  # left by a killed run into the same destination
        fd, self.tmp = temp_beside(self.dst)
        os.close(fd)  # PyAV opens it by name
        try:
            self.output = av.open(str(self.tmp), "w", format=_MUXERS.get(self.dst.suffix.lower(),
                                                                          self.dst.suffix.lower().lstrip(".")))
            self.stream = self._video_stream(size, rate, time_base, codec, crf, pix_fmt, preset)
            if sample_aspect_ratio:
                self.stream.codec_context.sample_aspect_ratio = sample_aspect_ratio
            if rotation:
                self.stream.set_display_rotation(rotation)
            self.copies = {s.index: self._copy_stream(s) for s in copy_from.others} if copy_from else {}
            if copy_from:  # the language, title... of each stream and of the file (else they read `und`)
                _copy_metadata(copy_from.video, self.stream)
                for src in copy_from.others:
                    _copy_metadata(src, self.copies[src.index])
                self.output.metadata.update(_content_tags(copy_from.container.metadata))
        except BaseException:
            self.discard()
            raise

    def _video_stream(self, size, rate, time_base, codec, crf, pix_fmt, preset):
        import av

        from superres.io.encoders import encoder_options, pick_encoder

        self.codec = codec = pick_encoder(codec)
        try:
            stream = self.output.add_stream(codec, rate=rate)
        except (av.FFmpegError, ValueError) as e:
            raise VideoError(f"{self.dst}: unknown or unavailable codec {codec!r} ({e})") from None
        formats = stream.codec_context.codec.video_formats or []
        if formats and pix_fmt not in {f.name for f in formats}:
            raise VideoError(f"{self.dst}: codec {codec} cannot write pix_fmt {pix_fmt} "
                             f"(it takes {', '.join(sorted(f.name for f in formats))})")
        width, height = size
        if pix_fmt.startswith(("yuv420", "nv12", "yuvj420")):  # 4:2:0 needs even sizes
            width, height = width + width % 2, height + height % 2
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if time_base:
            stream.time_base = stream.codec_context.time_base = time_base
        stream.options = encoder_options(codec, crf, preset)
        return stream

    def _copy_stream(self, template):
        try:
            return self.output.add_stream_from_template(template)
        except Exception as e:  # PyAV raises several types for streams a container cannot hold
            raise VideoError(f"{self.dst}: cannot copy the {template.type} stream #{template.index} "
                             f"({template.codec_context.name}) into a {self.dst.suffix} file ({e}); "
                             "try .mkv") from None

    def write(self, rgb: np.ndarray, pts: int | None, time_base: Fraction) -> None:
        import av

        height, width = rgb.shape[:2]
        if (width, height) != self.size and not self.stretch:
            raise VideoError(f"{self.dst}: frame {self.frames + 1} is {width}x{height}, but the video is "
                             f"{self.size[0]}x{self.size[1]}: the frames of a video must all have one size")
        self.frames += 1
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if (frame.width, frame.height) != (self.stream.width, self.stream.height):  # 4:2:0: odd sizes -> even
            frame = frame.reformat(width=self.stream.width, height=self.stream.height)
        frame.pts, frame.time_base = pts, time_base
        self._mux(lambda: self.stream.encode(frame))

    def copy(self, packet) -> None:
        """Mux a packet of a copied stream, if it falls in the segment (shifted like the video)."""
        t = float(packet.pts * packet.time_base) if packet.pts is not None else None
        if t is not None and not self.segment.contains(t):
            return
        packet.pts = self.segment.shift(packet.pts, packet.time_base)
        packet.dts = self.segment.shift(packet.dts, packet.time_base)
        packet.stream = self.copies[packet.stream.index]
        self._mux(lambda: packet)

    def _mux(self, packets: Callable) -> None:
        import av

        with self.lock:
            try:
                self.output.mux(packets())
            except av.FFmpegError as e:
                raise VideoError(f"{self.dst}: writing failed ({_reason(e)})") from None

    def close(self) -> None:
        """Flush the encoder and put the finished file in place."""
        try:
            with self.lock:
                self.output.mux(self.stream.encode(None))
                self.output.close()
        except Exception as e:
            self.discard()
            raise VideoError(f"{self.dst}: cannot finish the video ({e})") from None
        publish(self.tmp, self.dst)

    def discard(self) -> None:
        """Drop the partial output (after an error or an interruption)."""
        if hasattr(self, "output"):
            try:
                self.output.close()
            except Exception:  # a half-written file may not close cleanly; it is deleted anyway
                pass
        self.tmp.unlink(missing_ok=True)
