"""``superres upscale``: images, folders and globs through a network, resumable, shared out under torchrun."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from superres.cli.common import (
    TILE_HELP,
    add_face_arguments,
    add_runtime_arguments,
    claim_outputs,
    collect_inputs,
    error,
    face_options,
    make_out_dir,
    max_pixels_argument,
    outscale_option,
    progress_bar,
    read_integer,
    remove_stale_temps,
    run_options,
)
from superres.errors import SuperresError

_FORMAT_EXT = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tif": ".tif"}


def _shard(items: list, rank: int, world: int) -> list:
    """This process's share under torchrun (RANK / WORLD_SIZE): every file exactly once."""
    return items[rank::world]


def _upscale_target(src: Path, rel: Path, out: Path, single_file: bool, fmt: str, suffix: str) -> Path:
    ext = src.suffix.lower() if fmt == "same" else _FORMAT_EXT[fmt]
    if single_file:
        return out
    return out / rel.parent / f"{rel.stem}{suffix}{ext}"


def _without_earlier_outputs(pairs: list[tuple[Path, Path]]) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """Split off the inputs that are another input's output (``-o`` the input folder with a ``--suffix``: a
    second run finds ``a_x4.png`` beside ``a.png``, and must not make ``a_x4_x4.png`` of it). Returns the
    pairs to keep and (earlier output, its input) for those left out."""
    maker = {target.resolve(): src for src, target in pairs}
    kept, earlier = [], []
    for src, target in pairs:
        of = maker.get(src.resolve())
        if of is not None and of.resolve() != src.resolve():
            earlier.append((src, of))
        else:
            kept.append((src, target))
    return kept, earlier


def cmd_upscale(args: argparse.Namespace) -> int:
    from superres.infer import Upscaler
    from superres.io import IMAGE_EXTENSIONS
    from superres.io.image import DEFAULT_MAX_PIXELS
    from superres.io.pipeline import run_pipelined

    options = run_options(args)  # checked before any file is looked at
    faces = face_options(args)
    items, skipped = collect_inputs(args.inputs, args.recursive, args.quiet, output=args.output)
    names_a_file = args.output.suffix.lower() in IMAGE_EXTENSIONS and not args.output.is_dir()
    single_file = len(items) == 1 and Path(args.inputs[0]).is_file() and names_a_file
    if names_a_file and not single_file:
        raise SuperresError(f"-o {args.output} names an image file, but there are {len(items)} inputs"
                            f"{'' if len(items) > 1 else ' (a folder or glob)'}: give an output folder")
    pairs = [(src, _upscale_target(src, rel, args.output, single_file, args.format, args.suffix))
             for src, rel in items]
    pairs, earlier = _without_earlier_outputs(pairs)
    skipped += len(earlier)
    if earlier and not args.quiet:
        for src, of in earlier:
            print(f"skip {src} (the output of {of}, not an input)", file=sys.stderr)
    claim_outputs(pairs, advice="choose another output file" if single_file else "choose another folder or a --suffix",
                  same_folder_advice="rename one of them" if args.format == "same" else
                  "--format same keeps each one's extension; or rename one of them")
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
    remove_stale_temps(target for _, target in pairs)  # what a killed run left, beside done outputs too
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

    # one image: its own bar (the share of its network passes done) says more than "0/1"
    single = len(jobs) == 1
    bar = progress_bar(total=len(jobs), unit="img", disable=args.quiet or single)

    def compute(job: tuple[Path, Path], loaded):
        return _upscale_array(upscaler, job[0], *loaded, args, delay=0 if single else 1)

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


def _upscale_array(upscaler, src: Path, img, info, args: argparse.Namespace, delay: float):
    """The upscaled samples of one file, with a bar of its progress (its network passes, counted within the
    one under way: one large image is one long pass) once it has taken ``delay`` seconds."""
    from superres.runner import progress_scope

    # with --face-model, the face networks' passes count too: the bar may fill a little early
    expected = getattr(upscaler, "background", upscaler).passes(img)
    if args.quiet or not expected:
        return upscaler.upscale_array(img, args.outscale), info
    bar = progress_bar(total=expected, desc=src.name, percent=True, leave=False, delay=delay)

    def made(passes: float) -> None:
        bar.update(min(passes, expected) - bar.n)

    try:
        with progress_scope(made):
            return upscaler.upscale_array(img, args.outscale), info
    finally:
        bar.close()


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
    outscale_option(p)
    p.add_argument("--tile", default="auto", help=TILE_HELP)
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
