"""Video files as streams (PyAV): frames are decoded one at a time and encoded one at a time, and
the other streams (audio, subtitles) are copied packet by packet without re-encoding.

Timestamps are carried over frame by frame in the input's time base, so constant and variable
frame rates both survive; the display rotation and the sample (pixel) aspect ratio are copied.
The output is written to a temporary file beside the destination and renamed when complete, so
an interrupted run never leaves a broken file where the result should be.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from superres.errors import SuperresError
from superres.io.files import publish, remove_stale_temps, temp_beside

VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts", ".mpg", ".mpeg", ".nut"})
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
        return _info(path, container, first)


def _info(path: Path, container, first) -> VideoInfo:
    if first is None:
        raise VideoError(f"{path}: its video stream has no frames")
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    if stream.duration:
        duration = float(stream.duration * stream.time_base)
    else:
        duration = container.duration / 1e6 if container.duration else None
    return VideoInfo(first.width, first.height, Fraction(rate), Fraction(stream.time_base), stream.frames,
                     duration, round(first.rotation or 0), stream.sample_aspect_ratio)


def seekable(path: str | os.PathLike) -> bool:
    """A regular file (not a pipe, a FIFO or a device): it can be read twice, and seeked in."""
    import stat

    try:
        return stat.S_ISREG(Path(path).stat().st_mode)
    except OSError:
        return False


class VideoReader:
    """Frames of the first video stream as (RGB uint8 array, pts, time base), in the segment.

    Packets of the other streams met on the way go to ``on_packet`` (for copying), in file order,
    so nothing is buffered beyond what the demuxer holds.
    """

    def __init__(self, path: str | os.PathLike, segment: Segment = Segment()):
        self.path, self.segment = Path(path), segment
        self.pending: list = []  # a pipe's packets read to learn its size, to be played first
        if seekable(self.path):
            self.info = probe(self.path)
            self.container = _open_input(self.path)
        else:
            self.container = _open_input(self.path)
            self.info = self._probe_pipe()
        self.video = self.container.streams.video[0]
        self.video.thread_type = "AUTO"
        self.others = [s for s in self.container.streams if s.type in ("audio", "subtitle")]

    def _probe_pipe(self) -> VideoInfo:
        """The info of an input read once (a pipe): its packets are kept until a second decoder has made
        the first frame, so :meth:`frames` gets them all."""
        import av

        stream = self.container.streams.video[0]
        decoder = av.CodecContext.create(stream.codec_context.name, "r")
        if stream.codec_context.extradata:
            decoder.extradata = stream.codec_context.extradata
        first = None
        try:
            for packet in self.container.demux():
                self.pending.append(packet)
                if packet.stream.index == stream.index and first is None:
                    first = next(iter(decoder.decode(packet)), None)
                if first is not None:
                    break
            else:
                first = next(iter(decoder.decode(None)), None)
        except av.FFmpegError as e:
            raise VideoError(f"{self.path}: cannot decode its video ({_reason(e)})") from None
        return _info(self.path, self.container, first)

    def frames(self, on_packet: Callable | None = None) -> Iterator[tuple[np.ndarray, int | None, Fraction]]:
        import av

        seg = self.segment
        if seg.start and not self.pending:
            self.container.seek(int(seg.start / self.video.time_base), stream=self.video, backward=True)
        streams = [self.video, *(self.others if on_packet else [])]
        wanted = {s.index for s in streams}
        pending, self.pending = [p for p in self.pending if p.stream.index in wanted], []
        try:
            for packet in itertools.chain(pending, self.container.demux(*streams)):
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

    def scan(self, width: int) -> Iterator[tuple[np.ndarray, int | None]]:
        """Every frame of the segment, small (``width`` pixels wide, RGB) for shot detection, with its
        pts in the stream's time base (not shifted to the segment)."""
        import av

        seg = self.segment
        if seg.start:
            self.container.seek(int(seg.start / self.video.time_base), stream=self.video, backward=True)
        try:
            for frame in self.container.decode(self.video):
                t = float(frame.time) if frame.time is not None else None
                if t is not None and seg.end is not None and t >= seg.end:
                    return
                if t is None or seg.contains(t):
                    w = min(width, frame.width)
                    h = max(2, round(frame.height * w / frame.width / 2) * 2)
                    yield frame.reformat(width=w, height=h, format="rgb24").to_ndarray(), frame.pts
        except av.FFmpegError as e:
            raise VideoError(f"{self.path}: decoding failed ({_reason(e)})") from None

    def read_range(self, pts: list[int]) -> Iterator[tuple[np.ndarray, int | None, Fraction]]:
        """The frames whose pts (in the stream's time base, as :meth:`scan` gives them) are ``pts``, in
        order: a seek to the key frame before the first, then decoding. A stream whose seek lands past the
        first frame is decoded from its start instead; frames that are not the ones listed are an error."""
        import av

        for attempt in ("seek", "start"):
            if attempt == "seek":
                self.container.seek(pts[0], stream=self.video, backward=True)
            else:
                self.container.close()
                self.container = _open_input(self.path)
                self.video = self.container.streams.video[0]
                self.video.thread_type = "AUTO"
            i = 0
            try:
                for frame in self.container.decode(self.video):
                    if frame.pts is None or frame.pts < pts[0]:
                        continue
                    if frame.pts != pts[i]:
                        if i == 0:
                            break  # the seek went past the first frame
                        raise VideoError(f"{self.path}: frame {pts[i]} (pts) could not be read again where it "
                                         f"was found (found pts {frame.pts}); use --jobs 1 --segment-frames 0")
                    yield frame.to_ndarray(format="rgb24"), self.segment.shift(frame.pts, frame.time_base), \
                        frame.time_base
                    i += 1
                    if i == len(pts):
                        return
            except av.FFmpegError as e:
                raise VideoError(f"{self.path}: decoding failed ({_reason(e)})") from None
            if i:
                break
        raise VideoError(f"{self.path}: frames {pts[i]}.. (pts) could not be read again (the file ended early)")

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
                 segment: Segment = Segment(), stretch: bool | None = None, template=None):
        import av

        self.dst, self.segment, self.size = Path(dst), segment, tuple(size)
        self.stretch = copy_from is not None if stretch is None else stretch
        self.frames, self.encoding = 0, template is None
        self.packet_times: list[tuple] | None = None  # [] records the encoder's pts, dts and duration
        self.lock = threading.Lock()  # frames and copied packets may come from different threads
        if not is_video_path(self.dst):
            raise VideoError(f"{self.dst}: unknown video container (use one of {', '.join(sorted(VIDEO_EXTENSIONS))})")
        try:
            self.dst.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise VideoError(f"{self.dst}: cannot create the output folder: {e.strerror or e}") from None
        remove_stale_temps(self.dst)  # left by a killed run into the same destination
        try:
            fd, self.tmp = temp_beside(self.dst)
            os.close(fd)  # PyAV opens it by name
            self.output = av.open(str(self.tmp), "w", format=_MUXERS.get(self.dst.suffix.lower(),
                                                                          self.dst.suffix.lower().lstrip(".")))
            if template is None:
                self.stream = self._video_stream(size, rate, time_base, codec, crf, pix_fmt, preset)
            else:  # packets of encoded parts are copied in (:func:`join_videos`), timed as the single stream's
                self.stream = self.output.add_stream_from_template(template, rate=rate)
                if time_base:
                    self.stream.time_base = time_base
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
        self._mux(lambda: self._encode(frame))

    def _encode(self, frame):
        packets = self.stream.encode(frame)
        if self.packet_times is not None:
            self.packet_times += [(p.pts, p.dts, p.duration) for p in packets]
        return packets

    def copy(self, packet) -> None:
        """Mux a packet of a copied stream, if it falls in the segment (shifted like the video)."""
        t = float(packet.pts * packet.time_base) if packet.pts is not None else None
        if t is not None and not self.segment.contains(t):
            return
        packet.pts = self.segment.shift(packet.pts, packet.time_base)
        packet.dts = self.segment.shift(packet.dts, packet.time_base)
        packet.stream = self.copies[packet.stream.index]
        self._mux(lambda: packet)

    def mux_video(self, packet) -> None:
        """Mux an encoded video packet (of a part made with the same settings)."""
        packet.stream = self.stream
        self.frames += 1
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
                if self.encoding:
                    self.output.mux(self._encode(None))
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
        if hasattr(self, "tmp"):
            self.tmp.unlink(missing_ok=True)


