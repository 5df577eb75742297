"""``superres eval``: a model benchmarked on an HR folder (or clips), LR made the papers' way."""

from __future__ import annotations

import argparse
from pathlib import Path

from superres.cli.common import degradation_argument
from superres.errors import SuperresError


def cmd_eval(args: argparse.Namespace) -> int:
    """Benchmark a model on an HR folder: LR made the papers' way, Y-PSNR/SSIM with crop = scale."""
    from superres.metrics.evaluate import evaluate_model
    from superres.metrics.folders import mean_record
    from superres.metrics.report import format_table, write_report

    try:
        records, clips = evaluate_model(args.model, args.hr_dir, args.scale, lr_dir=args.lr_dir,
                                        degradation=args.degradation, clips=True if args.clips else None,
                                        single_frame=args.single_frame, y_channel=not args.rgb,
                                        crop_border=args.crop_border, temporal=args.temporal)
    except ValueError as e:
        raise SuperresError(str(e)) from None
    keys = ["frames", "psnr", "ssim", *(["tof", "warp"] if args.temporal else [])] if clips else ["psnr", "ssim"]
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
    degradation_argument(p)
    p.add_argument("--lr-dir", type=Path, help="read LR images from here (matched by name) instead")
    p.add_argument("--crop-border", type=int, help="pixels removed on each side (default: the scale; clips: 0)")
    p.add_argument("--rgb", action="store_true", help="score RGB instead of the Y channel")
    p.add_argument("--clips", action="store_true",
                   help="HR_DIR holds clips (folders of frames, e.g. Vid4's GT, REDS4): score every frame, per "
                   "clip; automatic for video networks and for folders that hold only sub-folders of frames")
    p.add_argument("--single-frame", action="store_true",
                   help="video networks: feed each frame alone (copies of it for sliding windows, one-frame "
                   "clips for recurrent networks) instead of its neighbours: the single-frame ablation")
    p.add_argument("--temporal", action="store_true",
                   help="clips: also tOF (TecoGAN's, on Farneback flow) and the warping error (each output frame "
                   "against the previous one warped by the ground truth's flow); lower is steadier")
    p.add_argument("--json", type=Path, help="also write the records (and the mean) as JSON")
    p.add_argument("--csv", type=Path, help="also write the records (and the mean) as CSV")
    p.set_defaults(func=cmd_eval)
