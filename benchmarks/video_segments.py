"""Long videos in segments (``superres video``), measured side by side in one run:

1. quality: per Vid4 clip (x4 MATLAB bicubic LR frames), ``superres video`` on the folder of LR frames with
   ``basicvsr-vimeo-bi`` (default segments) against whole-clip ``superres eval`` (Y-PSNR, no border crop,
   every frame);
2. memory: peak RSS of ``superres video`` on 100 and 400 frames, a recurrent model with a segment cap and
   an image model (each in a fresh process): both lengths have middle segments, so both peak at one segment
   with its context at both ends;
3. ``--jobs 2`` against ``--jobs 1`` throughput on this machine (``realesr-animevideov3``, a real clip);
4. segmenting's overhead against the single stream (``--segment-frames 0``), the same clip and model.

    python benchmarks/video_segments.py [--data ../shared/data] [--frames 100]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def quality(data: Path, work: Path) -> None:
    from superres.data.video import eval_clips
    from superres.infer.video import upscale_video, video_runner
    from superres.io import read_rgb8, write_image
    from superres.metrics.evaluate import EVAL_OPTIONS, evaluate_clips, score_images
    from superres.zoo import load_model

    model = "basicvsr-vimeo-bi"
    clips = eval_clips(data / "Vid4" / "GT", 4)
    whole = {r["name"]: r["psnr"] for r in evaluate_clips(video_runner(load_model(model), options=EVAL_OPTIONS,
                                                                        whole_clips=True), clips)}
    print(f"1. {model} on Vid4 BI x4, Y-PSNR (dB): whole-clip eval | superres video (default segments)")
    for name, hr, lr in clips:
        folder = work / "lr" / name
        folder.mkdir(parents=True)
        for i, f in enumerate(lr):
            write_image(folder / f"{i:08d}.png", f)
        out = work / "sr" / name
        upscale_video(folder, out, model=model, options=EVAL_OPTIONS)
        outputs = [read_rgb8(p) for p in sorted(out.glob("*.png"))]
        score = np.mean([score_images(a, b, 0, True)["psnr"] for a, b in zip(outputs, hr, strict=True)])
        print(f"   {name}: {whole[name]:.4f} | {score:.4f} ({score - whole[name]:+.4f})", flush=True)


def peak_rss(model: str, frames: Path, segment_frames: int | None, cache: Path) -> str:
    """``upscale_video`` on a folder of frames in a fresh process (``cache``: its SUPERRES_CACHE_DIR); its peak
    RSS (MiB) and seconds."""
    code = f"""
import time
from superres.infer.video import upscale_video
tic = time.perf_counter()
upscale_video({str(frames)!r}, {str(frames) + "_out.mkv"!r}, model={model!r}, segment_frames={segment_frames},
              device="cpu", codec="libx264")
seconds = time.perf_counter() - tic
peak = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")][0] / 1024
print(f"{{peak:.0f}} MiB, {{seconds:.0f}} s")
"""
    env = {**os.environ, "SUPERRES_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=env).stdout.strip()


def memory(data: Path, work: Path, recurrent: str) -> None:
    from superres.io import read_rgb8, write_image

    lr = [read_rgb8(p)[::4, ::4][:48, :64] for p in sorted((data / "Vid4" / "GT" / "calendar").glob("*"))]
    print("2. peak RSS of superres video on 64x48 frames (calendar, played back and forth), 100 vs 400 frames:")
    for count in (100, 400):
        folder = work / f"frames{count}"
        folder.mkdir()
        for i in range(count):
            k = i % (2 * len(lr) - 2)
            write_image(folder / f"{i:06d}.png", lr[k if k < len(lr) else 2 * len(lr) - 2 - k])
    # a cap that gives both lengths middle segments (context at both ends): a segment's memory, not the clip's
    for model, cap in ((recurrent, 25), ("realesr-animevideov3", None)):
        label = f"segments of at most {cap} frames" if cap else "default segments"
        first = peak_rss(model, work / "frames100", cap, cache=work / "cache")  # measures the temporal context
        runs = [peak_rss(model, work / f"frames{count}", cap, cache=work / "cache") for count in (100, 400)]
        print(f"   {model} ({label}): 100 frames {runs[0]}; 400 frames {runs[1]} (the first run, which measures "
              f"the temporal context and converts the weights: {first})", flush=True)


def timed(src: Path, dst: Path, **kw) -> float:
    from superres.infer.video import upscale_video

    tic = time.perf_counter()
    result = upscale_video(src, dst, model="realesr-animevideov3", device="cpu", **kw)
    seconds = time.perf_counter() - tic
    return result.frames / seconds


def throughput(data: Path, work: Path, end: float) -> None:
    src = data / "video" / "bikes.mp4"
    one = timed(src, work / "one.mp4", end=end, segment_frames=0)
    seg = timed(src, work / "seg.mp4", end=end)
    two = timed(src, work / "two.mp4", end=end, jobs=2)
    seg2 = timed(src, work / "seg2.mp4", end=end)
    print(f"3. --jobs 2 against --jobs 1 (realesr-animevideov3, bikes.mp4 640x272, first {end:g} s): "
          f"{two:.2f} vs {seg:.2f} frames/s ({two / seg:.2f}x)")
    print(f"4. segments against one stream, same clip: {seg:.2f} and {seg2:.2f} vs {one:.2f} frames/s "
          f"(overhead {100 * (one / seg - 1):+.1f}% and {100 * (one / seg2 - 1):+.1f}%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--seconds", type=float, default=2.0, help="of bikes.mp4 for items 3 and 4")
    parser.add_argument("--only", nargs="+", type=int, choices=[1, 2, 3], default=[1, 2, 3],
                        help="which items to run (3: items 3 and 4)")
    parser.add_argument("--recurrent", default="basicvsr-small-x4",
                        help="the recurrent model of item 2 (basicvsr-vimeo-bi: about an hour on 2 CPU cores)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if 1 in args.only:
            quality(args.data, work)
        if 2 in args.only:
            memory(args.data, work, args.recurrent)
        if 3 in args.only:
            throughput(args.data, work, args.seconds)


if __name__ == "__main__":
    main()
