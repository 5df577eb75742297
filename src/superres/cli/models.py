"""``superres models`` (the named pretrained models; ``MODEL``: what one model or checkpoint file is and whose
code runs it; ``--archs``: every architecture superres loads) and ``superres interpolate`` (ESRGAN's network
interpolation, one blend or a sweep of the perception-distortion trade-off)."""

from __future__ import annotations

import argparse
from pathlib import Path

from superres.cli.common import check_output_file, make_out_dir
from superres.errors import SuperresError


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def cmd_models(args: argparse.Namespace) -> int:
    if args.archs:
        return _architectures()
    if args.model is not None:
        return _describe(args.model)
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
    _table(rows)
    print("\nmin tile: the smallest --tile worth giving; below it the tiles overlap so much that they compute over "
          "2x the pixels of one pass (-: no tiles, or a margin measured when an image first needs tiles).")
    print("Any checkpoint file load_model reads also works as -m PATH (.pth, .safetensors): `superres models PATH` "
          "says what it is, `superres models --archs` lists the architectures that load.")
    print(FACE_WEIGHTS_NOTE)
    return 0


def _describe(model: str) -> int:
    """What a named model or checkpoint file is: its architecture, whose code runs it and that code's licence,
    its facts and arguments."""
    from superres.zoo import load_model

    desc = load_model(model)
    sides = [f"multiple of {desc.size_multiple}" if desc.size_multiple > 1 else "",
             f"at least {desc.min_size}" if desc.min_size > 1 else ""]
    print(f"{model}: {desc.origin}")
    print(f"  {desc.purpose}, x{desc.scale}, {desc.in_channels} -> {desc.out_channels} channels; input sides: "
          f"{', '.join(s for s in sides if s) or 'any'} (the runner pads); precisions: {', '.join(desc.precisions)}")
    if desc.tiling != "supported":
        print(f"  tiling: {desc.tiling} (spandrel's advice; tiles get the context superres measures, --tile 0 runs "
              "images whole)")
    if desc.purpose == "inpainting":
        print("  inpainting needs a mask, which superres does not take: superres upscale refuses it")
    print("  arguments: " + ", ".join(f"{k}={v}" for k, v in desc.kwargs.items()))
    return 0


def _architectures() -> int:
    """Every architecture superres loads: its own (superres.archs) and spandrel's, with whose code runs each,
    what it is for and the licence of that code."""
    from superres.archs import REGISTRY
    from superres.zoo import _full_kwargs
    from superres.zoo import spandrel as bridge

    rows = [("architecture", "code", "purpose", "licence", "note")]
    for name, spec in REGISTRY.items():
        rows.append((name, "superres", spec.facts(_full_kwargs(spec.cls, {})).purpose, "Apache-2.0", ""))
    theirs = bridge.architectures()
    rows += theirs
    _table(rows)
    main = [arch for arch, code, *_ in theirs if code.startswith(bridge.SPANDREL + " ")]
    also = sum(arch in bridge.OURS_TOO for arch in main)
    main = len(main)
    print(f"\n{len(REGISTRY) + main - also} architectures load: {len(REGISTRY)} with superres's code, "
          f"{main - also} more with spandrel's ({main} in its registry, {also} of them superres's too: superres's "
          "code runs the files it builds, spandrel's the other variants).")
    if bridge.extra_registry() is None:
        print("Architectures under non-commercial licences (Restormer, SRFormer, DDColor...) load with "
              f'pip install "superres[extra-arches]" and {bridge.EXTRA_ENV}=1.')
    elif not bridge.extra_arches_opted_in():
        print(f"spandrel_extra_arches' architectures load once you accept their licences: {bridge.EXTRA_ENV}=1.")
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
    p = sub.add_parser("models", help="list the named pretrained models, or say what a model file is",
                       description="Without arguments: the named pretrained models. With MODEL (a name or a "
                       "checkpoint file): its architecture, whose code runs it (superres's, or spandrel's for the "
                       "architectures superres does not implement) and that code's licence, its purpose, scale, "
                       "channels, size requirements and arguments. --archs: every architecture that loads.")
    p.add_argument("model", nargs="?", metavar="MODEL", help="a named model or a checkpoint file")
    p.add_argument("--archs", action="store_true", help="list every architecture that loads, whose code runs it, "
                   "its purpose and licence")
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
