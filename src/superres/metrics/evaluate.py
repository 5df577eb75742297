"""Benchmark evaluation the papers' way: a model on test pairs or clips, scored by PSNR/SSIM.

Protocol (SRCNN's, FSRCNN's and EDSR's test scripts, BasicSR): LR from the mod-cropped HR by
MATLAB bicubic (see :mod:`superres.data.paired`), the whole LR image through the network in
float32, the output clipped and rounded to 8 bits, and scores on the Y channel with ``scale``
border pixels removed. Networks that see only Y (SRCNN, FSRCNN, ESPCN) get the Y of the LR image
and are scored on their Y output directly, with Cb/Cr upscaled by MATLAB bicubic when an RGB
result is asked for. Gray images are scored on their gray values, as ``superres metrics`` scores
gray files. Video papers (BasicVSR, EDVR on Vid4/REDS4) score every frame of every clip with no
border crop. Every model runs through :class:`superres.runner.Runner`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from superres.metrics.folders import score_images
from superres.ops.layout import from_float
from superres.runtime import RunOptions

# The papers' protocol: the whole image in float32, through PyTorch (not ncnn's Winograd arithmetic).
EVAL_OPTIONS = RunOptions(precision="fp32", backend="torch", tile=0)


def super_resolve(runner, lr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 RGB LR -> (uint8 RGB SR, uint8 Y SR for Y-only networks else None)."""
    from superres.runner import upscale_luma

    desc = runner.desc
    if desc.in_channels == 1 and desc.resample is None:
        rgb, y = upscale_luma(runner.forward, lr.astype(np.float64) / 255.0, desc.scale)
        return from_float(rgb, np.uint8), from_float(y.astype(np.float64), np.uint8)
    return runner(lr), None


def evaluate(runner, pairs: Sequence, y_channel: bool = True, crop_border: int | None = None,
             keep_outputs: bool = False) -> list[dict]:
    """One record per pair: name, psnr, ssim (and the uint8 RGB ``output`` if asked)."""
    from superres.ops import rgb2ycbcr

    scale = runner.desc.scale
    crop = scale if crop_border is None else crop_border
    records = []
    for pair in pairs:
        sr, sr_y = super_resolve(runner, pair.lr)
        if sr.shape != pair.hr.shape:
            raise ValueError(f"{pair.name}: the network made {sr.shape[1]}x{sr.shape[0]} from a "
                             f"{pair.lr.shape[1]}x{pair.lr.shape[0]} input, expected x{scale}")
        if getattr(pair, "gray", False):  # as `superres metrics` scores the gray file `upscale` writes
            a, b = cv2.cvtColor(np.ascontiguousarray(sr), cv2.COLOR_RGB2GRAY)[..., None], pair.hr[..., :1]
        elif y_channel and sr_y is not None:
            a, b = sr_y, rgb2ycbcr(pair.hr.astype(np.float64) / 255.0, y_only=True) * 255.0
        else:
            a, b = sr, pair.hr
        record = {"name": pair.name, **score_images(a.astype(np.float64), b.astype(np.float64), crop, y_channel)}
        if keep_outputs:
            record["output"] = sr
        records.append(record)
    return records


def frame_runner(runner) -> Callable:
    """An image model as a clip runner for :func:`evaluate_clips`: each frame on its own."""
    def run(frames):
        for lr, pts, tb in frames:
            yield super_resolve(runner, lr)[0], pts, tb
    return run


def clip_runner(desc, options: RunOptions = EVAL_OPTIONS, *, frames: int | None = None,
                single_frame: bool = False) -> Callable:
    """How a model runs on test clips: a video network on its windows, or a recurrent one on each whole
    clip when it fits in memory (as the papers evaluate; longer clips in overlapping chunks, as
    ``superres video`` runs them), ``single_frame``: fed one frame (the ablation); an image model frame
    by frame."""
    if desc.video is not None:
        from superres.infer.video import video_runner

        return video_runner(desc, options=options, frames=frames, single_frame=single_frame, whole_clips=True)
    if single_frame:
        raise ValueError(f"single-frame evaluation is for video networks; {desc.arch} already sees one frame")
    from superres.runner import Runner

    return frame_runner(Runner(desc, options))