def write_packet_times(writer: VideoWriter, path: Path) -> None:
    """Keep the encoder's timestamps of ``writer``'s packets (recorded with ``packet_times = []``) in ``path``:
    a container may shift or drop decoding timestamps, and joining needs them as the encoder made them."""
    import json

    from superres.io.files import atomic_write

    atomic_write(path, json.dumps({"time_base": str(writer.stream.codec_context.time_base),
                                   "packets": writer.packet_times}).encode())


def packet_times_path(part: Path) -> Path:
    return part.with_suffix(".times.json")


def _part_packets(parts: list[Path]) -> Iterator:
    """The video packets of ``parts`` in order, with the encoder's timestamps (:func:`write_packet_times`),
    their decoding timestamps kept increasing across the joins (a part's first packets are timed before the
    previous part's last ones when B-frames reorder)."""
    import json

    import av

    last = None
    for part in parts:
        times = json.loads(packet_times_path(part).read_text())
        time_base, stamps = Fraction(times["time_base"]), times["packets"]
        with av.open(str(part)) as container:
            packets = [p for p in container.demux(container.streams.video[0]) if p.size]
            if len(packets) != len(stamps):
                raise VideoError(f"{part}: holds {len(packets)} packets, its record {len(stamps)}")
            for packet, (pts, dts, duration) in zip(packets, stamps, strict=True):
                packet.time_base, packet.pts, packet.dts, packet.duration = time_base, pts, dts, duration or 0
                if last is not None and dts is not None:
                    floor = math.floor(last / time_base) + 1
                    if dts < floor:
                        if pts is not None and floor > pts:
                            raise VideoError(f"{part}: its timestamps cannot follow the previous part's")
                        packet.dts = floor
                if packet.dts is not None:
                    last = packet.dts * time_base
                yield packet


