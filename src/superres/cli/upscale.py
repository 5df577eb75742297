"""``superres upscale``: images, folders and globs through a network, resumable, shared out under torchrun."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from superres.cli.common import (
    add_runtime_arguments,
    error,
    make_out_dir,
    max_pixels_argument,
    read_integer,
    run_options,
)
from superres.cli.faces import add_face_arguments, face_options
from superres.errors import SuperresError

_FORMAT_EXT = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tif": ".tif"}


def _collect_inputs(inputs: list[str], recursive: bool, quiet: bool = False) -> tuple[list[tuple[Path, Path]], int]:
    """(file, path relative to its root) for files, folders and globs (folders keep their sub-folders), and
    the number of files in the folders that are not images superres reads (each folder says so in a line)."""
    import glob

    from superres.io import IMAGE_EXTENSIONS
    from superres.io.files import describe_skipped, scan_folder

    found: list[tuple[Path, Path]] = []
    named = {Path(item).resolve() for item in inputs if Path(item).is_file()}  # tried, so not skipped
    others = 0
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images, not_images = scan_folder(path, recursive)
            not_images = [p for p in not_images if p.resolve() not in named]
            others += len(not_images)
            if not_images and not quiet:
                print(f"superres: {describe_skipped(path, not_images)}", file=sys.stderr)
            if not images:
                raise SuperresError(f"{path}: no images found (looked for {' '.join(sorted(IMAGE_EXTENSIONS))}"
                                    f"{'' if recursive else '; add -r for sub-folders'})")
            found += [(f, f.relative_to(path)) for f in images]
        elif path.exists():
            found.append((path, Path(path.name)))
        elif glob.has_magic(item):
            # ``**`` in a pattern the user wrote means sub-folders, with or without -r
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not matches:
                raise SuperresError(f"{item}: no file matches")
            found += [(m, Path(m.name)) for m in matches]
        else:
            raise SuperresError(f"{item}: no such file or folder")
    unique: dict[Path, tuple[Path, Path]] = {}
    for src, rel in found:  # a file named twice (or inside a folder also given) is done once
        unique.setdefault(src.resolve(), (src, rel))
    return list(unique.values()), others


def _shard(items: list, rank: int, world: int) -> list:
    """This process's share under torchrun (RANK / WORLD_SIZE): every file exactly once."""
    return items[rank::world]


def _upscale_target(src: Path, rel: Path, out: Path, single_file: bool, fmt: str, suffix: str) -> Path:
    ext = src.suffix.lower() if fmt == "same" else _FORMAT_EXT[fmt]
    if single_file:
        return out
    return out / rel.parent / f"{rel.stem}{suffix}{ext}"


