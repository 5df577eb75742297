"""``superres export``: a model as ONNX (dynamic batch, height and width), checked in ONNX Runtime."""

from __future__ import annotations

import argparse
from pathlib import Path

from superres.cli.common import check_output_file


def cmd_export(args: argparse.Namespace) -> int:
    from superres.zoo import load_model
    from superres.zoo.export import export_onnx

    advice, what = "write the ONNX file to another name", ".onnx file"
    check_output_file(args.output, [args.model], args.overwrite, advice, what)
    desc = load_model(args.model, scale=args.scale)
    check_output_file(args.output, [desc.source], args.overwrite, advice, what)  # a named model: its cached file
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
