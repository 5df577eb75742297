"""``superres eval``: a model benchmarked on an HR folder (or clips), LR made the papers' way."""

from __future__ import annotations

import argparse
from pathlib import Path

from superres.errors import SuperresError


def _eval_clips(args: argparse.Namespace, desc, forward, in_channels: int) -> list[dict]:
    """Video evaluation: every frame of every clip, crop 0 unless told (the video papers' protocol)."""
    import torch

    from superres.data.video import eval_clips
    from superres.metrics.evaluate import evaluate_clips, frame_runner

    if desc is not None and desc.purpose == "video":
        from superres.infer.video import video_runner

        runner = video_runner(desc, single_frame=args.single_frame)
    else:  # an image model (or bicubic) frame by frame: the single-frame baseline
        runner = frame_runner(forward, in_channels, args.scale)
    clips = eval_clips(args.hr_dir, args.scale, args.lr_dir, args.degradation)
    with torch.inference_mode():
        return evaluate_clips(runner, clips, not args.rgb, args.crop_border or 0)


def cmd_eval(args: argparse.Namespace) -> int:
    """Benchmark a model on an HR folder: LR made the papers' way, Y-PSNR/SSIM with crop = scale."""
    import torch

    from superres.data import eval_pairs
    from superres.metrics.evaluate import bicubic_forward, evaluate
    from superres.metrics.folders import mean_record
    from superres.metrics.report import format_table, write_report
    from superres.zoo import load_model

    desc = None
    if args.model == "bicubic":  # the baseline every table starts with
        forward, in_channels = bicubic_forward(args.scale), 3
    else:
        desc = load_model(args.model, scale=args.scale)
        if desc.purpose not in ("sr", "video"):
            raise SuperresError(f"{args.model}: a {desc.arch} is a {desc.purpose} network, not an upscaler")
        if desc.scale != args.scale:
            raise SuperresError(f"{args.model}: is a x{desc.scale} model, --scale says x{args.scale}")
        forward, in_channels = desc.module.eval(), desc.in_channels
    if args.clips or (desc is not None and desc.purpose == "video"):
        records = _eval_clips(args, desc, forward, in_channels)
        keys = ["frames", "psnr", "ssim"]
    else:
        pairs = eval_pairs(args.hr_dir, args.scale, args.lr_dir, args.degradation)
        with torch.inference_mode():
            records = evaluate(forward, pairs, args.scale, in_channels, not args.rgb, args.crop_border)
        keys = ["psnr", "ssim"]
    rows = [*records, mean_record(records, keys)]
    print(format_table(rows, keys))
    write_report(rows, keys, args.json, args.csv)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="benchmark a model: PSNR/SSIM on an HR folder (or clips), LR made the papers' way",
                       description="Mod-crop each HR image, make its LR by MATLAB bicubic (or Gaussian blur "
                       "sigma 1.6 + subsampling with --degradation bd, or read it from --lr-dir), run the "
                       "model, and print per-image and mean PSNR/SSIM on Y with the border cropped by the scale.")
    p.add_argument("hr_dir", type=Path, metavar="HR_DIR")
    p.add_argument("-m", "--model", required=True,
                   help="a name from `superres models`, a checkpoint path, or bicubic (the baseline)")
    p.add_argument("--scale", type=int, required=True)
    p.add_argument("--degradation", choices=["bicubic", "bd"], default="bicubic")
    p.add_argument("--lr-dir", type=Path, help="read LR images from here (matched by name) instead")
    p.add_argument("--crop-border", type=int, help="pixels removed on each side (default: the scale; clips: 0)")
    p.add_argument("--rgb", action="store_true", help="score RGB instead of the Y channel")
    p.add_argument("--clips", action="store_true",
                   help="HR_DIR holds clips (folders of frames, e.g. Vid4's GT, REDS4): score every frame, per "
                   "clip; automatic for video networks, which see the clips' neighbouring frames")
    p.add_argument("--single-frame", action="store_true",
                   help="sliding-window video networks: feed copies of each frame instead of its neighbours "
                   "(the single-frame ablation)")
    p.add_argument("--json", type=Path, help="also write the records (and the mean) as JSON")
    p.add_argument("--csv", type=Path, help="also write the records (and the mean) as CSV")
    p.set_defaults(func=cmd_eval)
