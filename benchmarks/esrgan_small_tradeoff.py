"""The perception-distortion trade-off of a small ESRGAN pair trained with this repo's recipes.

The shipped ``esrgan-small-psnr-x4`` (configs/esrgan_small_psnr_x4.yaml, L1 only) and its GAN fine-tune
``esrgan-small-x4`` (configs/esrgan_small_x4.yaml), or any two runs' models (``--a``, ``--b``), blended
weight by weight as ESRGAN's network interpolation (Wang et al., ECCVW 2018, Sec. 3.4), scored on
held-out images: the first 20 BSD200 images (the recipes' validation images, left out of training)
and Set5. Y-PSNR/SSIM (crop 4) and NIQE/BRISQUE of the outputs; the table goes to stdout and, with
``-o DIR``, sweep.csv/json and sweep.png (PSNR against NIQE) per set, as ``superres interpolate --sweep``.

    python benchmarks/esrgan_small_tradeoff.py [--alphas 0:1:0.25] [-o DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "../shared/data")
    parser.add_argument("--alphas", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--a", default="esrgan-small-psnr-x4", help="the PSNR-oriented model (e.g. "
                        "runs/esrgan_small_psnr_x4/model.safetensors)")
    parser.add_argument("--b", default="esrgan-small-x4", help="its GAN fine-tune")
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    from superres.io import list_images
    from superres.metrics.report import format_table, write_report
    from superres.metrics.sweep import SWEEP_KEYS, interpolation_sweep, plot_sweep

    alphas = [float(a) for a in args.alphas.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        held_out = Path(tmp) / "bsd200-20"
        held_out.mkdir()
        for f in list_images(args.data / "BSD200")[:20]:
            (held_out / f.name).symlink_to(f.resolve())
        for name, folder in (("BSD200, first 20 (held out)", held_out), ("Set5", args.data / "Set5" / "HR")):
            rows = interpolation_sweep(args.a, args.b, folder, alphas)
            print(f"\n{name}: alpha = weight of {args.b}")
            print(format_table(rows, SWEEP_KEYS))
            if args.output:
                out = args.output / folder.name
                out.mkdir(parents=True, exist_ok=True)
                write_report(rows, SWEEP_KEYS, out / "sweep.json", out / "sweep.csv")
                plot_sweep(rows, out / "sweep.png", title=f"{args.a} -> {args.b}, {name}")


if __name__ == "__main__":
    main()
