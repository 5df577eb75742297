"""Peak memory (RSS) of `superres upscale` on a big photo, in a fresh process.

Makes a 2000x2000 photo (the bundled astronaut, enlarged) and upscales it x4 to 8000x8000 with
the default settings (tile auto), then prints the child's peak RSS and the time.

    python benchmarks/upscale_memory.py [--size 2000] [--model realesrgan-x4plus] [-- extra upscale args]
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

from superres.io import read_image, write_image

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "superres" / "samples" / "astronaut.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--model", default="realesrgan-x4plus")
    parser.add_argument("extra", nargs="*", help="more `superres upscale` arguments")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "big.png"
        photo = read_image(SAMPLE)[0][..., :3]
        write_image(src, cv2.resize(photo, (args.size, args.size), interpolation=cv2.INTER_CUBIC))
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


if __name__ == "__main__":
    main()
