"""``superres video``: a video file or a folder of frames, streamed through a network."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from superres.cli.common import (
    TILE_HELP,
    add_face_arguments,
    add_ray_argument,
    add_runtime_arguments,
    bounded_number,
    face_options,
    outscale_option,
    progress_bar,
    refuse_overwriting_input,
    run_options,
)
from superres.errors import SuperresError


def _seconds(text: str | None) -> float | None:
    """Seconds from ``12.5``, ``1:02.5`` or ``0:01:02.5``."""
    if text is None:
        return None
    try:
        value = 0.0
        for part in text.split(":"):
            value = value * 60 + float(part)
        return value
    except ValueError:
        raise SuperresError(f"{text!r} is not a time (seconds, MM:SS or HH:MM:SS)") from None


def _whole(low: int):
    """An argparse type: a whole number >= ``low``, or one line saying what it takes."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        return value

    return parse


def cmd_video(args: argparse.Namespace) -> int:
    from superres.io import storage

    if storage.is_url(args.output):
        if storage.exists(args.output) and not args.overwrite:
            raise SuperresError(f"{args.output}: exists (use --overwrite to replace it)")
    else:
        args.output = Path(args.output)
        if not storage.is_url(args.input):
            args.input = Path(args.input)
            refuse_overwriting_input(args.input, args.output)  # a file, or a folder of frames, even with --overwrite
        if args.output.exists() and args.output.is_file() and not args.overwrite:
            raise SuperresError(f"{args.output}: exists (use --overwrite to replace it)")
    from superres.infer.video import DEFAULT_VIDEO_MODEL, upscale_video

    bar = None
    segments = ""

    def progress(done: int, total: int | None) -> None:
        nonlocal bar
        if bar is None:  # made at the first frame, once the number of frames is known (if it can be)
            bar = progress_bar(total=total, unit="frame")
            bar.set_postfix_str(segments, refresh=False)
        bar.update(done - bar.n)

    def on_segment(done: int, total: int, reused: int) -> None:
        nonlocal segments
        segments = f"segments {done}/{total}" + (f", {reused} reused" if reused else "")
        if bar is not None:
            bar.set_postfix_str(segments)

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    try:
        result = upscale_video(args.input, args.output, model=args.model or DEFAULT_VIDEO_MODEL,
                               outscale=args.outscale, options=run_options(args), codec=args.codec, crf=args.crf,
                               pix_fmt=args.pix_fmt, start=_seconds(args.start), end=_seconds(args.end),
                               fps=args.fps, progress=False if args.quiet else progress, preset=args.preset,
                               face_model=args.face_model, face_options=face_options(args), jobs=args.jobs,
                               segment_frames=args.segment_frames, log=log, on_segment=on_segment, ray=args.ray,
                               interpolate=args.interpolate, target_fps=args.target_fps,
                               interpolation=args.interpolation, interpolation_model=args.interpolation_model,
                               interpolate_first=args.interpolate_first)
    except OSError as e:  # an output folder that cannot be made or written (under a file, a read-only disk)
        raise SuperresError(f"{e.filename or args.output}: {e.strerror or e}") from None
    finally:
        if bar is not None:
            bar.close()
    if not args.quiet:
        print(f"{args.output}: {result.frames} frames at {result.size[0]}x{result.size[1]} "
              f"({result.fps:.2f} frames/s)", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("video", help="upscale a video (sound, subtitles and timing kept) or a folder of frames",
                       description="Upscale a video in segments cut at its shots: memory does not grow with "
                       "its length, and an interrupted run goes on where it stopped when the same command is run "
                       "again (finished segments are kept in a work folder beside OUT). Frame timestamps (variable "
                       "frame rates too), rotation and pixel aspect are kept; audio and subtitle streams are copied "
                       "without re-encoding. The output appears only when complete. IN/OUT may be folders of "
                       "frames (PNG out).")
    p.add_argument("input", metavar="IN", help="a video file or a folder of frames (or a URL: s3://bucket/clip.mp4)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="a video file or a folder (or a URL)")
    # the default lives in infer.video (DEFAULT_VIDEO_MODEL), which the server's video jobs use too; importing
    # it here would load PyTorch at every start of the command line
    p.add_argument("-m", "--model",
                   help="a name from `superres models`, a checkpoint path, or bicubic (default: "
                   "realesr-animevideov3, as the server's video jobs)")
    outscale_option(p)
    p.add_argument("--codec", default="auto",
                   help="auto / h264 / hevc: NVIDIA's hardware encoder if this machine's GPU has one (tested "
                   "first), else libx264 / libx265; or a named encoder, e.g. libx264, libx265, libvpx-vp9, ffv1")
    p.add_argument("--crf", type=int, default=18,
                   help="quality for x264/x265/vp9/av1, and NVENC's constant quality cq (lower is better)")
    p.add_argument("--pix-fmt", default="yuv420p", help="pixel format of the output, e.g. yuv420p, yuv444p")
    p.add_argument("--preset", default="veryfast",
                   help="x264/x265 speed preset (ultrafast ... veryslow); slower ones make smaller files")
    p.add_argument("--start", help="start time (seconds or [HH:]MM:SS)")
    p.add_argument("--end", help="end time (seconds or [HH:]MM:SS)")
    p.add_argument("--fps", type=bounded_number(0.001, 1000), help="frame rate of a folder of frames (default 25)")
    p.add_argument("--tile", default="auto", help=TILE_HELP)
    p.add_argument("--batch", default="auto",
                   help="frames per network call: auto (as many as GPU memory holds, up to 8; 1 on the CPU) or N")
    p.add_argument("--jobs", type=_whole(1),
                   help="segments run at once, in as many processes (default: one per device of --device, e.g. "
                   "--device cuda:0,cuda:1; on the CPU the jobs share its cores); the output is the same")
    p.add_argument("--segment-frames", type=_whole(0),
                   help="frames per segment, the unit of resuming and of sharing between jobs (default: 300, or "
                   "what a recurrent network's memory budget holds); 0 runs the video as one stream")
    p.add_argument("--interpolate", type=_whole(1), default=1, metavar="N",
                   help="N times the frames: N-1 new frames between each pair (RIFE by default), exact timestamps, "
                   "the sound untouched; across a scene cut the frame is repeated")
    p.add_argument("--target-fps", type=bounded_number(0.001, 1000), metavar="FPS",
                   help="interpolate up to this frame rate, a whole multiple of the source's (instead of "
                   "--interpolate; --fps is the rate of a folder of input frames)")
    p.add_argument("--interpolation", choices=["rife", "blend", "repeat"], default="rife",
                   help="how new frames are made: rife (a network; superres fetch rife-v4.0), blend (the two "
                   "neighbours mixed), repeat")
    p.add_argument("--interpolation-model", metavar="NAME", help="the RIFE model (default rife-v4.0)")
    p.add_argument("--interpolate-first", action="store_true",
                   help="interpolate the source's frames, then upscale them all: faster with a light upscaler "
                   "(default: upscale, then interpolate: RIFE's frames score 0.5-2.6 dB higher from sharp frames, "
                   "and the upscaler runs on the source's frames only)")
    add_face_arguments(p)
    add_runtime_arguments(p)
    add_ray_argument(p)
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_video)
