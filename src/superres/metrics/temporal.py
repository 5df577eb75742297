"""Temporal consistency of a video against its ground truth: tOF and the warping error.

Both take two clips of uint8 RGB frames (HxWx3, same size, in display order) and use OpenCV's
Farneback optical flow with TecoGAN's parameters (pyramid scale 0.5, 3 levels, window 15, 3
iterations, poly_n 5, poly_sigma 1.2) on the frames' gray values (``cv2.COLOR_RGB2GRAY``).

- **tOF** (TecoGAN: Chu, Xie, Mayer, Leal-Taixé and Thuerey, "Learning temporal coherence via
  self-supervision for GAN-based video generation", ACM ToG 2020), as its official ``metrics.py``
  computes it: the first and last ``cut`` frames are left out (``cutfr = 2``); for each remaining pair
  of neighbours, the flow from the previous frame to the next of the output and of the ground truth,
  both centre-cropped to multiples of 32 with at least 16 pixels removed per side pair (its
  ``crop_8x8``), and the mean over pixels of the length of their difference; the clip's tOF is the mean
  over pairs (accumulated in float32, as there). Lower is better; 0 for an output whose motion is the
  ground truth's.
- **Warping error** (after Lai et al., "Learning Blind Video Temporal Consistency", ECCV 2018, with the
  ground truth's flow): for t = 1..n-1, F is the flow from ground-truth frame t to t-1 (G_t(x) ~
  G_{t-1}(x + F(x))) and B the flow from t-1 to t; pixel x is non-occluded when the forward-backward
  check of Sundaram et al. (ECCV 2010) passes, |F(x) + B(x + F(x))|^2 < 0.01 (|F(x)|^2 + |B(x + F(x))|^2)
  + 0.5, and x + F(x) is inside the frame. E_t is the mean over non-occluded pixels and the three
  channels of (O_t(x) - O_{t-1}(x + F(x)))^2, samples in [0, 1], O_{t-1} sampled bilinearly; the clip's
  error is the mean of E_t over t. Lower is better; the ground truth itself scores its own flow's
  residual, not 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

# pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags: TecoGAN's metrics.py
FARNEBACK = (0.5, 3, 15, 3, 5, 1.2, 0)
TOF_CUT = 2  # TecoGAN's cutfr: frames left out at each end


def gray(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB -> uint8 gray, as TecoGAN (OpenCV's BT.601 weights)."""
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def flow(prev_gray: np.ndarray, next_gray: np.ndarray) -> np.ndarray:
    """Farneback flow (HxWx2 float32, x then y) with prev(p) ~ next(p + flow(p))."""
    return cv2.calcOpticalFlowFarneback(prev_gray, next_gray, None, *FARNEBACK)


def crop_8x8(image: np.ndarray) -> np.ndarray:
    """TecoGAN's centre crop: each side to a multiple of 32 that removes at least 16 pixels."""
    h, w = image.shape[:2]
    ch, cw = h // 32 * 32, w // 32 * 32
    while ch > h - 16:
        ch -= 32
    while cw > w - 16:
        cw -= 32
    y, x = (h - ch) // 2, (w - cw) // 2
    return image[y:y + ch, x:x + cw]


class GroundTruthFlows:
    """A ground-truth clip's flows between neighbours, each computed once (on first use) and kept: several
    outputs scored against one clip share them (a 720x576 flow takes about 0.2 s on one core)."""

    def __init__(self, gt: Sequence[np.ndarray]):
        self.gt = gt
        self._gray: dict[int, np.ndarray] = {}
        self._flows: dict[tuple[int, int], np.ndarray] = {}

    def gray(self, i: int) -> np.ndarray:
        if i not in self._gray:
            self._gray[i] = gray(self.gt[i])
        return self._gray[i]

    def flow(self, i: int, j: int) -> np.ndarray:
        """The flow from frame ``i`` to frame ``j``: frame_i(p) ~ frame_j(p + flow(p))."""
        if (i, j) not in self._flows:
            self._flows[i, j] = flow(self.gray(i), self.gray(j))
        return self._flows[i, j]


def _flows(gt: Sequence[np.ndarray], flows: GroundTruthFlows | None) -> GroundTruthFlows:
    if flows is not None and flows.gt is not gt:
        raise ValueError("flows= belongs to another ground-truth clip")
    return flows or GroundTruthFlows(gt)


