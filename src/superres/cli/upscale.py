"""``superres upscale``: images, folders and globs through a network, resumable, shared out under torchrun or on
a Ray cluster (``--ray``); inputs and outputs may be paths or fsspec URLs (``s3://bucket/in/``)."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path, PurePosixPath

from superres.cli.common import (
    TILE_HELP,
    add_face_arguments,
    add_ray_argument,
    add_runtime_arguments,
    claim_outputs,
    collect_inputs,
    error,
    face_options,
    make_out_dir,
    max_pixels_argument,
    outscale_option,
    progress_bar,
    remove_stale_temps,
    run_options,
    warn,
)
from superres.errors import SuperresError
from superres.io import storage

Location = Path | str  # a local path, or a URL kept as text


def _shard(items: list, rank: int, world: int) -> list:
    """This process's share under torchrun (RANK / WORLD_SIZE): every file exactly once."""
    return items[rank::world]


def _upscale_target(src: Location, rel: Path | PurePosixPath, out: Location, single_file: bool, fmt: str,
                    suffix: str) -> Location:
    from superres.infer.executors import output_name

    return out if single_file else storage.join(out, output_name(src, rel, fmt, suffix))


def _without_earlier_outputs(pairs: list[tuple[Location, Location]],
                             ) -> tuple[list[tuple[Location, Location]], list[tuple[Location, Location]]]:
    """Split off the inputs that are another input's output (``-o`` the input folder with a ``--suffix``: a
    second run finds ``a_x4.png`` beside ``a.png``, and must not make ``a_x4_x4.png`` of it). Returns the
    pairs to keep and (earlier output, its input) for those left out."""
    maker = {storage.key(target): src for src, target in pairs}
    kept, earlier = [], []
    for src, target in pairs:
        of = maker.get(storage.key(src))
        if of is not None and storage.key(of) != storage.key(src):
            earlier.append((src, of))
        else:
            kept.append((src, target))
    return kept, earlier


def _collect(inputs: list[str], recursive: bool, quiet: bool, output: Location,
             ) -> tuple[list[tuple[Location, Path | PurePosixPath]], int]:
    """:func:`collect_inputs` for the paths and globs, and the same for URLs (folders and files, no globs): (file,
    path relative to its root) and the number of files in the folders that are not images superres reads."""
    from superres.io import IMAGE_EXTENSIONS
    from superres.io.files import describe_skipped

    local = [item for item in inputs if not storage.is_url(item)]
    items: list[tuple[Location, Path | PurePosixPath]] = []
    others = 0
    if local:
        items, others = collect_inputs(local, recursive, quiet, output=None if storage.is_url(output) else output)
    seen = set()
    for url in (item for item in inputs if storage.is_url(item)):
        if storage.isdir(url):
            files = storage.list_files(url, recursive)
            images = [f for f in files if PurePosixPath(storage.name(f)).suffix.lower() in IMAGE_EXTENSIONS]
            not_images = [PurePosixPath(storage.relative(f, url)) for f in files if f not in images]
            others += len(not_images)
            if not_images and not quiet:
                print(f"superres: {describe_skipped(url, not_images)}", file=sys.stderr)
            if not images:
                raise SuperresError(f"{url}: no images found (looked for {' '.join(sorted(IMAGE_EXTENSIONS))}"
                                    + ("" if recursive else "; add -r for sub-folders") + ")")
            found = [(f, storage.relative(f, url)) for f in images]
        elif storage.isfile(url):
            found = [(url, PurePosixPath(storage.name(url)))]
        else:
            raise SuperresError(f"{url}: no such file or folder")
        for src, rel in found:
            if storage.key(src) not in seen:
                seen.add(storage.key(src))
                items.append((src, rel))
    return items, others


def _claim(pairs: list[tuple[Location, Location]], single_file: bool, fmt: str) -> None:
    """:func:`claim_outputs`, where URLs compare by :func:`storage.key` (an output that is its input, or two
    inputs with one output, is refused before any work)."""
    advice = "choose another output file" if single_file else "choose another folder or a --suffix"
    same_folder = ("rename one of them" if fmt == "same" else
                   "--format same keeps each one's extension; or rename one of them")
    if not any(storage.is_url(x) for pair in pairs for x in pair):
        claim_outputs(pairs, advice=advice, same_folder_advice=same_folder)
        return
    claimed: dict[str, Location] = {}
    for src, target in pairs:
        if storage.key(src) == storage.key(target):
            raise SuperresError(f"{src}: the output {target} would overwrite the input; {advice}")
        other = claimed.setdefault(storage.key(target), src)
        if other is not src:
            raise SuperresError(f"{src}: its output {target} is also the output of {other}; "
                                + (same_folder if storage.parent(src) == storage.parent(other) else
                                   "give the inputs as one folder (sub-folders are kept) or process them separately"))


