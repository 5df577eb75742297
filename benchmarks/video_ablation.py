"""Does the temporal path work? A video network against the same network fed one frame, and bicubic.

The data are synthetic clips: a camera moving smoothly (pan up to 2 px/frame, slight zoom and
rotation) over real photos, so the frames hold real content and sub-pixel motion, which is what
multi-frame SR exploits. A recipe trains the video network on clips over BSD200 (validation
clips over T91), and its ``_single`` twin trains the same network on one frame of information:
windows whose frames are all copies of the centre frame (TAN, EDVR), or the same clips with each
frame fed on its own (BasicVSR, IconVSR: ``data.video.single_frame`` in clip mode). Both are scored
here on held-out clips rendered over Set5 (never seen in training), every frame, Y-PSNR/SSIM,
crop 0, with MATLAB-bicubic LR; the single-frame network is fed one frame at test time too, and so
are the video network's own weights (a second, weaker ablation).

    python benchmarks/video_ablation.py --render        # the T91 validation and Set5 test clips
    superres train configs/basicvsr_motion_x4.yaml; superres train configs/basicvsr_motion_x4_single.yaml
    python benchmarks/video_ablation.py --multi basicvsr_motion_x4 --single basicvsr_motion_x4_single
    # the same with tan_motion_x4 and tan_motion_x4_single (the defaults)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT / "runs" / "motion_clips"


def render(data: Path) -> None:
    from superres.data.video import write_motion_clips

    write_motion_clips([str(data / "T91")], CLIPS / "t91", count=8, frames=7, size=128, seed=1)
    write_motion_clips([str(data / "Set5" / "HR")], CLIPS / "set5", count=10, frames=10, size=128, seed=2)


def score(model: str, single_frame: bool = False) -> dict:
    from superres.metrics.evaluate import evaluate_model, mean_scores

    records, _ = evaluate_model(model, CLIPS / "set5", 4, clips=True, single_frame=single_frame)
    return {**mean_scores(records), "clips": [r["psnr"] for r in records]}


def flow_error(model: str, data: Path, pairs: int = 256) -> tuple[float, float]:
    """End-point error (LR pixels) of the video network's SPyNet and of zero flow, on frame pairs of the
    recipe's camera motion over Set5 (exact flow from :func:`superres.data.video.camera_flow`)."""
    import numpy as np

    from superres.data.video import MotionFlows
    from superres.zoo import load_model

    spynet = load_model(model).module.spynet
    flows = MotionFlows([str(data / "Set5" / "HR")], 4, 128, max_shift=2.0, max_zoom=0.005, max_rotation=0.3)
    rng = np.random.default_rng(0)
    batch = [flows[(int(rng.integers(len(flows))), int(rng.integers(2**62)))] for _ in range(pairs)]
    ref, supp, truth = (torch.stack([b[k] for b in batch]) for k in ("ref", "supp", "flow"))
    with torch.inference_mode():
        error = torch.linalg.vector_norm(spynet(ref, supp) - truth, dim=1).mean().item()
    return error, torch.linalg.vector_norm(truth, dim=1).mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render", action="store_true", help="render the validation and test clips")
    parser.add_argument("--data", type=Path, default=ROOT / "../shared/data")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    parser.add_argument("--multi", default="tan_motion_x4", help="the video network's run (under --runs)")
    parser.add_argument("--single", default="tan_motion_x4_single", help="its single-frame ablation's run")
    parser.add_argument("--json", type=Path, help="also write the table as JSON")
    args = parser.parse_args()
    if args.render:
        render(args.data)
        return
    config = json.loads((args.runs / args.multi / "config.json").read_text())
    arch, frames = config["model"]["arch"], config["data"]["video"]["frames"]
    multi = str(args.runs / args.multi / "model.safetensors")
    rows = {"bicubic": score("bicubic"),
            f"{arch}, {frames} frames": score(multi),
            f"{arch} fed one frame (the ablation)": score(str(args.runs / args.single / "model.safetensors"),
                                                          single_frame=True),
            f"its {frames}-frame weights fed one frame": score(multi, single_frame=True)}
    print(f"{'Set5 motion clips, x4 (10 clips x 10 frames)':<46}  Y-PSNR    SSIM  clips better than the ablation")
    ablation = rows[f"{arch} fed one frame (the ablation)"]["clips"]
    for name, s in rows.items():
        better = sum(a > b for a, b in zip(s["clips"], ablation, strict=True))
        print(f"{name:<46}  {s['psnr']:6.2f}  {s['ssim']:.4f}  {better} of {len(ablation)}")
    if arch in ("BasicVSR", "IconVSR"):  # the recurrent networks align with SPyNet flow
        error, zero = flow_error(multi, args.data)
        rows["flow end-point error"] = {"spynet": error, "zero_flow": zero}
        print(f"its SPyNet's flow error on Set5 camera motion: {error:.3f} LR px (zero flow: {zero:.3f})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
