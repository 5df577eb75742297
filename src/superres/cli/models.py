"""``superres models`` (the named pretrained models) and ``superres interpolate`` (ESRGAN's network
interpolation, one blend or a sweep of the perception-distortion trade-off)."""

from __future__ import annotations

import argparse
from pathlib import Path

from superres.cli.common import check_output_file, make_out_dir
from superres.errors import SuperresError


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def cmd_models(args: argparse.Namespace) -> int:
    from superres.infer.image import minimum_tile
    from superres.zoo import DEFAULT_MODEL, MODELS
    from superres.zoo.pretrained import FACE_WEIGHTS_NOTE, is_available

    rows = [("name", "scale", "size", "purpose", "licence", "min tile", "available")]
    for name, spec in MODELS.items():
        avail = "yes" if is_available(name) else f"no ({spec.install})"
        rows.append((name + (" (default)" if name == DEFAULT_MODEL else ""), f"x{spec.scale}",
                     _count(spec.params) + f" {spec.arch}", spec.purpose, spec.licence,
                     str(minimum_tile(spec) or "-"), avail))
    rows.append(("bicubic", "any", "-", "MATLAB bicubic baseline, no network", "-", "-", "yes"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print("\nmin tile: the smallest --tile worth giving; below it the tiles overlap so much that they compute over "
          "2x the pixels of one pass (-: no tiles, or a margin measured on first use).")
    print("Any checkpoint file load_model reads also works as -m PATH (.pth, .safetensors).")
    print(FACE_WEIGHTS_NOTE)
    return 0


def _alphas(text: str) -> list[float]:
    """``0:1:0.1`` (start:stop:step, stop included) or ``0,0.5,0.8,1``."""
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            count = int((stop - start) / step + 1e-9) + 1 if step > 0 and stop >= start else 0
            values = [round(start + i * step, 9) for i in range(count)]
        else:
            values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(0 <= v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"alphas in [0, 1] as START:STOP:STEP or a,b,c; got {text!r}")
    return values


def cmd_sweep(args: argparse.Namespace) -> int:
    from superres.metrics.report import format_table, write_report
    from superres.metrics.sweep import SWEEP_KEYS, interpolation_sweep, plot_sweep

    out = args.output
    make_out_dir(out)  # one line, not a traceback, where -o is a file (an input, say)
    rows = interpolation_sweep(args.model_a, args.model_b, args.sweep, args.alphas, scale=args.scale,
                               lr_dir=args.lr_dir, progress=lambda r: print(f"alpha {r['alpha']:g}: PSNR "
                               f"{r['psnr']:.2f} dB, NIQE {r['niqe']:.3f}, BRISQUE {r['brisque']:.2f}", flush=True))
    print(format_table(rows, SWEEP_KEYS))
    write_report(rows, SWEEP_KEYS, out / "sweep.json", out / "sweep.csv")
    plot_sweep(rows, out / "sweep.png", f"{Path(args.model_a).name} -> {Path(args.model_b).name} on "
               f"{args.sweep.name}: alpha = weight of B")
    print(f"{out}: sweep.csv, sweep.json, sweep.png")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    if (args.alpha is None) == (args.sweep is None):
        raise SuperresError("give --alpha (one blend, -o FILE) or --sweep HR_DIR (a table and a plot, -o DIR)")
    if args.sweep is not None:
        return cmd_sweep(args)
    from superres.io.files import remove_stale_temps
    from superres.zoo import check_safetensors_name, interpolate, load_model, save_model

    check_safetensors_name(args.output)
    advice = "write the blend to another file"
    check_output_file(args.output, [args.model_a, args.model_b], args.overwrite, advice)
    a, b = load_model(args.model_a), load_model(args.model_b)
    check_output_file(args.output, [a.source, b.source], args.overwrite, advice)  # named models: their cached files
    mixed = interpolate(a, b, args.alpha)
    remove_stale_temps(args.output)  # of a run killed while writing
    save_model(mixed, args.output, provenance=f"interpolate({args.model_a}, {args.model_b}, alpha={args.alpha})")
    print(f"{args.output}: {mixed.arch}, {1 - args.alpha:g} x {args.model_a} + {args.alpha:g} x {args.model_b}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the named pretrained models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("interpolate", help="network interpolation (ESRGAN): (1 - alpha) A + alpha B",
                       description="Blend two checkpoints of the same architecture weight by weight, e.g. "
                       "A = a PSNR-oriented model, B = its GAN fine-tune. Writes safetensors. With --sweep, "
                       "score a range of alphas on a folder of HR images instead (Y-PSNR/SSIM, NIQE, BRISQUE) "
                       "and write sweep.csv, sweep.json and sweep.png (PSNR against NIQE) to -o DIR. "
                       "The perceptual index (PI) needs Ma et al.'s score, not obtainable offline: NIQE is plotted.")
    p.add_argument("model_a", metavar="A")
    p.add_argument("model_b", metavar="B")
    p.add_argument("--alpha", type=float, help="weight of B, in [0, 1]")
    p.add_argument("--sweep", type=Path, metavar="HR_DIR", help="score the blends on these images (LR by MATLAB "
                   "bicubic unless --lr-dir)")
    p.add_argument("--alphas", type=_alphas, default=_alphas("0:1:0.1"),
                   help="with --sweep: START:STOP:STEP or a,b,c (default 0:1:0.1)")
    p.add_argument("--scale", type=int, help="with --sweep: the models' scale (default: A's)")
    p.add_argument("--lr-dir", type=Path, help="with --sweep: LR images, same names")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output .safetensors file (--alpha) or folder (--sweep)")
    p.add_argument("--overwrite", action="store_true", help="with --alpha: replace the output file if it exists "
                   "(never an input)")
    p.set_defaults(func=cmd_interpolate)
