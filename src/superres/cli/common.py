"""What every sub-command shares: one-line errors, batches that go on past a bad file, output folders,
the tile and runtime arguments. Nothing here imports torch."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from superres.errors import SuperresError


def error(message: str) -> None:
    _say(f"superres: error: {message}")


def warn(message: str) -> None:
    _say(f"superres: warning: {message}")


def _say(line: str) -> None:
    if "tqdm" in sys.modules:  # print below any progress bar, not on its line
        sys.modules["tqdm"].tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr)


def run_batch(items: Iterable, work: Callable, quiet: bool = False,
              name: Callable = lambda item: item) -> tuple[int, int]:
    """Apply ``work`` to each item; a failing item is reported in one line and the batch goes on."""
    done = failed = 0
    for item in items:
        try:
            work(item)
            done += 1
        except (SuperresError, ValueError, OSError) as e:
            error(str(e) if str(name(item)) in str(e) else f"{name(item)}: {e}")
            failed += 1
    if not quiet:
        print(f"{done} done, {failed} failed", file=sys.stderr)
    return done, failed


def folder_images(folder: Path, recursive: bool = False, quiet: bool = False) -> list[Path]:
    """The images of a folder (an error if none); the other files in it (GIFs, text...) are said to be
    skipped in one line, counted by extension."""
    from superres.io.files import describe_skipped, require_images, scan_folder

    files = require_images(folder, recursive)
    others = scan_folder(folder, recursive)[1]
    if others and not quiet:
        print(f"superres: {describe_skipped(folder, others)}", file=sys.stderr)
    return files


def output_path(out_dir: Path, src: Path) -> Path:
    return out_dir / f"{src.stem}.png"


def check_distinct_outputs(files: Iterable[Path], out_dir: Path) -> None:
    """Refuse a batch where two inputs (``photo.png`` and ``photo.jpg``, or the same name in two
    sub-folders) would write the same output: one would silently replace the other."""
    claimed: dict[Path, Path] = {}
    for src in files:
        target = output_path(out_dir, src)
        if target in claimed:
            raise SuperresError(f"{src} and {claimed[target]} would both be written to {target}; "
                                "rename one of them or process them separately")
        claimed[target] = src


def make_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SuperresError(f"{out_dir}: cannot create the output folder: {e.strerror or e}") from None


def read_integer(src: Path, max_pixels: int | None = None):
    """The file's own samples (integers; float32 for float TIFFs): MATLAB resizes uint8 images with rounding
    after each pass. ``max_pixels``: the decompression-bomb limit (None: the default one)."""
    from superres.io import file_samples, read_image
    from superres.io.image import DEFAULT_MAX_PIXELS

    img, info = read_image(src, max_pixels or DEFAULT_MAX_PIXELS)
    return file_samples(img, info), info


def _non_negative_int(value: str, name: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise SuperresError(f"{name} must be auto or a whole number of pixels, got {value!r}") from None
    if n < 0:
        raise SuperresError(f"{name} must be >= 0, got {n}")
    return n


def max_pixels_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-pixels", type=int, metavar="N",
                   help="largest image read or written, in pixels (default 400000000, i.e. 20000x20000; a guard "
                   "against decompression bombs and runaway scales)")


def tile_argument(value: str) -> int | str:
    return value if value == "auto" else _non_negative_int(value, "--tile")


def add_runtime_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="auto: 8-bit images in bf16 on CPUs with native bf16 and fp16 on CUDA, else fp32")
    p.add_argument("--backend", choices=["auto", "torch", "ncnn"], default="auto",
                   help="auto: the ncnn runtime for named models in fp32 on the CPU (faster), else PyTorch")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network for each input size: minutes to start, then faster on "
                   "repeated sizes (video frames, equal tiles)")


def run_options(args: argparse.Namespace):
    """The command's device, precision, backend and tile options as one :class:`RunOptions`."""
    from superres.runtime import RunOptions

    batch = getattr(args, "batch", "auto")
    return RunOptions(device=args.device, precision=args.precision, backend=args.backend,
                      tile=tile_argument(getattr(args, "tile", "auto")), tile_pad=getattr(args, "tile_pad", None),
                      batch=batch if batch == "auto" else _non_negative_int(batch, "--batch"),
                      compile=args.compile)
