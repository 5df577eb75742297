"""Benchmark evaluation the papers' way: a network on test pairs, scored by PSNR/SSIM.

Protocol (SRCNN's, FSRCNN's and EDSR's test scripts, BasicSR): LR from the mod-cropped HR by
MATLAB bicubic (see :mod:`superres.data.paired`), the whole LR image through the network in
float32, the output clipped and rounded to 8 bits, and scores on the Y channel with ``scale``
border pixels removed. Networks that see only Y (SRCNN, FSRCNN, ESPCN) get the Y of the LR image
and are scored on their Y output directly, with Cb/Cr upscaled by MATLAB bicubic when an RGB
result is asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from superres.metrics.psnr_ssim import psnr, ssim
from superres.ops import imresize, rgb2ycbcr, ycbcr2rgb

Forward = Callable[[torch.Tensor], torch.Tensor]


def _run(forward: Forward, x: np.ndarray, device: torch.device) -> np.ndarray:
    """HxWxC float [0, 1] -> the network's HxWxC float output."""
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(device)
    with torch.no_grad():
        out = forward(t)
    return out[0].float().cpu().numpy().transpose(1, 2, 0)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def bicubic_forward(scale: int) -> Forward:
    """The bicubic baseline as a network: MATLAB imresize on the 8-bit image (rounded like MATLAB)."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        lr8 = (x[0].permute(1, 2, 0) * 255).round().byte().cpu().numpy()
        return torch.from_numpy(imresize(lr8, scale)).permute(2, 0, 1)[None].float() / 255
    return forward


def super_resolve(forward: Forward, lr: np.ndarray, in_channels: int, scale: int,
                  device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 RGB LR -> (uint8 RGB SR, uint8 Y SR for Y-only networks else None)."""
    device = torch.device(device)
    if in_channels == 3:
        return _to_uint8(_run(forward, lr.astype(np.float32) / 255.0, device)), None
    ycc = rgb2ycbcr(lr.astype(np.float64) / 255.0)
    y = _run(forward, ycc[..., :1].astype(np.float32), device).astype(np.float64)
    cbcr = imresize(ycc[..., 1:], scale)
    rgb = ycbcr2rgb(np.concatenate([np.clip(y, 0, 1), cbcr], axis=2))
    return _to_uint8(rgb), _to_uint8(y)


def evaluate(forward: Forward, pairs: Sequence, scale: int, in_channels: int = 3, y_channel: bool = True,
             crop_border: int | None = None, device: torch.device | str = "cpu",
             keep_outputs: bool = False) -> list[dict]:
    """One record per pair: name, psnr, ssim (and the uint8 RGB ``output`` if asked)."""
    crop = scale if crop_border is None else crop_border
    records = []
    for pair in pairs:
        sr, sr_y = super_resolve(forward, pair.lr, in_channels, scale, device)
        if sr.shape != pair.hr.shape:
            raise ValueError(f"{pair.name}: the network made {sr.shape[1]}x{sr.shape[0]} from a "
                             f"{pair.lr.shape[1]}x{pair.lr.shape[0]} input, expected x{scale}")
        if y_channel and sr_y is not None:
            gt = rgb2ycbcr(pair.hr.astype(np.float64) / 255.0, y_only=True) * 255.0
            a, b = sr_y.astype(np.float64), gt
        else:
            a, b = sr, pair.hr
        record = {"name": pair.name, "psnr": psnr(a, b, crop, y_channel), "ssim": ssim(a, b, crop, y_channel)}
        if keep_outputs:
            record["output"] = sr
        records.append(record)
    return records


def frame_runner(forward: Forward, in_channels: int, scale: int, device: torch.device | str = "cpu") -> Callable:
    """An image network as a clip runner for :func:`evaluate_clips`: each frame on its own."""
    def run(frames):
        for lr, pts, tb in frames:
            yield super_resolve(forward, lr, in_channels, scale, device)[0], pts, tb
    return run


def evaluate_clips(runner: Callable, clips: Sequence, y_channel: bool = True, crop_border: int = 0,
                   keep_outputs: bool = False) -> list[dict]:
    """One record per clip (name, LR frames, HR frames): PSNR and SSIM averaged over all its frames.

    ``runner`` maps an iterator of (uint8 frame, pts, time base) to the upscaled frames, in order:
    a :func:`superres.infer.video.video_runner` (or an image upscaler applied frame by frame).
    Video papers score every frame with no border crop (BasicVSR, EDVR on Vid4/REDS4: crop 0).
    """
    records = []
    for name, hr, lr in clips:
        outputs = [sr for sr, _, _ in runner(iter((f, i, None) for i, f in enumerate(lr)))]
        if len(outputs) != len(hr) or outputs[0].shape != hr[0].shape:
            raise ValueError(f"{name}: the network made {len(outputs)} frames of {outputs[0].shape[1]}x"
                             f"{outputs[0].shape[0]}, expected {len(hr)} of {hr[0].shape[1]}x{hr[0].shape[0]}")
        scores = [(psnr(a, b, crop_border, y_channel), ssim(a, b, crop_border, y_channel))
                  for a, b in zip(outputs, hr, strict=True)]
        record = {"name": name, "frames": len(hr), "psnr": float(np.mean([p for p, _ in scores])),
                  "ssim": float(np.mean([q for _, q in scores]))}
        if keep_outputs:
            record["output"] = outputs[len(outputs) // 2]
        records.append(record)
    return records


def mean_scores(records: Sequence[dict]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in records])) for k in ("psnr", "ssim")}
