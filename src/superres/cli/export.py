"""``superres export``: a model as ONNX (dynamic batch, height and width), checked in ONNX Runtime."""

from __future__ import annotations

import argparse
from pathlib import Path

from superres.cli.common import refuse_overwriting_input
from superres.errors import SuperresError


def _check_output_file(output: Path, inputs: list[str | Path | None], overwrite: bool) -> None:
    """Refuse to write ``output`` over an input file (--overwrite or not) and, without ``overwrite``, over
    any file that exists, as ``superres video`` does."""
    for given in inputs:
        if given is not None and Path(given).is_file():  # not a named model
            refuse_overwriting_input(Path(given), output, "write the ONNX file to another name")
    if output.is_dir():
        raise SuperresError(f"{output}: is a folder; -o names the .onnx file to write")
    if output.exists() and not overwrite:
        raise SuperresError(f"{output}: exists (use --overwrite to replace it)")


def cmd_export(args: argparse.Namespace) -> int:
    from superres.zoo import load_model
    from superres.zoo.export import export_onnx

    _check_output_file(args.output, [args.model], args.overwrite)
    desc = load_model(args.model, scale=args.scale)
    _check_output_file(args.output, [desc.source], args.overwrite)  # a named model: its cached file
    print(export_onnx(desc, args.output, fp16=args.fp16, opset=args.opset))
    if desc.size_multiple > 1 or desc.min_size > 1:
        print(f"input height and width: multiples of {desc.size_multiple}, at least {desc.min_size}")
    return 0


DEFAULT_OPSET = 17  # superres.zoo.export.DEFAULT_OPSET (not imported here: the command starts without torch)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a model as ONNX, checked against PyTorch in ONNX Runtime",
                       description="Export a named model or checkpoint to ONNX with dynamic batch, height and width "
                       "(input and output in [0, 1], not clamped), then run it in ONNX Runtime on real photo crops "
                       "and print the largest difference from PyTorch. Needs pip install \"superres[export]\".")
    p.add_argument("model", metavar="MODEL", help="a named model (superres models) or a checkpoint file")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--fp16", action="store_true", help="fp16 weights, input and output")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--scale", type=float, help="for SRCNN/FSRCNN checkpoints that do not record it")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists (never the input)")
    p.set_defaults(func=cmd_export)
