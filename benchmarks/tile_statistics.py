"""Tiles against the whole image, with and without the whole image's statistics, side by side.

For each model (default: realcugan-2x-conservative, whose squeeze-and-excitation blocks scale features by
their mean over the whole image), upscale a crop of a bundled photo whole, then in tiles three ways:
- ``own``: each tile with its own statistics, on the declared grid (superres before issue 36's last step);
- ``grid``: each tile with its own statistics, on the probed grid (downsampling strides);
- ``shared``: on the probed grid, every tile with the whole image's statistics (the default now).
It prints the largest difference from the whole image (in 1/255), the PSNR between them, the margin each
way measures, and the time against the whole pass.

    python benchmarks/tile_statistics.py [--models realcugan-2x-conservative ...] [--size 256] [--tile 128]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import superres.infer.image as image_module
from superres.infer.context import SAMPLES, measure_margin
from superres.infer.image import Upscaler, declared_alignment, network_probe, tile_alignment
from superres.io import read_image


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["realcugan-2x-conservative"])
    parser.add_argument("--size", type=int, default=512, help="side of the photo crop")
    parser.add_argument("--tile", type=int, default=480)
    args = parser.parse_args()
    photo = read_image(sorted(SAMPLES.glob("*.png"))[0])[0][..., :3]
    image = np.ascontiguousarray(photo[:args.size, :args.size])
    options = {"device": "cpu", "precision": "fp32", "backend": "torch"}
    for model in args.models:
        start = time.perf_counter()
        whole = Upscaler(model, tile=0, **options).upscale_array(image)
        whole_s = time.perf_counter() - start
        print(f"{model}: {args.size}x{args.size} crop of {sorted(SAMPLES.glob('*.png'))[0].name}, whole pass "
              f"{whole_s:.1f} s")
        for way in ("own", "grid", "shared"):
            up = Upscaler(model, tile=args.tile, tile_pad=0, **options)
            found = network_probe(up.desc)
            align = declared_alignment(up.desc) if way == "own" else found.grid
            statistics = up.statistics if way == "shared" else None
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                margin = measure_margin(lambda x, up=up: up.runner.forward(x, "fp32"), up.scale, up.in_channels,
                                        name=model, align=align, statistics=statistics)
            far = any("looks further" in str(w.message) for w in caught)
            # "own": the declared grid, as tile_alignment gave it before it probed the network
            image_module.tile_alignment = declared_alignment if way == "own" else tile_alignment
            try:
                up = Upscaler(model, tile=args.tile, tile_pad=margin, **options)
                up._statistics = statistics
                plan = up.plan(*image.shape[:2])
                start = time.perf_counter()
                tiles = up.upscale_array(image)
                seconds = time.perf_counter() - start
            finally:
                image_module.tile_alignment = tile_alignment
            passes = f", {statistics.passes} passes to share its statistics" if statistics is not None else ""
            print(f"  {way:6s} grid {align:2d}, margin {margin:3d}{' (does not settle)' if far else ''}, tiles "
                  f"{plan.tile}{passes}: max |tiles - whole| {np.abs(tiles - whole).max() * 255:6.3f}/255, "
                  f"PSNR {_psnr(tiles, whole):6.1f} dB, {seconds:.1f} s ({seconds / whole_s:.2f}x the whole pass)")


if __name__ == "__main__":
    main()
