"""``superres models`` (the named pretrained models) and ``superres interpolate`` (ESRGAN's network interpolation)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def cmd_models(args: argparse.Namespace) -> int:
    from superres.zoo import DEFAULT_MODEL, MODELS
    from superres.zoo.pretrained import is_available

    rows = [("name", "scale", "size", "purpose", "available")]
    for name, spec in MODELS.items():
        avail = "yes" if is_available(name) else f"no ({spec.install})"
        rows.append((name + (" (default)" if name == DEFAULT_MODEL else ""), f"x{spec.scale}",
                     _count(spec.params) + f" {spec.arch}", spec.purpose, avail))
    rows.append(("bicubic", "any", "-", "MATLAB bicubic baseline, no network", "yes"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print("\nAny checkpoint file load_model reads also works as -m PATH (.pth, .safetensors).")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from superres.zoo import interpolate, save_model

    mixed = interpolate(args.model_a, args.model_b, args.alpha)
    save_model(mixed, args.output, provenance=f"interpolate({args.model_a}, {args.model_b}, alpha={args.alpha})")
    print(f"{args.output}: {mixed.arch}, {1 - args.alpha:g} x {args.model_a} + {args.alpha:g} x {args.model_b}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the named pretrained models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("interpolate", help="network interpolation (ESRGAN): (1 - alpha) A + alpha B",
                       description="Blend two checkpoints of the same architecture weight by weight, e.g. "
                       "A = a PSNR-oriented model, B = its GAN fine-tune. Writes safetensors.")
    p.add_argument("model_a", metavar="A")
    p.add_argument("model_b", metavar="B")
    p.add_argument("--alpha", type=float, required=True, help="weight of B, in [0, 1]")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .safetensors file")
    p.set_defaults(func=cmd_interpolate)
