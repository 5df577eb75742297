"""BasicVSR's official weights on Vid4, as the paper evaluates them (Y, no border crop, every frame),
run two ways side by side: each clip whole (what ``superres eval`` does when a clip fits in memory)
and in overlapping 15-frame chunks (what ``superres video`` does on long videos). Prints per-clip
Y-PSNR/SSIM, seconds and peak memory of each way.

Published (Chan et al., CVPR 2021, Table 2), 4-clip means: BI 27.24 / 0.8251, BD 27.96 / 0.8553.
``../shared/data`` holds the calendar clip (GT and the BD frames distributed with DUF).

    python benchmarks/vid4_basicvsr.py [--data ../shared/data] [--degradation bi bd]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_one(model: str, gt: Path, lr: Path | None, whole: bool) -> str:
    """One way in a fresh process, so that its peak memory is its own."""
    code = f"""
import resource, time, torch
from superres.data.video import eval_clips
from superres.infer.video import video_runner
from superres.metrics.evaluate import EVAL_OPTIONS, evaluate_clips
from superres.zoo import load_model
clips = eval_clips({str(gt)!r}, 4, {str(lr) if lr else None!r})
runner = video_runner(load_model({model!r}), options=EVAL_OPTIONS, whole_clips={whole})
tic = time.perf_counter()
with torch.inference_mode():
    records = evaluate_clips(runner, clips)
seconds = time.perf_counter() - tic
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
scores = "; ".join(f"{{r['name']}} {{r['psnr']:.4f}} / {{r['ssim']:.4f}}" for r in records)
print(f"{{scores}}  ({{seconds:.0f}} s, peak {{peak:.0f}} MiB)")
"""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--degradation", nargs="+", default=["bi", "bd"], choices=["bi", "bd"])
    args = parser.parse_args()
    gt = args.data / "Vid4" / "GT"
    for degradation in args.degradation:
        model = f"basicvsr-vimeo-{degradation}"
        lr = args.data / "Vid4" / "BDx4" if degradation == "bd" else None
        for label, whole in (("whole clips", True), ("15-frame chunks, overlap 3", False)):
            print(f"{model} on Vid4 {degradation.upper()}, {label}: {run_one(model, gt, lr, whole)}", flush=True)


if __name__ == "__main__":
    main()
