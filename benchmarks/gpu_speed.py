"""Speed of `superres upscale` on a CUDA GPU against the plain PyTorch paths, measured side by side.

For realesrgan-x4plus on real photo crops, prints images/s, the ratio to Real-ESRGAN's default GPU
path (its inference script runs the network in fp16, NCHW, ``half=True``), the agreement of each
output with fp32 (PSNR) and the peak GPU memory:
- plain forward: fp32 NCHW (the script's ``--fp32``), fp16 NCHW, fp16 channels-last, bf16 NCHW;
- ``superres.upscale`` on the 8-bit image (what users run) at the default precision (auto: fp16 on
  GPUs with tensor cores), fp32 and bf16, whole image (tile 0), at the default tiling (the whole
  path: arrays in and out), and compiled (``compile=True``, timed after its first call).

    python benchmarks/gpu_speed.py [--sizes 256 512] [--repeat 5]
"""

from __future__ import annotations

import argparse
import copy
import time
from functools import partial

import numpy as np
import torch

from superres.infer import upscale
from superres.io import read_image
from superres.metrics import psnr
from superres.zoo import load_model

SAMPLE = "src/superres/samples/astronaut.png"


def timed(fn, repeat: int) -> tuple[float, np.ndarray]:
    out = fn()  # warm-up (cuDNN picks its algorithms)
    fn()
    torch.cuda.synchronize()
    tic = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - tic) / repeat, out


def plain_paths(net: torch.nn.Module, image: np.ndarray):
    """(name, forward) for the network called directly, each on its own copy of the weights."""
    x = torch.from_numpy(image.transpose(2, 0, 1)).unsqueeze(0).cuda()
    for name, dtype, layout in (("plain fp32", torch.float32, torch.contiguous_format),
                                ("plain fp16 (Real-ESRGAN's default)", torch.float16, torch.contiguous_format),
                                ("plain fp16 channels-last", torch.float16, torch.channels_last),
                                ("plain bf16", torch.bfloat16, torch.contiguous_format)):
        m = copy.deepcopy(net).to(dtype=dtype, memory_format=layout)
        xi = x.to(dtype=dtype, memory_format=layout)

        def run(m=m, xi=xi) -> np.ndarray:
            with torch.inference_mode():
                return m(xi).float().clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
        yield name, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="realesrgan-x4plus")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device")
    net = load_model(args.model).module.cuda().eval()
    photo = read_image(SAMPLE)[0][..., :3]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {args.model}")
    for size in args.sizes:
        reps = -(-size // min(photo.shape[:2]))
        # what users run: an 8-bit file (auto runs 8-bit images in fp16 on tensor-core GPUs, others in fp32)
        image8 = np.round(np.tile(photo, (reps, reps, 1))[:size, :size] * 255).astype(np.uint8)
        image = image8.astype(np.float32) / 255
        paths = dict(plain_paths(net, image))

        def ours(image8=image8, **options) -> np.ndarray:
            return upscale(image8, args.model, device="cuda", **options).astype(np.float32) / 255

        for precision in ("auto", "fp32", "bf16"):
            paths[f"superres {precision}, tile 0"] = partial(ours, tile=0, precision=precision)
        paths["superres auto, default tiling"] = ours
        paths["superres auto, compiled, tile 0"] = partial(ours, tile=0, compile=True)
        results = {}
        for name, fn in paths.items():
            torch.cuda.reset_peak_memory_stats()
            seconds, out = timed(fn, args.repeat)
            results[name] = (seconds, out, torch.cuda.max_memory_allocated())
        reference = results["plain fp32"][1]
        base = results["plain fp16 (Real-ESRGAN's default)"][0]
        print(f"\n{size}x{size} -> {4 * size}x{4 * size}")
        print(f"{'path':<38} {'images/s':>9} {'vs fp16':>8} {'PSNR vs fp32':>13} {'peak GPU MiB':>13}")
        for name, (seconds, out, peak) in results.items():
            agreement = "-" if name == "plain fp32" else f"{psnr(out * 255, reference * 255):.1f} dB"
            print(f"{name:<38} {1 / seconds:9.2f} {base / seconds:7.2f}x {agreement:>13} {peak / 2**20:13.0f}")


if __name__ == "__main__":
    main()
