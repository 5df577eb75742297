"""``superres degrade`` (HR -> LR: MATLAB bicubic, BD or Real-ESRGAN's degradations) and ``superres resize``."""

from __future__ import annotations

import argparse
from pathlib import Path

from superres.cli.common import (
    DEGRADATIONS,
    check_distinct_outputs,
    degradation_argument,
    folder_images,
    make_out_dir,
    max_pixels_argument,
    output_path,
    read_integer,
    run_batch,
)
from superres.errors import SuperresError


def _modcrop_checked(img, src: Path, scale: int):
    """``img`` cropped to a multiple of ``scale``; an image smaller than the scale is an error naming ``src``."""
    from superres.ops import modcrop

    hr = modcrop(img, scale)
    if min(hr.shape[:2]) == 0:
        raise SuperresError(f"{src}: {img.shape[1]}x{img.shape[0]} is smaller than the scale {scale}")
    return hr


def degrade_one(src: Path, out_dir: Path, scale: int, degradation: str, max_pixels: int | None = None) -> None:
    from superres.io import write_image
    from superres.ops import blur_downsample, imresize

    img, info = read_integer(src, max_pixels)  # not data.paired.degrade: it would import torch for two lines
    hr = _modcrop_checked(img, src, scale)
    lr = imresize(hr, 1 / scale) if degradation == "bicubic" else blur_downsample(hr, scale)
    write_image(output_path(out_dir, src), lr, info)


def _degrade_real_one(src: Path, out_dir: Path, scale: int, settings, seed: int, max_pixels: int | None) -> None:
    """The seed mixes ``seed`` with the file name, so an image gets the same LR whatever else is in the folder."""
    import zlib

    from superres.data.degradations import degrade_real
    from superres.data.paired import sample_seed
    from superres.io import read_rgb8, write_image

    hr = _modcrop_checked(read_rgb8(src, max_pixels), src, scale)
    lr = degrade_real(hr, scale, settings, sample_seed(seed, zlib.crc32(src.stem.encode())))
    write_image(output_path(out_dir, src), lr)


def resize_one(src: Path, out_dir: Path, scale: float, max_pixels: int | None = None) -> None:
    from superres.io import write_image
    from superres.io.image import DEFAULT_MAX_PIXELS
    from superres.ops import imresize
    from superres.ops.imresize import output_size

    img, info = read_integer(src, max_pixels)
    limit = max_pixels or DEFAULT_MAX_PIXELS
    (out_h, out_w), _ = output_size(img.shape[:2], scale, None)
    if out_w * out_h > limit:
        raise SuperresError(f"{src}: the output would be {out_w}x{out_h}, over the limit of {limit} pixels "
                            "(--max-pixels raises it)")
    write_image(output_path(out_dir, src), imresize(img, scale), info)


def cmd_degrade(args: argparse.Namespace) -> int:
    if args.scale < 2 or args.scale != int(args.scale):
        raise SuperresError(f"--scale must be an integer >= 2, got {args.scale}")
    if args.real_config and not args.real:
        raise SuperresError("--real-config needs --real")
    scale = int(args.scale)
    if args.real:
        from superres.data.degradations import read_real_settings

        settings = read_real_settings(args.real_config)
        work = lambda f: _degrade_real_one(f, args.lr_dir, scale, settings, args.seed, args.max_pixels)  # noqa: E731
    else:
        work = lambda f: degrade_one(f, args.lr_dir, scale, args.degradation, args.max_pixels)  # noqa: E731
    files = folder_images(args.hr_dir, args.recursive, args.quiet)
    check_distinct_outputs(files, args.lr_dir)
    make_out_dir(args.lr_dir)
    _, failed = run_batch(files, work, args.quiet)
    return 1 if failed else 0


def cmd_resize(args: argparse.Namespace) -> int:
    if not args.scale > 0:
        raise SuperresError(f"--scale must be positive, got {args.scale}")
    files = folder_images(args.in_dir, args.recursive, args.quiet)
    check_distinct_outputs(files, args.out_dir)
    make_out_dir(args.out_dir)
    _, failed = run_batch(files, lambda f: resize_one(f, args.out_dir, args.scale, args.max_pixels), args.quiet)
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("degrade", help="make LR images: MATLAB bicubic / BD, or Real-ESRGAN's degradations",
                       description="Crop each HR image to a multiple of the scale, then downscale by MATLAB "
                       "bicubic (bicubic) or Gaussian blur sigma 1.6 + subsampling (bd); or, with --real, "
                       "apply Real-ESRGAN's second-order degradations (blur, resize, noise, JPEG, twice, then "
                       "sinc + JPEG) as training does, seeded. PNG out, same stems.")
    p.add_argument("hr_dir", type=Path, metavar="HR_DIR")
    p.add_argument("lr_dir", type=Path, metavar="LR_DIR")
    p.add_argument("--scale", type=float, default=4)
    degradation_argument(p)
    p.add_argument("--kind", choices=DEGRADATIONS, dest="degradation", default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)  # its old name, for scripts written before it matched `eval`'s
    p.add_argument("--real", action="store_true", help="Real-ESRGAN's degradation model instead of --degradation")
    p.add_argument("--real-config", type=Path, metavar="YAML",
                   help="its settings: a training config (its data.real) or a file of those keys; "
                   "default: the paper's (train_realesrgan_x4plus.yml)")
    p.add_argument("--seed", type=int, default=0, help="with --real: same seed, same images")
    max_pixels_argument(p)
    p.add_argument("-r", "--recursive", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_degrade)

    p = sub.add_parser("resize", help="MATLAB bicubic resize, up or down (the bicubic baseline)")
    p.add_argument("in_dir", type=Path, metavar="IN_DIR")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    p.add_argument("--scale", type=float, required=True)
    max_pixels_argument(p)
    p.add_argument("-r", "--recursive", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_resize)