def cmd_upscale(args: argparse.Namespace) -> int:
    from superres.infer import Upscaler
    from superres.io import IMAGE_EXTENSIONS
    from superres.io.image import DEFAULT_MAX_PIXELS
    from superres.io.pipeline import run_pipelined

    options = run_options(args)  # checked before any file is looked at
    faces = face_options(args)
    items, skipped = _collect_inputs(args.inputs, args.recursive, args.quiet)
    names_a_file = args.output.suffix.lower() in IMAGE_EXTENSIONS and not args.output.is_dir()
    single_file = len(items) == 1 and Path(args.inputs[0]).is_file() and names_a_file
    if names_a_file and not single_file:
        raise SuperresError(f"-o {args.output} names an image file, but there are {len(items)} inputs"
                            f"{'' if len(items) > 1 else ' (a folder or glob)'}: give an output folder")
    claimed: dict[Path, Path] = {}
    pairs = []
    for src, rel in items:
        target = _upscale_target(src, rel, args.output, single_file, args.format, args.suffix)
        if target.resolve() == src.resolve():
            raise SuperresError(f"{src}: the output would overwrite the input; choose another folder or a --suffix")
        if target.resolve() in claimed:
            raise SuperresError(f"{src}: its output {target} is also the output of {claimed[target.resolve()]}; "
                                "give the inputs as one folder (sub-folders are kept) or upscale them separately")
        claimed[target.resolve()] = src
        pairs.append((src, target))
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    jobs = []
    for src, target in _shard(pairs, rank, world):
        if target.exists() and not args.overwrite:
            skipped += 1
            if not args.quiet:
                print(f"skip {target} (exists; --overwrite to redo)", file=sys.stderr)
            continue
        jobs.append((src, target))
    if args.dry_run:
        for src, target in jobs:
            print(f"{src} -> {target}")
        print(f"{len(jobs)} to do, {skipped} skipped (dry run: nothing written)", file=sys.stderr)
        return 0
    if not jobs:
        if not args.quiet:
            print(f"0 done, {skipped} skipped, 0 failed", file=sys.stderr)
        return 0
    make_out_dir(args.output.parent if single_file else args.output)
    jobs, failed_early = _check_jobs(jobs, args)  # bad inputs and unwritable outputs fail before the model loads
    if not jobs:
        if not args.quiet:
            print(f"0 done, {skipped} skipped, {failed_early} failed", file=sys.stderr)
        return 1
    upscaler = Upscaler(args.model, options, alpha=args.alpha, max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS)
    if faces is not None:
        from superres.infer.faces import FaceEnhancer

        upscaler = FaceEnhancer(args.face_model, upscaler, faces)
    if not args.quiet:
        print(f"{args.model}: x{upscaler.scale} on {upscaler.torch_device} ({upscaler.summary()})"
              + (f", shard {rank + 1}/{world}" if world > 1 else ""), file=sys.stderr)

    from tqdm import tqdm

    bar = tqdm(total=len(jobs), unit="img", disable=args.quiet, file=sys.stderr)

    def compute(job: tuple[Path, Path], loaded):
        return _upscale_array(upscaler, job[0], *loaded, args)

    def write(job: tuple[Path, Path], result) -> None:
        _write_one(job[0], job[1], *result, args, bar)

    def report(job: tuple[Path, Path], e: Exception) -> None:
        error(str(e) if str(job[0]) in str(e) else f"{job[0]}: {e}")

    # the next files decode and the last results encode in threads while the network runs
    done, failed = run_pipelined(jobs, lambda job: read_integer(job[0], args.max_pixels), compute, write, report,
                                 (SuperresError, ValueError, OSError))
    failed += failed_early
    bar.close()
    if not args.quiet:
        print(f"{done} done, {skipped} skipped, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def _check_jobs(jobs: list[tuple[Path, Path]], args: argparse.Namespace) -> tuple[list[tuple[Path, Path]], int]:
    """The jobs whose input reads as an image within the pixel limits (its pixels decode: a truncated file
    is found here, at 1/8 scale) and whose output folder takes files, and the number of the others (each
    reported in one line)."""
    from superres.infer.image import output_size
    from superres.io import check_image
    from superres.io.files import temp_beside
    from superres.io.image import DEFAULT_MAX_PIXELS
    from superres.zoo import MODELS

    limit = args.max_pixels or DEFAULT_MAX_PIXELS
    spec = MODELS.get(args.model)
    scale = args.outscale or (spec.scale if spec else None)  # a checkpoint's scale is known once loaded
    writable: dict[Path, str | None] = {}
    good, failed = [], 0
    for src, target in jobs:
        try:
            _, width, height = check_image(src, limit)
            if scale:
                out_w, out_h = output_size(height, width, scale)
                if out_w * out_h > limit:
                    raise SuperresError(f"{src}: the output would be {out_w}x{out_h}, over the limit of {limit} "
                                        "pixels (--max-pixels raises it)")
            folder = target.parent
            if folder not in writable:
                writable[folder] = None
                try:
                    make_out_dir(folder)
                    fd, tmp = temp_beside(target)
                    os.close(fd)
                    tmp.unlink()
                except SuperresError as e:
                    writable[folder] = str(e)
            if writable[folder]:
                raise SuperresError(writable[folder])
            good.append((src, target))
        except (SuperresError, ValueError) as e:
            error(str(e))
            failed += 1
    return good, failed


def _upscale_array(upscaler, src: Path, img, info, args: argparse.Namespace):
    """The upscaled samples of one file, with a tile progress bar for large ones."""
    from tqdm import tqdm

    tiles = None

    def progress(done: int, total: int) -> None:
        nonlocal tiles
        if total > 1 and tiles is None and not args.quiet:
            tiles = tqdm(total=total, unit="tile", desc=src.name, leave=False, file=sys.stderr)
        if tiles is not None:
            tiles.n = done
            tiles.refresh()

    try:
        return upscaler.upscale_array(img, args.outscale, progress), info
    finally:
        if tiles is not None:
            tiles.close()


def _write_one(src: Path, target: Path, out, info, args: argparse.Namespace, bar) -> None:
    from superres.io import write_image

    make_out_dir(target.parent)
    write_image(target, out, info, quality=args.quality)
    bar.update(1)
    if not args.quiet:
        bar.write(f"{src} -> {target}", file=sys.stderr)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upscale", help="upscale images with a pretrained network (default realesrgan-x4plus)",
                       description="Upscale images, folders or globs. Outputs are written atomically; existing "
                       "outputs are skipped unless --overwrite, so re-running resumes. Under torchrun the inputs "
                       "are shared out between the processes.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (or a file, for one input)")
    p.add_argument("-m", "--model", default="realesrgan-x4plus",
                   help="a name from `superres models`, a checkpoint path, or bicubic")
    p.add_argument("-s", "--outscale", type=float, help="final scale (default: the model's own)")
    p.add_argument("--tile", default="auto", help="tile size in input pixels: auto (from memory), 0 (none) or N")
    p.add_argument("--tile-pad", type=int, help="context margin per tile edge (default: the model's measured one)")
    p.add_argument("--format", choices=["same", "png", "jpg", "webp", "tif"], default="same")
    p.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality")
    p.add_argument("--suffix", default="", help="appended to output file stems, e.g. _x4")
    p.add_argument("--alpha", choices=["model", "bicubic"], default="model", help="how the alpha channel is upscaled")
    add_face_arguments(p)
    max_pixels_argument(p)
    add_runtime_arguments(p)
    p.add_argument("--overwrite", action="store_true", help="redo outputs that exist")
    p.add_argument("--dry-run", action="store_true", help="list what would be done")
    p.add_argument("-r", "--recursive", action="store_true", help="look into sub-folders")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_upscale)
