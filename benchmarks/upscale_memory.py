"""Peak memory (RSS) of `superres upscale` on a big photo, in a fresh process.

Makes a 2000x2000 photo (the bundled astronaut, enlarged) and upscales it x4 to 8000x8000 with
the default settings (tile auto), then prints the child's peak RSS and the time. ``--bits 16``
saves the photo as a 16-bit PNG (it then runs in fp32 under ``auto``, on the ncnn runtime where
the image fits its tile budget, else on PyTorch).

    python benchmarks/upscale_memory.py [--size 2000] [--bits 16] [--model realesrgan-x4plus] [-- extra upscale args]
    python benchmarks/upscale_memory.py --per-pixel ncnn   # a backend's peak bytes per input pixel (fp32)

Measured (issue 28, 2-core AMD EPYC, fp32): a 600x600 16-bit PNG peaked at 1.5 GiB (it was killed
at 12 GB before the ncnn path honoured the budget); ``--per-pixel``: realesrgan-x4plus 61 KB on
ncnn against 2.2 KB on PyTorch, x4plus-anime 61 KB, animevideov3 3.4 KB. On a 2-core Intel Xeon (AMX,
avx512_bf16), realesrgan-x4plus: ncnn 64.0 KB; PyTorch fp32 3.3 KB at 96x96, 3.1 KB at 192x192, 2.6 KB at
384x384 (fp32 output included, 192 bytes); PyTorch bf16 (not in ``--per-pixel``) 2.2 KB at 192x192 and 1.8 KB
at 384x384: bf16 activations are 0.67 of fp32's there, not half (``superres.infer.image.HALF_PRECISION_MEMORY``).
``--bits 16`` on that Xeon (2000x2000, fp32 in PyTorch tiles): peak RSS 2194 MiB, 3202 s with other jobs on
its 2 cores.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

from superres.io import read_image, to_integer, write_image

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "superres" / "samples" / "astronaut.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--model", default="realesrgan-x4plus")
    parser.add_argument("--bits", type=int, choices=[8, 16], default=8)
    parser.add_argument("--per-pixel", choices=["ncnn", "torch"], help="measure one fp32 forward's bytes per pixel")
    parser.add_argument("extra", nargs="*", help="more `superres upscale` arguments")
    args = parser.parse_args()
    if args.per_pixel:
        return per_pixel(args.model, args.per_pixel)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "big.png"
        photo = read_image(SAMPLE)[0][..., :3]
        big = cv2.resize(photo, (args.size, args.size), interpolation=cv2.INTER_CUBIC)
        write_image(src, to_integer(big, args.bits))
        cmd = [sys.executable, "-m", "superres", "upscale", str(src), "-o", str(Path(tmp) / "out.png"),
               "-m", args.model, *args.extra]
        t = time.perf_counter()
        result = subprocess.run(cmd, capture_output=True, text=True)
        elapsed = time.perf_counter() - t
        if result.returncode:
            sys.exit(result.stderr)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB -> MiB (Linux)
        out = read_image(Path(tmp) / "out.png", max_pixels=None)[0]
        print(f"{args.model}: {args.size}x{args.size} -> {out.shape[1]}x{out.shape[0]} in {elapsed:.0f} s, "
              f"peak RSS {peak:.0f} MiB ({peak / 1024:.2f} GiB)")


_PER_PIXEL = """
import resource, sys
import numpy as np
from superres.runner import Runner
from superres.infer.image import ncnn_files
from superres.runtime import RunOptions
from superres.zoo import MODELS, load_model
name, backend, side = sys.argv[1], sys.argv[2], int(sys.argv[3])
runner = Runner(load_model(name), RunOptions(precision="fp32", backend=backend), ncnn_files=ncnn_files(MODELS[name]))
runner.forward(np.zeros((8, 8, 3), np.float32), "fp32")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
runner.forward(np.random.default_rng(0).random((side, side, 3), np.float32), "fp32")
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 / side**2)
"""


def per_pixel(model: str, backend: str, side: int = 96) -> None:
    """Peak RSS growth of one fp32 forward on a side x side input, per input pixel, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", _PER_PIXEL, model, backend, str(side)], capture_output=True,
                         text=True, check=True).stdout
    print(f"{model} on {backend}, fp32: {float(out):.0f} bytes per input pixel ({side}x{side} input)")


if __name__ == "__main__":
    main()
