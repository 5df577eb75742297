"""How much context a network needs: its measured effective receptive field.

A tile's output differs from the whole-image output near the tile's edge. We measure that
difference as a function of the distance to the edge, on real photos: run the network on a
window and on the same window with a border cut off, and take the largest difference among
output pixels at each distance from the cut. The margin is the distance beyond which the
difference stays under ``tolerance``. This replaces guesses such as Real-ESRGAN's fixed
10-pixel pad, whose seams differ from the whole image by up to 166/255 on realesrgan-x4plus.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from superres.infer.statistics import TileStatistics

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
DEFAULT_TOLERANCE = 1 / 255


class ReachWarning(UserWarning):
    """A network's output still changes at the widest distance :func:`measure_margin` measures."""


def edge_error(model: Callable[[np.ndarray], np.ndarray], image: np.ndarray, scale: int, cut: int,
               statistics: TileStatistics | None = None) -> np.ndarray:
    """Largest |tile - whole| output difference at each input distance from a tile edge.

    ``model`` maps HxWxC float arrays to their upscaled float arrays (a runner's ``forward``);
    ``image`` is an HxWxC float array; the tile is the image less ``cut`` pixels on every side.
    ``statistics``: the network's whole-image reductions, which the tile then takes from the image, as
    tiles take them from the whole image (:mod:`superres.infer.statistics`).
    """
    if statistics is not None:
        model = statistics.frozen_at(image, model)
    whole = model(image)
    h, w = image.shape[:2]
    tile = model(image[cut:h - cut, cut:w - cut])
    diff = np.abs(whole[scale * cut:scale * (h - cut), scale * cut:scale * (w - cut)] - tile).max(axis=2)
    rows = np.arange(diff.shape[0]) // scale
    cols = np.arange(diff.shape[1]) // scale
    dist = np.minimum(np.minimum(rows, rows[::-1])[:, None], np.minimum(cols, cols[::-1])[None, :])
    return np.array([diff[dist == d].max() for d in range(int(dist.max()) + 1)])


def margin_from_errors(errors: np.ndarray, tolerance: float = DEFAULT_TOLERANCE) -> int | None:
    """The smallest distance from which every error is <= tolerance (None: not reached)."""
    above = np.nonzero(errors > tolerance)[0]
    if len(above) == 0:
        return 0
    margin = int(above[-1]) + 1
    return margin if margin < len(errors) else None


def sample_images() -> list[np.ndarray]:
    from superres.io import read_image

    return [read_image(p)[0][..., :3] for p in sorted(SAMPLES.glob("*.png"))]


