"""``superres train`` (a YAML config, also under torchrun) and ``superres schema`` (its JSON schema)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from superres.errors import SuperresError


def cmd_train(args: argparse.Namespace) -> int:
    from superres.cli.common import progress_bar
    from superres.runtime import keep_freed_memory
    from superres.train import load_config, resume_settings, train
    from superres.train.config import check_data

    if args.resume and args.overwrite:
        raise SuperresError("--resume and --overwrite contradict each other: choose one")
    resume = args.resume
    if resume is not None:
        config, source, resume = resume_settings(args.config, args.set or [], resume)
    elif args.config is None:
        raise SuperresError("train: give a CONFIG (a YAML recipe, e.g. configs/fsrcnn_x3_t91.yaml), or "
                            "--resume RUN_DIR to continue a run")
    else:
        config, source = load_config(args.config, args.set or []), args.config
    check_data(config, source)
    if args.check:
        print(f"{source}: OK ({config.name}, x{config.scale}, {config.model.arch}, "
              f"{config.train.iterations} iterations -> {config.output_dir})")
        return 0
    keep_freed_memory()
    scores = train(config, resume, args.quiet, args.overwrite, progress_bar)
    if scores and not args.quiet:
        print(", ".join(f"{n}: {s['psnr']:.3f} dB / {s['ssim']:.4f}" for n, s in scores.items()))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from superres.train import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config (also under torchrun for DDP)",
                       description="Train as CONFIG says. The config is checked before anything runs. "
                       "Checkpoints, log.jsonl, TensorBoard logs and the exported model.safetensors go to "
                       "the config's output folder. Under `torchrun --nproc_per_node N -m superres train` "
                       "the global batch is split over N processes (gloo on CPU, nccl on GPU).")
    p.add_argument("config", type=Path, nargs="?", metavar="CONFIG",
                   help="a YAML recipe (configs/*.yaml); not needed with --resume RUN_DIR")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="RUN_DIR|CHECKPOINT",
                   help="continue a run from its latest checkpoint (or CHECKPOINT) with the settings it was started "
                   "with (RUN_DIR/config.json, its --set values included): --resume RUN_DIR, or CONFIG --resume for "
                   "CONFIG's output folder; --set given now applies on top, and where CONFIG differs from the run's "
                   "settings a warning names the keys and the run's are kept")
    p.add_argument("--overwrite", action="store_true",
                   help="start again over an earlier run in the output folder (its checkpoints and log are removed)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.iterations=1000 (repeatable)")
    p.add_argument("--check", action="store_true", help="only check the config and print what it would do")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("schema", help="print the training config's JSON schema (for editors)")
    p.set_defaults(func=cmd_schema)
