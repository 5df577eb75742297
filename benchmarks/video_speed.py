"""Video throughput on the CPU, frames per second, measured side by side:

- ``superres video`` (streaming: decode, upscale, encode, in one process with overlapping threads);
- per-frame ``superres upscale`` on the same frames extracted to PNG (the usual "extract frames,
  upscale the folder" workflow; extraction and re-assembly are not timed, only the upscale);
- the ncnn CPU runtime (fp32, same threads) on the same frames: the network alone, and with
  PNG frames read and written as realesrgan-ncnn-vulkan does.

All with realesr-animevideov3 on a 480p (854x480) H.264 clip panning over a bundled photo.

    python benchmarks/video_speed.py [--frames 8] [--rounds 3] [--threads 2]
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

    sample = Path(__file__).resolve().parents[1] / "src/superres/samples/chelsea.png"
    photo = (read_image(sample)[0][..., :3] * 255).astype(np.uint8)
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
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="the paths take turns this many times; medians")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from upscale_speed import ncnn_runner

    from superres.cli import main as cli
    from superres.infer.video import upscale_video

    ncnn_run = ncnn_runner(MODEL, args.threads)
    times: dict[str, list[float]] = {}

    def timed(label: str, run, *args) -> None:
        t = time.perf_counter()
        run(*args)
        times.setdefault(label, []).append(time.perf_counter() - t)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        frames = make_clip(root / "clip.mp4", args.frames)
        (root / "frames").mkdir()
        for i, f in enumerate(frames):
            write_image(root / "frames" / f"{i:06d}.png", f)
        upscale_video(root / "clip.mp4", root / "warm.mp4", MODEL, end=0.001)  # conversion cache, first-call costs

        def ncnn_files(folder: Path) -> None:  # as realesrgan-ncnn-vulkan runs: PNG frames in, PNG frames out
            folder.mkdir()
            for f in sorted((root / "frames").iterdir()):
                sr = ncnn_run(read_image(f)[0][..., :3])
                write_image(folder / f.name, (sr * 255).round().astype(np.uint8))

        for r in range(args.rounds):  # taking turns spreads the machine's slow spells over all paths
            timed("superres video (streaming)", upscale_video, root / "clip.mp4", root / f"out{r}.mp4", MODEL)
            timed("superres upscale on PNG frames",
                  cli, ["upscale", str(root / "frames"), "-o", str(root / f"up{r}"), "-m", MODEL, "-q"])
            if ncnn_run:
                timed("ncnn runtime, PNG in and out", ncnn_files, root / f"ncnn{r}")
                timed("ncnn runtime (network only)", lambda: [ncnn_run(f.astype(np.float32) / 255) for f in frames])
    print(f"{MODEL}, {args.frames} frames 854x480 -> 3416x1920, {args.threads} threads, "
          f"median of {args.rounds} rounds")
    fps = {label: args.frames / float(np.median(t)) for label, t in times.items()}
    stream = fps["superres video (streaming)"]
    for label, value in fps.items():
        runs = ", ".join(f"{args.frames / t:.3f}" for t in times[label])
        print(f"  {label:<32} {value:6.3f} frames/s   streaming / this: {stream / value:5.2f}x   ({runs})")
    print("  (the network alone reads and writes no file: a bound for the others, not a way to upscale a video)")


if __name__ == "__main__":
    main()
