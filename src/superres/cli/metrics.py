"""``superres metrics``: PSNR/SSIM of SR images against ground truth (of clips: with tOF and the warping error),
or NIQE and BRISQUE of one folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from superres.cli.common import error
from superres.errors import SuperresError


def cmd_metrics(args: argparse.Namespace) -> int:
    from superres.metrics.evaluate import holds_clips
    from superres.metrics.folders import mean_record, score_clip_folders, score_folders
    from superres.metrics.report import format_table, write_report

    if args.sr_dir is not None and holds_clips(args.gt_dir):
        if args.modcrop:
            raise SuperresError("--modcrop is for folders of images; clips are scored as they are")
        records, keys, problems = score_clip_folders(args.gt_dir, args.sr_dir, args.crop_border, args.y, args.suffix)
    else:
        records, keys, problems = score_folders(args.gt_dir, args.sr_dir, args.crop_border, args.y,
                                                args.suffix, args.modcrop)
    for p in problems:
        error(p)
    if not records:
        raise SuperresError("no image could be scored")
    rows = [*records, mean_record(records, keys)]
    print(format_table(rows, keys))
    write_report(rows, keys, args.json, args.csv)
    return 1 if problems else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("metrics", help="PSNR/SSIM of SR images against ground truth (NIQE, BRISQUE without GT)",
                       description="Pair files by name and print PSNR/SSIM per image and the mean. "
                       "With one folder, print NIQE and BRISQUE (no reference needed; lower is better). "
                       "Folders of clips (sub-folders of frames, as Vid4's GT): per clip and the mean, PSNR/SSIM "
                       "over its frames, tOF (TecoGAN's) and the warping error (lower is steadier).")
    p.add_argument("gt_dir", type=Path, metavar="GT_DIR",
                   help="ground-truth images (or the images to score by NIQE and BRISQUE)")
    p.add_argument("sr_dir", type=Path, nargs="?", metavar="SR_DIR", help="super-resolved images, same names")
    p.add_argument("--crop-border", type=int, default=0, help="pixels removed on each side (papers: the scale)")
    p.add_argument("--y", action="store_true", help="score the Y channel of YCbCr (papers' protocol)")
    p.add_argument("--suffix", default="", help="suffix of SR file stems to ignore when pairing, e.g. _x4")
    p.add_argument("--modcrop", type=int, default=0, metavar="SCALE",
                   help="crop ground truth to a multiple of SCALE first (when it was not)")
    p.add_argument("--json", type=Path, help="also write the records (and the mean) as JSON")
    p.add_argument("--csv", type=Path, help="also write the records (and the mean) as CSV")
    p.set_defaults(func=cmd_metrics)