def join_videos(parts: list[Path], dst: str | os.PathLike, copy_from: VideoReader | None = None,
                segment: Segment = Segment(), rotation: int = 0, time_base: Fraction | None = None,
                rate: Fraction | None = None) -> int:
    """Join video files encoded alike (each starting on a key frame, with :func:`write_packet_times`) into
    ``dst`` without re-encoding, in ``time_base`` (the source's), adding the streams of ``copy_from`` (audio,
    subtitles) in the ``segment``, as :class:`VideoWriter` does. Packets are written in time order, so memory
    does not grow with the length. Returns the frames."""
    import heapq

    import av

    if not parts:
        raise VideoError(f"{dst}: no frames to write")
    with av.open(str(parts[0])) as first:
        template = first.streams.video[0]
        size = (template.codec_context.width, template.codec_context.height)
        writer = VideoWriter(dst, size, rate or Fraction(template.average_rate or 25), time_base, copy_from=copy_from,
                             segment=segment, rotation=rotation, template=template,
                             sample_aspect_ratio=template.sample_aspect_ratio)
    try:
        def timed(packets: Iterator, shift: bool) -> Iterator:
            for n, packet in enumerate(packets):
                t = (packet.dts if packet.dts is not None else packet.pts or 0) * packet.time_base
                if shift and segment.start:
                    t -= Fraction(segment.start)
                yield t, n, shift, packet

        streams = [timed(_part_packets(parts), False)]
        if copy_from is not None and copy_from.others:
            def others() -> Iterator:
                for packet in copy_from.container.demux(*copy_from.others):
                    if packet.dts is not None and packet.size:
                        yield packet

            if segment.start:
                copy_from.container.seek(int(segment.start / copy_from.video.time_base), stream=copy_from.video,
                                         backward=True)
            streams.append(timed(others(), True))
        for _, _, copied, packet in heapq.merge(*streams, key=lambda item: (item[0], item[2], item[1])):
            if copied:
                writer.copy(packet)
            else:
                writer.mux_video(packet)
        writer.close()
    except av.FFmpegError as e:
        writer.discard()
        raise VideoError(f"{dst}: joining the segments failed ({_reason(e)})") from None
    except BaseException:
        writer.discard()
        raise
    return writer.frames
