"""Vid4 calendar at x4: PSNR, SSIM, tOF and warping error of image upscalers (frame by frame) and video networks.

The LR frames are MATLAB bicubic x4 of the ground truth (BI, basicvsr-vimeo-bi's training degradation); each
model runs as ``superres eval`` runs it (``clip_runner``: video networks on the whole clip, image models frame
by frame, fp32 PyTorch); PSNR/SSIM on Y over every frame with no border crop (the video papers' protocol),
tOF (TecoGAN's) and the warping error on the RGB output (:mod:`superres.metrics.temporal`), the same numbers
as ``superres eval -m MODEL Vid4/GT --scale 4 --temporal``. Models that are not available are left out, said.

``--tecogan REPO`` also runs TecoGAN's official ``metrics.py`` (a checkout of thunil/TecoGAN; needs absl and
pandas, ``--deps`` a folder that holds them) side by side on the bicubic output and compares its tOF, per frame
pair and per clip, with ours. Its LPIPS parts (AlexNet weights) are stubbed out; they do not touch tOF.

    python benchmarks/temporal_table.py [--models bicubic,realesrgan-x4plus,...] [--frames N] [--threads 2]
    python benchmarks/temporal_table.py --models bicubic --tecogan ../TecoGAN --deps /tmp/teco_deps
"""

from __future__ import annotations

import argparse
import csv
import runpy
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MODELS = ["bicubic", "realesrgan-x4plus", "realesr-animevideov3", "animesr-v2", "basicvsr-vimeo-bi"]


def run_model(name: str, lr: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
    from superres.metrics.evaluate import EVAL_OPTIONS, clip_runner
    from superres.zoo import load_model

    runner = clip_runner(load_model(name, scale=4), EVAL_OPTIONS)
    start = time.perf_counter()
    with torch.inference_mode():
        out = [sr for sr, _, _ in runner(iter((f, i, None) for i, f in enumerate(lr)))]
    return out, time.perf_counter() - start


def tecogan_side_by_side(repo: Path, deps: Path | None, gt: list[np.ndarray], out: list[np.ndarray]) -> None:
    """TecoGAN's metrics.py on PNG copies of the frames, then its per-pair tOF (metrics.csv) against ours."""
    import skimage.measure
    import skimage.metrics

    from superres.io import write_image
    from superres.metrics.temporal import tof, tof_per_pair

    if deps is not None:
        sys.path.append(str(deps))
    # LPIPS needs AlexNet's weights (downloaded at run time): stubbed, it is not part of tOF; compare_ssim is
    # skimage.metrics.structural_similarity under its old name.
    lpips = types.ModuleType("LPIPSmodels")
    lpips.__path__ = []
    util, dist = types.ModuleType("LPIPSmodels.util"), types.ModuleType("LPIPSmodels.dist_model")
    util.im2tensor = lambda image: image

    class DistModel:
        def initialize(self, **_):
            pass

        def forward(self, a, b):
            return np.zeros(1)

    dist.DistModel = DistModel
    lpips.util, lpips.dist_model = util, dist
    sys.modules.update({"LPIPSmodels": lpips, "LPIPSmodels.util": util, "LPIPSmodels.dist_model": dist})
    skimage.measure.compare_ssim = skimage.metrics.structural_similarity
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for folder, frames in (("tar", gt), ("res", out)):
            (root / folder).mkdir()
            for i, frame in enumerate(frames):
                write_image(root / folder / f"{i:04d}.png", frame)
        argv, stdout = sys.argv, sys.stdout
        sys.argv = ["metrics.py", "--output", str(root / "out"), "--results", str(root / "res"), "--targets",
                    str(root / "tar")]
        try:
            runpy.run_path(str(repo / "metrics.py"), run_name="__main__")
        finally:
            sys.argv, sys.stdout = argv, stdout
        rows = list(csv.reader((root / "out" / "metrics.csv").open()))
    column = rows[0].index("tOF_00")
    theirs = []
    for row in rows[1:]:  # its per-frame section, until the averages it appends below
        if not row or not row[0].isdigit():
            break
        if row[column]:
            theirs.append(float(row[column]))
    ours = tof_per_pair(gt, out)
    diff = np.abs(np.array(theirs) - np.array(ours)).max() if len(theirs) == len(ours) else float("nan")
    print(f"TecoGAN metrics.py: {len(theirs)} tOF pairs, clip tOF {np.float32(theirs).sum() / len(theirs):.8f}; "
          f"superres: {len(ours)} pairs, clip tOF {tof(gt, out):.8f}; largest per-pair difference {diff:.3g} "
          "(its CSV prints float32 to 8 digits)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--frames", type=int, help="only the first N frames (for slow models)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tecogan", type=Path, help="a TecoGAN checkout: compare its tOF on the bicubic output")
    parser.add_argument("--deps", type=Path, help="a folder holding pandas (and absl) for TecoGAN's metrics.py")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from interpolation import cpu_name

    from superres.data.video import eval_clips
    from superres.metrics.folders import score_images
    from superres.metrics.temporal import GroundTruthFlows, temporal_scores
    from superres.zoo.pretrained import MODELS as NAMED
    from superres.zoo.pretrained import is_available

    (_, hr, lr), = eval_clips(DATA / "Vid4" / "GT", 4, include=["calendar"])
    hr, lr = hr[:args.frames], lr[:args.frames]
    flows = GroundTruthFlows(hr)
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} threads (PyTorch), fp32; Vid4 calendar, {len(hr)} "
          f"frames {hr[0].shape[1]}x{hr[0].shape[0]}, BI x4")
    print(f"{'model':<22} {'PSNR':>7} {'SSIM':>7} {'tOF':>7} {'warp':>9} {'s/frame':>8}")
    for name in args.models.split(","):
        if name != "bicubic" and not is_available(name):
            print(f"{name}: not available ({NAMED[name].install}); left out")
            continue
        out, seconds = run_model(name, lr)
        scores = [score_images(a, b, 0, True) for a, b in zip(out, hr, strict=True)]  # as evaluate_clips
        t = temporal_scores(hr, out, flows=flows)
        print(f"{name:<22} {np.mean([s['psnr'] for s in scores]):7.2f} {np.mean([s['ssim'] for s in scores]):7.4f} "
              f"{t['tof']:7.4f} {t['warp']:9.6f} {seconds / len(lr):8.2f}", flush=True)
        if args.tecogan and name == "bicubic":
            tecogan_side_by_side(args.tecogan, args.deps, hr, out)


if __name__ == "__main__":
    main()
