"""``superres demo``: the bundled photos shrunk x4, upscaled back by a network and by bicubic, scored."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from superres.cli.common import error, make_out_dir, read_integer, run_batch
from superres.cli.degrade import degrade_one, resize_one

SAMPLES = Path(__file__).parent.parent / "samples"

def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the bundled photos: shrink x4, upscale back with Real-ESRGAN and bicubic, score.
    Without ``--out`` the images go to a temporary folder that is removed at the end."""
    if args.out:
        return _demo(args, args.out)
    with tempfile.TemporaryDirectory(prefix="superres-demo-") as tmp:
        code = _demo(args, Path(tmp))
        print("(the images were in a temporary folder, now removed: --out DIR keeps them)")
        return code


def _demo(args: argparse.Namespace, out: Path) -> int:
    from superres.infer import Upscaler
    from superres.io import require_images, write_image
    from superres.metrics import niqe
    from superres.metrics.folders import load_for_metrics, score_folders
    from superres.metrics.report import format_table

    lr_dir, bic_dir, sr_dir = out / "lr_x4", out / "bicubic_x4", out / f"{args.model}_x4"
    for d in (lr_dir, bic_dir, sr_dir):
        make_out_dir(d)
    print(f"samples: {SAMPLES}\n1. LR x4 by MATLAB bicubic -> {lr_dir}\n2. x4 back by bicubic -> {bic_dir}\n"
          f"3. x4 back by {args.model} -> {sr_dir}")
    files = require_images(SAMPLES)
    _, failed = run_batch(files, lambda f: degrade_one(f, lr_dir, 4, "bicubic"), quiet=True)
    _, failed2 = run_batch(require_images(lr_dir), lambda f: resize_one(f, bic_dir, 4), quiet=True)
    upscaler = Upscaler(args.model)

    def upscale_one(f: Path) -> None:
        img, info = read_integer(f)
        write_image(sr_dir / f"{f.stem}.png", upscaler.upscale_array(img), info)

    _, failed3 = run_batch(require_images(lr_dir), upscale_one, quiet=True)
    print("4. scores against the originals (Y channel, border 4; NIQE: lower is more natural):")
    rows = []
    for method, folder in (("bicubic", bic_dir), (args.model, sr_dir)):
        records, _, problems = score_folders(SAMPLES, folder, crop_border=4, y_channel=True, modcrop=4)
        for p in problems:
            error(p)
        for r in records:
            r["niqe"] = niqe(load_for_metrics(folder / f"{r['name']}.png"), 4)
            r["name"] = f"{r['name']} {method}"
        rows += records
    print(format_table(rows, ["psnr", "ssim", "niqe"]))
    print("(PSNR rewards the mean guess, i.e. blur; NIQE needs no reference and rewards natural-looking detail.)")
    return 1 if failed or failed2 or failed3 else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="upscale the bundled photos x4 with Real-ESRGAN and bicubic, and score them")
    p.add_argument("--out", type=Path, help="output folder (default: a temporary folder, removed at the end)")
    p.add_argument("-m", "--model", default="realesrgan-x4plus")
    p.set_defaults(func=cmd_demo)
