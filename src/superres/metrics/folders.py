"""Scoring folders of images: SR files paired with their ground truth by name, or NIQE and BRISQUE of one folder.

Images are scored on the 0-255 scale, RGB (or gray, for gray files), as :func:`superres.metrics.psnr`
and :func:`superres.metrics.ssim` expect. A file that cannot be scored is a problem (one line
naming it) and the others are still scored.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from superres.errors import SuperresError
from superres.io import read_image, require_images
from superres.metrics.brisque import brisque
from superres.metrics.niqe_model import niqe
from superres.metrics.psnr_ssim import psnr, ssim


def load_for_metrics(path: str | os.PathLike) -> np.ndarray:
    """The image as float RGB on the 0-255 scale (alpha dropped); gray files keep a single channel."""
    img, info = read_image(path)
    img = img[..., :3] * 255.0
    return img[..., :1] if info.gray else img


def score_pair(gt_path: Path, sr_path: Path, crop_border: int, y_channel: bool, modcrop: int = 0) -> dict:
    """PSNR and SSIM of one SR image against its ground truth, as a record ``{name, psnr, ssim}``.

    ``modcrop`` crops the ground truth to a multiple of it first (when it was not).
    """
    gt, sr = load_for_metrics(gt_path), load_for_metrics(sr_path)
    if modcrop:
        gt = gt[: gt.shape[0] - gt.shape[0] % modcrop, : gt.shape[1] - gt.shape[1] % modcrop]
    if gt.shape[:2] != sr.shape[:2]:
        hint = "" if modcrop else " (add --modcrop SCALE if the ground truth is not cropped to a multiple of it)"
        raise SuperresError(f"{sr_path}: size {sr.shape[1]}x{sr.shape[0]} differs from ground truth "
                            f"{gt_path.name} {gt.shape[1]}x{gt.shape[0]}{hint}")
    return {"name": gt_path.stem, **score_images(gt, sr, crop_border, y_channel)}


def score_images(gt: np.ndarray, sr: np.ndarray, crop_border: int, y_channel: bool) -> dict[str, float]:
    """``{psnr, ssim}`` of two HxWxC images on the 0-255 scale, RGB or gray (1 channel), as files are
    scored: gray against gray on its own values (Y of a gray image is not its gray), one gray and one
    color both as color. :func:`superres.metrics.evaluate.evaluate` scores through here too."""
    if gt.shape[2] != sr.shape[2]:
        gt, sr = (x if x.shape[2] == 3 else x.repeat(3, axis=2) for x in (gt, sr))
    return {"psnr": psnr(gt, sr, crop_border, y_channel), "ssim": ssim(gt, sr, crop_border, y_channel)}


def pair_files(gt_dir: Path, sr_dir: Path, suffix: str = "") -> tuple[list[tuple[Path, Path]], list[str]]:
    """(GT file, SR file) matched by stem (SR stems may carry ``suffix``), and the problems found."""
    gt_files, sr_files = require_images(gt_dir), require_images(sr_dir)
    by_stem: dict[str, Path] = {}
    for f in sr_files:
        stem = f.stem[: -len(suffix)] if suffix and f.stem.endswith(suffix) else f.stem
        by_stem.setdefault(stem, f)
    pairs, problems = [], []
    for g in gt_files:
        if g.stem in by_stem:
            pairs.append((g, by_stem[g.stem]))
        else:
            problems.append(f"{g}: no SR image named {g.stem}{suffix}.* in {sr_dir}")
    return pairs, problems


def score_folders(gt_dir: Path, sr_dir: Path | None, crop_border: int = 0, y_channel: bool = False,
                  suffix: str = "", modcrop: int = 0) -> tuple[list[dict], list[str], list[str]]:
    """Score a folder: (per-image records, metric keys, problems). NIQE and BRISQUE when ``sr_dir`` is None."""
    records: list[dict] = []
    problems: list[str] = []
    if sr_dir is None:
        for f in require_images(gt_dir):
            try:
                img = load_for_metrics(f)
                records.append({"name": f.stem, "niqe": niqe(img, crop_border), "brisque": brisque(img, crop_border)})
            except (SuperresError, ValueError) as e:
                problems.append(f"{f}: {e}" if str(f) not in str(e) else str(e))
        return records, ["niqe", "brisque"], problems
    pairs, problems = pair_files(gt_dir, sr_dir, suffix)
    for g, s in pairs:
        try:
            records.append(score_pair(g, s, crop_border, y_channel, modcrop))
        except (SuperresError, ValueError) as e:
            problems.append(str(e) if str(s) in str(e) or str(g) in str(e) else f"{s}: {e}")
    return records, ["psnr", "ssim"], problems


CLIP_KEYS = ["frames", "psnr", "ssim", "tof", "warp"]


def score_clip_folders(gt_dir: Path, sr_dir: Path, crop_border: int = 0, y_channel: bool = False,
                       suffix: str = "") -> tuple[list[dict], list[str], list[str]]:
    """Score folders of clips (sub-folders of frames, as Vid4's GT), paired by name, frames paired by stem
    in the order of their names: (one record per clip: frames, PSNR and SSIM averaged over its frames,
    tOF and warping error of :mod:`superres.metrics.temporal`; the keys; problems)."""
    from superres.io import list_images, read_rgb8
    from superres.metrics.temporal import temporal_scores

    records: list[dict] = []
    problems: list[str] = []
    clips = [sub for sub in sorted(Path(gt_dir).iterdir()) if sub.is_dir() and list_images(sub)]
    for clip in clips:
        try:
            if not (Path(sr_dir) / clip.name).is_dir():
                raise SuperresError(f"{Path(sr_dir) / clip.name}: no such clip folder (the ground truth has {clip})")
            pairs, missing = pair_files(clip, Path(sr_dir) / clip.name, suffix)
            if missing:
                raise SuperresError(missing[0] + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
            gt = [read_rgb8(g) for g, _ in pairs]
            sr = [read_rgb8(s, size=(g.shape[1], g.shape[0])) for (_, s), g in zip(pairs, gt, strict=True)]
            scores = [score_images(g.astype(np.float64), o.astype(np.float64), crop_border, y_channel)
                      for g, o in zip(gt, sr, strict=True)]
            records.append({"name": clip.name, "frames": len(gt),
                            **{k: float(np.mean([x[k] for x in scores])) for k in ("psnr", "ssim")},
                            **temporal_scores(gt, sr)})
        except (SuperresError, ValueError) as e:
            problems.append(f"{clip.name}: {e}")
    return records, CLIP_KEYS, problems


def mean_record(records: list[dict], keys: list[str]) -> dict:
    """The record ``{name: "mean", count, key: mean...}`` of ``records`` (NaN for an empty list)."""
    mean: dict = {"name": "mean", "count": len(records)}
    for k in keys:
        values = [r[k] for r in records]
        mean[k] = sum(values) / len(values) if values else math.nan
    return mean