def _check(gt: Sequence[np.ndarray], out: Sequence[np.ndarray], least: int, what: str) -> None:
    if len(gt) != len(out):
        raise ValueError(f"{what}: the output has {len(out)} frames, the ground truth {len(gt)}")
    if len(gt) < least:
        raise ValueError(f"{what} needs at least {least} frames, got {len(gt)}")
    for i, (g, o) in enumerate(zip(gt, out, strict=True)):
        if g.shape != o.shape or g.dtype != np.uint8 or o.dtype != np.uint8 or g.ndim != 3 or g.shape[2] != 3:
            raise ValueError(f"{what}: frame {i}: uint8 RGB frames of one size are needed, got {g.shape} {g.dtype} "
                             f"and {o.shape} {o.dtype}")


def tof_per_pair(gt: Sequence[np.ndarray], out: Sequence[np.ndarray], cut: int = TOF_CUT, *,
                 flows: GroundTruthFlows | None = None) -> list[float]:
    """tOF of each pair of neighbours (frames ``cut``..n-1-``cut``), as TecoGAN's metrics.py lists them.
    ``flows``: the ground truth's, to share between outputs."""
    _check(gt, out, 2 * cut + 2, "tOF")
    flows = _flows(gt, flows)
    values = []
    prev = None
    for i in range(cut, len(gt) - cut):
        o = gray(out[i])
        if prev is not None:
            diff = np.absolute(crop_8x8(flows.flow(i - 1, i)) - crop_8x8(flow(prev, o)))
            values.append(float(np.sqrt(np.sum(diff * diff, axis=-1)).mean()))
        prev = o
    return values


def tof(gt: Sequence[np.ndarray], out: Sequence[np.ndarray], cut: int = TOF_CUT, *,
        flows: GroundTruthFlows | None = None) -> float:
    """The clip's tOF (TecoGAN): the mean of :func:`tof_per_pair`, summed in float32 as its metrics.py."""
    values = np.float32(tof_per_pair(gt, out, cut, flows=flows))
    return float(values.sum() / values.shape[0])


def _sample(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def warping_error_per_frame(gt: Sequence[np.ndarray], out: Sequence[np.ndarray], *,
                            flows: GroundTruthFlows | None = None) -> list[float]:
    """E_t for t = 1..n-1 (see the module's docstring): the output's frame t against its frame t-1 warped
    by the ground truth's flow, over the non-occluded pixels (frames with none are left out)."""
    _check(gt, out, 2, "warping error")
    flows = _flows(gt, flows)
    h, w = gt[0].shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    values = []
    for t in range(1, len(gt)):
        back, fwd = flows.flow(t, t - 1), flows.flow(t - 1, t)
        map_x, map_y = grid_x + back[..., 0], grid_y + back[..., 1]
        fwd_there = _sample(fwd, map_x, map_y)
        loop = back + fwd_there
        visible = (np.sum(loop * loop, -1) < 0.01 * (np.sum(back * back, -1) + np.sum(fwd_there * fwd_there, -1))
                   + 0.5) & (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
        warped = _sample(out[t - 1].astype(np.float32) / 255, map_x, map_y)
        sq = np.mean((out[t].astype(np.float32) / 255 - warped) ** 2, axis=-1)
        if visible.any():  # else (every pixel occluded) the frame says nothing and is left out
            values.append(float(sq[visible].mean()))
    return values


def warping_error(gt: Sequence[np.ndarray], out: Sequence[np.ndarray], *,
                  flows: GroundTruthFlows | None = None) -> float:
    """The clip's warping error: the mean of :func:`warping_error_per_frame` (NaN if no pixel was visible)."""
    values = warping_error_per_frame(gt, out, flows=flows)
    return float(np.mean(values)) if values else float("nan")


def temporal_scores(gt: Sequence[np.ndarray], out: Sequence[np.ndarray], cut: int = TOF_CUT, *,
                    flows: GroundTruthFlows | None = None) -> dict[str, float]:
    """``{tof, warp}`` of an output clip against its ground truth (uint8 RGB frames), sharing the ground
    truth's flows between the two (and with other outputs, given ``flows``)."""
    flows = _flows(gt, flows)
    return {"tof": tof(gt, out, cut, flows=flows), "warp": warping_error(gt, out, flows=flows)}