def cmd_upscale(args: argparse.Namespace) -> int:
    from superres.infer.executors import ImageUnit, image_engine
    from superres.io import IMAGE_EXTENSIONS
    from superres.io.image import DEFAULT_MAX_PIXELS
    from superres.io.pipeline import run_pipelined
    from superres.zoo import MODELS

    options = run_options(args)  # checked before any file is looked at
    faces = face_options(args)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    _check_ray_argument(args, world)
    output = args.output
    items, skipped = _collect(args.inputs, args.recursive, args.quiet, output)
    names_a_file = PurePosixPath(storage.name(output)).suffix.lower() in IMAGE_EXTENSIONS and not storage.isdir(output)
    single_file = len(items) == 1 and storage.isfile(args.inputs[0]) and names_a_file
    if names_a_file and not single_file:
        raise SuperresError(f"-o {args.output} names an image file, but there are {len(items)} inputs"
                            f"{'' if len(items) > 1 else ' (a folder or glob)'}: give an output folder")
    pairs = [(src, _upscale_target(src, rel, output, single_file, args.format, args.suffix)) for src, rel in items]
    pairs, earlier = _without_earlier_outputs(pairs)
    skipped += len(earlier)
    if earlier and not args.quiet:
        for src, of in earlier:
            print(f"skip {src} (the output of {of}, not an input)", file=sys.stderr)
    _claim(pairs, single_file, args.format)
    share = pairs if args.ray else _shard(pairs, rank, world)
    there = set() if args.overwrite else storage.existing(target for _, target in share)
    jobs = []
    for src, target in share:
        if target in there:
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
    # what a killed run left, beside done outputs too (an object store has none: one put is atomic)
    remove_stale_temps(target for _, target in pairs if not storage.is_url(target))
    if not jobs:
        if not args.quiet:
            print(f"0 done, {skipped} skipped, 0 failed", file=sys.stderr)
        return 0
    out_dir = storage.parent(output) if single_file else output
    if storage.is_url(out_dir):
        storage.makedirs(out_dir)
    else:
        make_out_dir(out_dir)
    # bad inputs and unwritable outputs fail before the model loads; on Ray, each worker checks its own inputs
    # (the driver would be the bottleneck), and here, a URL is checked when it is downloaded for the work
    jobs, failed_early = _check_jobs(jobs, args, decode=not args.ray)
    if not jobs:
        if not args.quiet:
            print(f"0 done, {skipped} skipped, {failed_early} failed", file=sys.stderr)
        return 1
    spec = MODELS.get(args.model)
    units = [ImageUnit(src, target, args.outscale, args.quality, args.max_pixels,
                       check=bool(args.ray) or storage.is_url(src),
                       scale=args.outscale or (spec.scale if spec else None)) for src, target in jobs]
    make_engine = functools.partial(image_engine, args.model, options, alpha=args.alpha,
                                    max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS, face_model=args.face_model,
                                    faces=faces)
    if args.ray:
        return _run_on_ray(units, make_engine, args, skipped, failed_early)
    upscaler = make_engine()
    if not args.quiet:
        origin = "" if upscaler.desc.name else f"{upscaler.desc.origin}, "  # a file: what it is, whose code runs it
        print(f"{args.model}: {origin}x{upscaler.scale} on {upscaler.torch_device} ({upscaler.summary()})"
              + (f", shard {rank + 1}/{world}" if world > 1 else ""), file=sys.stderr)

    # one image: its own bar (the share of its network passes done) says more than "0/1"
    single = len(units) == 1
    bar = progress_bar(total=len(units), unit="img", disable=args.quiet or single)

    def compute(unit: ImageUnit, loaded):
        return _upscale_array(upscaler, unit, *loaded, args, delay=0 if single else 1)

    def write(unit: ImageUnit, result) -> None:
        unit.store(result)
        _wrote(unit, args, bar)

    def report(unit: ImageUnit, e: Exception) -> None:
        _report(unit, str(e))

    # the next files decode and the last results encode in threads while the network runs
    done, failed = run_pipelined(units, lambda unit: unit.load(), compute, write, report,
                                 (SuperresError, ValueError, OSError))
    failed += failed_early
    bar.close()
    if not args.quiet:
        print(f"{done} done, {skipped} skipped, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def _run_on_ray(units: list, make_engine, args: argparse.Namespace, skipped: int, failed_early: int) -> int:
    """The units on Ray actors (:class:`~superres.infer.executors.RayExecutor`): one bar, a line per output and
    per failure, and the summary and exit code of a local run."""
    from superres.infer.executors import RayExecutor

    bar = progress_bar(total=len(units), unit="img", disable=args.quiet)

    def ready(worker) -> None:
        if not args.quiet:
            bar.write(f"{args.model}: a worker on {worker}", file=sys.stderr)

    def report_failure(unit, message: str) -> None:
        bar.update(1)  # the workers find the bad inputs: they count as handled
        _report(unit, message)

    executor = RayExecutor(make_engine, args.ray, on_worker=ready, on_warning=warn)
    done, failed = executor.run(units, lambda unit, _: _wrote(unit, args, bar), report_failure)
    failed += failed_early
    bar.close()
    if not args.quiet:
        print(f"{done} done, {skipped} skipped, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def _check_ray_argument(args: argparse.Namespace, world: int) -> None:
    """Refuse --ray under torchrun, and an address that is a file or folder (``--ray in/ -o out``: argparse
    took the first input for the address)."""
    if not args.ray:
        return
    if world > 1:
        raise SuperresError("--ray and torchrun both share out the files: run one process with --ray")
    if os.path.exists(args.ray) or (storage.is_url(args.ray) and not args.ray.startswith("ray://")):
        raise SuperresError(f"--ray took {args.ray!r} for the cluster's address: put --ray after the inputs, or "
                            "give it one (--ray auto)")


def _check_jobs(jobs: list[tuple[Location, Location]], args: argparse.Namespace,
                decode: bool = True) -> tuple[list[tuple[Location, Location]], int]:
    """The jobs whose input reads as an image within the pixel limits (its pixels decode: a truncated file
    is found here, at 1/8 scale) and whose output folder takes files, and the number of the others (each
    reported in one line). Inputs at URLs, and all inputs without ``decode``, are left to the work."""
    from superres.infer.executors import check_input
    from superres.io.files import temp_beside
    from superres.zoo import MODELS

    spec = MODELS.get(args.model)
    scale = args.outscale or (spec.scale if spec else None)  # a checkpoint's scale is known once loaded
    writable: dict[Path, str | None] = {}
    good, failed = [], 0
    for src, target in jobs:
        try:
            if decode and not storage.is_url(src):
                check_input(src, args.max_pixels, scale)
            folder = target.parent if not storage.is_url(target) else None
            if folder is not None and folder not in writable:
                writable[folder] = None
                try:
                    make_out_dir(folder)
                    fd, tmp = temp_beside(target)
                    os.close(fd)
                    tmp.unlink()
                except SuperresError as e:
                    writable[folder] = str(e)
            if folder is not None and writable[folder]:
                raise SuperresError(writable[folder])
            good.append((src, target))
        except (SuperresError, ValueError) as e:
            error(str(e))
            failed += 1
    return good, failed


def _upscale_array(upscaler, unit, img, info, args: argparse.Namespace, delay: float):
    """The upscaled samples of one file (``unit.compute``), with a bar of its progress (its network passes,
    counted within the one under way: one large image is one long pass) once it has taken ``delay`` seconds."""
    from superres.runner import progress_scope

    # with --face-model, the face networks' passes count too: the bar may fill a little early
    expected = getattr(upscaler, "background", upscaler).passes(img)
    if args.quiet or not expected:
        return unit.compute(upscaler, (img, info))
    bar = progress_bar(total=expected, desc=storage.name(unit.source), percent=True, leave=False, delay=delay)

    def made(passes: float) -> None:
        bar.update(min(passes, expected) - bar.n)

    try:
        with progress_scope(made):
            return unit.compute(upscaler, (img, info))
    finally:
        bar.close()


def _wrote(unit, args: argparse.Namespace, bar) -> None:
    bar.update(1)
    if not args.quiet:
        bar.write(f"{unit.source} -> {unit.target}", file=sys.stderr)


def _report(unit, message: str) -> None:
    error(message if str(unit.source) in message else f"{unit.source}: {message}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upscale", help="upscale images with a pretrained network (default realesrgan-x4plus)",
                       description="Upscale images, folders or globs. Outputs are written atomically; existing "
                       "outputs are skipped unless --overwrite, so re-running resumes. Under torchrun the inputs "
                       "are shared out between the processes; with --ray, between the devices of a Ray cluster. "
                       "Inputs and -o may be fsspec URLs (s3://bucket/in/).")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs; or URLs of files and "
                   "folders (s3://bucket/in/, gs://...)")
    p.add_argument("-o", "--output", type=storage.location, required=True,
                   help="output folder (or a file, for one input): a path or a URL")
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
    add_ray_argument(p)
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_upscale)
