"""What every sub-command shares: one-line errors, progress bars, batches that go on past a bad file, inputs
and output folders (an output never replaces an input nor is read back as one), the scale, tile, face and
runtime arguments. Nothing here imports torch."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from superres.errors import SuperresError


def error(message: str) -> None:
    _say(f"superres: error: {message}")


def warn(message: str) -> None:
    _say(f"superres: warning: {message}")


def note(message: str) -> None:
    """``superres: MESSAGE``: what happened, neither an error nor a warning (a run stopped by Ctrl-C)."""
    _say(f"superres: {message}")


def _say(line: str) -> None:
    if "tqdm" in sys.modules:  # print below any progress bar, not on its line
        sys.modules["tqdm"].tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr)


PLAIN_EVERY = 30.0  # seconds between progress lines where stderr is not a terminal


def progress_bar(total: float | None = None, *, unit: str = "it", desc: str | None = None, percent: bool = False,
                 leave: bool = True, disable: bool = False, delay: float = 0.0, initial: float = 0):
    """A tqdm progress bar on stderr: every command makes its bars here.

    On a terminal, a bar redrawn in place. Elsewhere (a log file, CI) each redraw would stay as a line of its
    own, so the bar writes a plain line when it starts, every :data:`PLAIN_EVERY` seconds (one line per period
    for all the bars together) and when it ends. ``percent``: show the share done only (a count that is not a
    number of items, such as network passes); ``delay``: show nothing for a job done sooner than that;
    ``initial``: the count already done (a resumed training run).
    """
    from tqdm import tqdm

    prefix = f"{desc}: " if desc else ""
    if sys.stderr.isatty():
        bar_format = prefix + "{percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]" if percent else None
        return tqdm(total=total, unit=unit, desc=desc, leave=leave, disable=disable, delay=delay, file=sys.stderr,
                    dynamic_ncols=True, bar_format=bar_format, initial=initial)
    if total is None:
        line = "{n_fmt} {unit} [{elapsed}, {rate_fmt}]"
    elif percent:
        line = "{percentage:.0f}% [{elapsed}<{remaining}]"
    else:
        line = "{percentage:.0f}% {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
    return tqdm(total=total, unit=unit, desc=desc, leave=leave, disable=disable, delay=delay, file=_PlainLines(),
                position=0, bar_format=prefix + line, initial=initial)


class _PlainLines:
    """tqdm's file where stderr is not a terminal: of a bar's redraws (``\\r`` + status) one becomes a line every
    :data:`PLAIN_EVERY` seconds (the clock is shared by all bars), and the last one when the bar ends (``\\n``)."""

    last_line = -float("inf")

    def __init__(self) -> None:
        self.pending = self.shown = ""

    def write(self, text: str) -> None:
        for i, part in enumerate(text.split("\n")):
            if i:  # the bar ended: its last status is due now
                self._line(at_end=True)
            status = part.rsplit("\r", 1)[-1].strip()
            if status:  # not the blanks that clear a bar
                self.pending = status
                self._line()

    def _line(self, at_end: bool = False) -> None:
        now = time.monotonic()
        if self.pending and self.pending != self.shown and (at_end or now - _PlainLines.last_line >= PLAIN_EVERY):
            print(self.pending, file=sys.stderr, flush=True)
            self.shown, self.pending = self.pending, ""
            _PlainLines.last_line = now

    def flush(self) -> None:
        sys.stderr.flush()


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


def collect_inputs(inputs: list[str], recursive: bool, quiet: bool = False,
                   output: Path | None = None) -> tuple[list[tuple[Path, Path]], int]:
    """(file, path relative to its root) for files, folders and globs (folders keep their sub-folders), and
    the number of files in the folders that are not images superres reads (each folder says so in a line).

    ``output``: the output folder. Where it lies inside a folder given (or inside a pattern's fixed part), the
    files in it are not inputs: a second run must not take the first one's outputs for images to upscale."""
    import glob

    from superres.io import IMAGE_EXTENSIONS
    from superres.io.files import describe_skipped, scan_folder

    found: list[tuple[Path, Path]] = []
    named = {Path(item).resolve() for item in inputs if Path(item).is_file()}  # tried, so not skipped
    others = 0
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            keep = _outside_output(path, output)
            images, not_images = scan_folder(path, recursive)
            not_images = [p for p in not_images if p.resolve() not in named and keep(p)]
            others += len(not_images)
            if not_images and not quiet:
                print(f"superres: {describe_skipped(path, not_images)}", file=sys.stderr)
            kept = [f for f in images if keep(f)]
            if not kept:
                raise SuperresError(f"{path}: no images found (looked for {' '.join(sorted(IMAGE_EXTENSIONS))}"
                                    + (f"; those in the output folder {output} are not inputs" if images else
                                       "" if recursive else "; add -r for sub-folders") + ")")
            found += [(f, f.relative_to(path)) for f in kept]
        elif path.exists():
            if not path.is_file():  # reading /dev/zero or a FIFO would never end
                raise SuperresError(f"{path}: not a regular file (a device, pipe or socket); give image files "
                                    "or folders")
            found.append((path, Path(path.name)))
        elif glob.has_magic(item):
            # ``**`` in a pattern the user wrote means sub-folders, with or without -r
            keep = _outside_output(_pattern_root(item), output)
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not matches:
                raise SuperresError(f"{item}: no file matches")
            found += [(m, Path(m.name)) for m in matches if keep(m)]
        else:
            raise SuperresError(f"{item}: no such file or folder")
    unique: dict[Path, tuple[Path, Path]] = {}
    for src, rel in found:  # a file named twice (or inside a folder also given) is done once
        unique.setdefault(src.resolve(), (src, rel))
    return list(unique.values()), others


def _outside_output(root: Path, output: Path | None) -> Callable[[Path], bool]:
    """Whether a file found under ``root`` lies outside ``output``, where the output folder is inside ``root``
    (an output folder that is ``root`` itself, or outside it, takes nothing away)."""
    if output is None:
        return lambda f: True
    out, base = output.resolve(), root.resolve()
    if base not in out.parents:
        return lambda f: True
    return lambda f: out not in f.resolve().parents


def _pattern_root(pattern: str) -> Path:
    """The folder a glob pattern starts from: its leading parts without wildcards."""
    import glob
    import itertools

    return Path(*itertools.takewhile(lambda part: not glob.has_magic(part), Path(pattern).parts))


def refuse_overwriting_input(src: Path, target: Path, advice: str = "choose another output") -> None:
    """Refuse an output that is its input: the same path, or the same file through a symbolic or hard link
    (--overwrite does not change that)."""
    from superres.io.files import same_file

    if same_file(src, target):
        raise SuperresError(f"{src}: the output {target} would overwrite the input; {advice}")


def check_output_file(output: Path, inputs: Iterable[str | Path | None], overwrite: bool, advice: str,
                      what: str = "file") -> None:
    """For commands that write one file (interpolate, export): refuse ``output`` where it is one of the input
    files (--overwrite or not), a folder, or, without ``overwrite``, a file that exists (as ``superres video``)."""
    for given in inputs:
        if given is not None and Path(given).is_file():  # not a named model
            refuse_overwriting_input(Path(given), output, advice)
    if output.is_dir():
        raise SuperresError(f"{output}: is a folder; -o names the {what} to write")
    if output.exists() and not overwrite:
        raise SuperresError(f"{output}: exists (use --overwrite to replace it)")


def claim_outputs(pairs: Iterable[tuple[Path, Path]], same_folder_advice: str = "rename one of them",
                  advice: str = "choose another output") -> None:
    """Refuse, before any work, a batch where an output would replace its input (:func:`refuse_overwriting_input`,
    with ``advice``) or where two inputs would write the same output. ``same_folder_advice`` is the way out
    for two inputs of one folder (``x.png`` and ``x.jpg``); inputs of different folders can be given as one."""
    from superres.io.files import same_file

    claimed: dict[Path, Path] = {}
    for src, target in pairs:
        refuse_overwriting_input(src, target, advice)
        key = target.resolve()
        if key in claimed:
            other = claimed[key]
            way_out = (same_folder_advice if same_file(src.parent, other.parent) else
                       "give the inputs as one folder (sub-folders are kept) or process them separately")
            raise SuperresError(f"{src}: its output {target} is also the output of {other}; {way_out}")
        claimed[key] = src


def remove_stale_temps(targets: Iterable[Path]) -> None:
    """Delete the temporary files that killed runs (SIGKILL, a power cut) left in the folders of these outputs;
    those of processes still writing stay. Each folder is listed once."""
    from superres.io.files import remove_stale_temps_in

    for folder in dict.fromkeys(target.parent for target in targets):
        remove_stale_temps_in(folder)


def output_path(out_dir: Path, src: Path) -> Path:
    return out_dir / f"{src.stem}.png"


def check_distinct_outputs(files: Iterable[Path], out_dir: Path) -> None:
    """Refuse a batch where an output would replace its input (:func:`refuse_overwriting_input`: the output
    folder is the input folder) or two inputs (``photo.png`` and ``photo.jpg``, or the same name in two
    sub-folders) would write the same output: one would silently replace the other."""
    claimed: dict[Path, Path] = {}
    for src in files:
        target = output_path(out_dir, src)
        refuse_overwriting_input(src, target, "choose another output folder")
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
    from superres.io import read_samples
    from superres.io.image import DEFAULT_MAX_PIXELS

    return read_samples(src, max_pixels or DEFAULT_MAX_PIXELS)


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


# -s/--outscale: a downscale by more than 100 or an upscale by more than 64 is a typo, not a use
MIN_OUTSCALE, MAX_OUTSCALE = 0.01, 64


def bounded_number(low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a finite number within [low, high], or one line saying what it takes."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value <= high:  # NaN and infinities too
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {text}")
        return value

    return parse


outscale_argument = bounded_number(MIN_OUTSCALE, MAX_OUTSCALE)


def outscale_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-s", "--outscale", type=outscale_argument,
                   help=f"final scale, {MIN_OUTSCALE:g} to {MAX_OUTSCALE:g} (default: the model's own)")


def add_face_arguments(p: argparse.ArgumentParser) -> None:
    """--face-model, --face-strength, --face-min-size, --face-color (for upscale and video)."""
    p.add_argument("--face-model", metavar="PATH",
                   help="restore faces with this face network: the path of a GFPGAN, RestoreFormer or CodeFormer "
                   "checkpoint (no package registry ships face weights)")
    p.add_argument("--face-strength", type=float, default=1.0, metavar="S",
                   help="0: faces as the background model makes them, 1: fully restored (default), between: a blend")
    p.add_argument("--face-min-size", type=float, default=32, metavar="N",
                   help="faces smaller than N input pixels are left to the background model (default 32)")
    p.add_argument("--face-color", choices=["keep", "none"], default="keep",
                   help="keep: faces keep the colour and shading of their surroundings and take the restored "
                   "detail (default); none: the restorer's output as it is")


def face_options(args: argparse.Namespace):
    """The command's face options, checked before any work (None without --face-model)."""
    from superres.faces import FaceOptions

    options = FaceOptions(strength=args.face_strength, min_size=args.face_min_size, color=args.face_color)
    return options if args.face_model else None


DEGRADATIONS = ("bicubic", "bd")  # how an LR image is made from its HR one, as SR papers name them


def degradation_argument(p: argparse.ArgumentParser) -> None:
    """--degradation, one name for one concept in `degrade` and `eval`."""
    p.add_argument("--degradation", choices=DEGRADATIONS, default="bicubic",
                   help="how LR images are made from HR ones: bicubic (MATLAB's imresize, the default) or bd "
                   "(Gaussian blur sigma 1.6 + subsampling)")


def tile_argument(value: str) -> int | str:
    return value if value == "auto" else _non_negative_int(value, "--tile")


TILE_HELP = ("tile size in input pixels: auto (from memory), 0 (none) or N; an N below the model's min tile "
             "(superres models) makes the tiles mostly overlap, over 2x the compute")


def add_runtime_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="auto: 8-bit images in bf16 on CPUs with native bf16 and fp16 on CUDA, else fp32")
    p.add_argument("--backend", choices=["auto", "torch", "ncnn"], default="auto",
                   help="auto: the ncnn runtime for named models in fp32 on the CPU (faster), else PyTorch")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network for each input size: minutes to start, then faster on "
                   "repeated sizes (video frames, equal tiles)")


def add_ray_argument(p: argparse.ArgumentParser) -> None:
    """--ray [ADDRESS]: run on a Ray cluster (the ``ray`` extra)."""
    p.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                   help="share the work out between the devices of a Ray cluster (pip install \"superres[ray]\"): "
                   "one worker per GPU, or per node on CPUs, each loading the model once. ADDRESS: auto (the "
                   "default: a cluster started with `ray start`, or RAY_ADDRESS, else a new one on this machine), "
                   "HOST:PORT or ray://HOST:PORT. Put it after the inputs")


def run_options(args: argparse.Namespace):
    """The command's device, precision, backend and tile options as one :class:`RunOptions`."""
    from superres.runtime import RunOptions

    batch = getattr(args, "batch", "auto")
    return RunOptions(device=args.device, precision=args.precision, backend=args.backend,
                      tile=tile_argument(getattr(args, "tile", "auto")), tile_pad=getattr(args, "tile_pad", None),
                      batch=batch if batch == "auto" else _non_negative_int(batch, "--batch"),
                      compile=args.compile)
