"""Video throughput on the CPU, frames per second, measured side by side:

- ``superres video`` (streaming: decode, upscale, encode, in one process with overlapping threads);
- per-frame ``superres upscale`` on the same frames extracted to PNG (the usual "extract frames,
  upscale the folder" workflow; extraction and re-assembly are not timed, only the upscale);
- the ncnn CPU runtime (fp32, same threads) on the same frames: the network alone, and with
  PNG frames read and written as realesrgan-ncnn-vulkan does.

All with realesr-animevideov3 on a 480p (854x480) H.264 clip panning over a bundled photo.

    python benchmarks/video_speed.py [--frames 6] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from superres.io import read_image, write_image

MODEL = "realesr-animevideov3"


def make_clip(path: Path, frames: int, size: tuple[int, int] = (854, 480)) -> list[np.ndarray]:
    import av
    import cv2

    photo = (read_image("src/superres/samples/chelsea.png")[0][..., :3] * 255).astype(np.uint8)
    big = cv2.resize(photo, (size[0] + 4 * frames, size[1] + 2 * frames), interpolation=cv2.INTER_CUBIC)
    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
    for i in range(frames):
        crop = np.ascontiguousarray(big[2 * i:2 * i + size[1], 4 * i:4 * i + size[0]])
        out.mux(stream.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")))
    out.mux(stream.encode(None))
    out.close()
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from superres.cli import main as cli
    from superres.infer.video import upscale_video

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        frames = make_clip(root / "clip.mp4", args.frames)
        (root / "frames").mkdir()
        for i, f in enumerate(frames):
            write_image(root / "frames" / f"{i:06d}.png", f)
        upscale_video(root / "clip.mp4", root / "warm.mp4", MODEL, end=0.001)  # conversion cache, first-call costs

        rows = []
        t = time.perf_counter()
        upscale_video(root / "clip.mp4", root / "out.mp4", MODEL)
        rows.append(("superres video (streaming)", time.perf_counter() - t))
        t = time.perf_counter()
        cli(["upscale", str(root / "frames"), "-o", str(root / "up"), "-m", MODEL, "-q"])
        rows.append(("superres upscale on PNG frames", time.perf_counter() - t))
        from upscale_speed import ncnn_runner

        ncnn_run = ncnn_runner(MODEL, args.threads)
        if ncnn_run:
            ncnn_run(frames[0].astype(np.float32) / 255)  # warm-up
            t = time.perf_counter()
            for f in frames:
                ncnn_run(f.astype(np.float32) / 255)
            rows.append(("ncnn runtime (network only)", time.perf_counter() - t))
            (root / "ncnn").mkdir()
            t = time.perf_counter()  # as realesrgan-ncnn-vulkan runs: PNG frames in, PNG frames out
            for f in sorted((root / "frames").iterdir()):
                sr = ncnn_run(read_image(f)[0][..., :3])
                write_image(root / "ncnn" / f.name, (sr * 255).round().astype(np.uint8))
            rows.append(("ncnn runtime, PNG in and out", time.perf_counter() - t))
    print(f"{MODEL}, {args.frames} frames 854x480 -> 3416x1920, {args.threads} threads")
    stream_fps = args.frames / rows[0][1]
    for label, seconds in rows:
        fps = args.frames / seconds
        print(f"  {label:<32} {fps:6.3f} frames/s   streaming / this: {stream_fps / fps:5.2f}x")


if __name__ == "__main__":
    main()