def measure_margin(model: Callable[[np.ndarray], np.ndarray], scale: int, in_channels: int = 3,
                   tolerance: float = DEFAULT_TOLERANCE, start: int = 128, limit: int = 512,
                   name: str = "this model", align: int = 1, statistics: TileStatistics | None = None) -> int:
    """Input pixels of context a tile needs so that its output is within ``tolerance`` of the whole image.

    Measured on the bundled real photos with windows of ``start`` pixels, doubled (up to
    ``limit``, on the photos that large) while the error has not settled inside the window: for a quarter of the
    margin beyond it, at least 4 pixels (with 4 alone, realesrgan-x4plus-anime settled at 41 pixels in 128-pixel
    windows, and its tiles differed by 3/255; 256-pixel windows measure 59, and 1/255). A network whose output still
    changes at the widest distance measured gets that distance, with a warning naming it as ``name``.
    ``align``: the cuts fall on multiples of it, as tiles start (see :func:`superres.ops.tiling.tile_starts`).
    ``statistics``: the network's whole-image reductions, shared between tiles (see :func:`edge_error`).
    """
    images = sample_images()
    largest = max(min(i.shape[:2]) for i in images)
    size = min(max(start, 4 * align), largest)  # room for cuts on the grid
    while True:
        errors = None
        for img in (i for i in images if min(i.shape[:2]) >= size):
            crop = img[:size, :size]
            if in_channels == 1:
                crop = crop.mean(axis=2, keepdims=True)
            e = edge_error(model, crop, scale, max(align, size // 8 - size // 8 % align), statistics)
            errors = e if errors is None else np.maximum(errors[:len(e)], e[:len(errors)])
        margin = margin_from_errors(errors, tolerance)
        if margin is not None and margin + max(4, margin // 4) < len(errors):  # settled, with room to see it
            return margin
        if size * 2 > limit or size * 2 > largest:
            warnings.warn(f"{name}: tiles get {len(errors)} pixels of context at each edge, the most superres "
                          "can measure; this model looks further, so a tiled result may differ slightly from a "
                          "whole-image one (--tile 0 runs images whole)", ReachWarning, stacklevel=2)
            return len(errors)
        size *= 2


def cached_margin(weights: dict[str, torch.Tensor], measure: Callable[[], int], cache: Path) -> int:
    """``measure()`` once per set of weights, remembered in ``cache`` (a JSON file)."""
    digest = hashlib.sha256()
    for k in sorted(weights):
        digest.update(k.encode())
        digest.update(weights[k].detach().cpu().float().numpy().tobytes())
    key = digest.hexdigest()[:16]
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        known[key] = measure()
        try:
            from superres.io import atomic_write

            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cache, json.dumps(known, indent=1).encode())
        except Exception:  # a read-only cache only costs a re-measurement next time
            pass
    return int(known[key])


def pan_clip(frames: int, size: int = 64, step: tuple[int, int] = (2, 1)) -> list[np.ndarray]:
    """A clip of ``frames`` RGB uint8 frames, ``size`` pixels square, panning over a bundled real photo by
    ``step`` (x, y) pixels a frame: real texture under camera motion, to measure temporal context on."""
    from superres.io import read_rgb8

    photo = read_rgb8(sorted(SAMPLES.glob("*.png"))[-1])
    dx, dy = step
    while frames > 1 and (size + dx * (frames - 1) > photo.shape[1] or size + dy * (frames - 1) > photo.shape[0]):
        size //= 2  # a long clip pans over a smaller window
    return [np.ascontiguousarray(photo[dy * i:dy * i + size, dx * i:dx * i + size]) for i in range(frames)]


def measure_temporal_context(stream: Callable, limit: int = 24, tolerance: int = 1, name: str = "this model",
                             size: int = 64) -> int:
    """Frames of context a segment of a video needs at each end so that a video network's output there is
    within ``tolerance`` (uint8 levels: 1 is 1/255) of its output on the whole clip.

    ``stream`` is a frame-stream upscaler (frames of (RGB uint8, pts, time base) in, the same out, as
    :mod:`superres.infer.video`'s). On a real photo panned by ``size``-pixel frames, ``4 * limit + 1`` of
    them (:func:`pan_clip`), the centre frame's output from the whole clip is compared with its output
    from the centre frame and ``c`` frames on each side; the smallest such ``c`` is found by doubling,
    then bisection. A network whose output still differs at ``limit`` gets ``limit``, with a warning
    naming it as ``name``.
    """
    from fractions import Fraction

    centre = 2 * limit
    clip = [(f, i, Fraction(1, 25)) for i, f in enumerate(pan_clip(2 * centre + 1, size))]
    whole = [out for out, _, _ in stream(iter(clip))][centre].astype(np.int16)

    def close_enough(c: int) -> bool:
        outs = [out for out, _, _ in stream(iter(clip[centre - c:centre + c + 1]))]
        return int(np.abs(outs[c].astype(np.int16) - whole).max()) <= tolerance

    if close_enough(0):
        return 0
    lo, hi = 0, 1  # lo is not enough
    while not close_enough(hi):
        if hi >= limit:
            warnings.warn(f"{name}: segments get {limit} frames of context at each end, the most superres "
                          "measures; this network looks further, so a segmented result may differ slightly from "
                          "a whole-clip one", stacklevel=2)
            return limit
        lo, hi = hi, min(2 * hi, limit)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if close_enough(mid):
            hi = mid
        else:
            lo = mid
    return hi