def evaluate_clips(runner: Callable, clips: Sequence, y_channel: bool = True, crop_border: int = 0,
                   keep_outputs: bool = False, temporal: bool = False) -> list[dict]:
    """One record per clip (name, LR frames, HR frames): PSNR and SSIM averaged over all its frames, and
    with ``temporal`` its tOF and warping error (:func:`superres.metrics.temporal.temporal_scores`).

    ``runner`` maps an iterator of (uint8 frame, pts, time base) to the upscaled frames, in order:
    a :func:`clip_runner`. Video papers score every frame with no border crop (BasicVSR, EDVR on
    Vid4/REDS4: crop 0).
    """
    records = []
    for name, hr, lr in clips:
        outputs = [sr for sr, _, _ in runner(iter((f, i, None) for i, f in enumerate(lr)))]
        if len(outputs) != len(hr) or outputs[0].shape != hr[0].shape:
            raise ValueError(f"{name}: the network made {len(outputs)} frames of {outputs[0].shape[1]}x"
                             f"{outputs[0].shape[0]}, expected {len(hr)} of {hr[0].shape[1]}x{hr[0].shape[0]}")
        scores = [score_images(a, b, crop_border, y_channel) for a, b in zip(outputs, hr, strict=True)]
        record = {"name": name, "frames": len(hr), **{k: float(np.mean([s[k] for s in scores]))
                                                      for k in ("psnr", "ssim")}}
        if temporal:
            from superres.metrics.temporal import temporal_scores

            record.update(temporal_scores(hr, outputs))
        if keep_outputs:
            record["output"] = outputs[len(outputs) // 2]
        records.append(record)
    return records


def holds_clips(folder: str | os.PathLike) -> bool:
    """A folder of clips (sub-folders of frames, as Vid4's GT) rather than of images."""
    from superres.io import list_images

    folder = Path(folder)
    return folder.is_dir() and not list_images(folder) and any(
        sub.is_dir() and list_images(sub) for sub in sorted(folder.iterdir()))


def evaluate_model(model, hr_dir: str | os.PathLike, scale: int, *, lr_dir: str | os.PathLike | None = None,
                   degradation: str = "bicubic", clips: bool | None = None, single_frame: bool = False,
                   y_channel: bool = True, crop_border: int | None = None,
                   options: RunOptions = EVAL_OPTIONS, temporal: bool = False) -> tuple[list[dict], bool]:
    """A model (name, path, ``bicubic`` or descriptor) on a test set: (records, whether scored as clips).

    Images: LR made the papers' way (or read from ``lr_dir``), crop = ``scale`` unless told. Clips
    (``clips=None``: video networks, and folders that hold clips): every frame, crop 0 unless told;
    ``temporal`` adds each clip's tOF and warping error (clips only).
    """
    import torch

    from superres.zoo import load_model

    desc = load_model(model, scale=scale) if isinstance(model, str | os.PathLike) else model
    if desc.purpose not in ("sr", "video"):
        raise ValueError(f"{model}: a {desc.arch} is a {desc.purpose} network, not an upscaler")
    if desc.scale != scale:
        raise ValueError(f"{model}: is a x{desc.scale} model, --scale says x{scale}")
    if clips is None:
        clips = desc.video is not None or holds_clips(hr_dir)
    with torch.inference_mode():
        if clips:
            from superres.data.video import eval_clips

            runner = clip_runner(desc, options, single_frame=single_frame)
            return evaluate_clips(runner, eval_clips(hr_dir, scale, lr_dir, degradation), y_channel,
                                  crop_border or 0, temporal=temporal), True
        if single_frame:
            raise ValueError("single-frame evaluation is for clips of video networks")
        if temporal:
            raise ValueError("temporal metrics (tOF, warping error) are for clips: give a folder of clips "
                             "(sub-folders of frames) or --clips")
        from superres.data import eval_pairs
        from superres.runner import Runner

        pairs = eval_pairs(hr_dir, scale, lr_dir, degradation)
        return evaluate(Runner(desc, options), pairs, y_channel, crop_border), False


def mean_scores(records: Sequence[dict]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in records])) for k in ("psnr", "ssim")}
