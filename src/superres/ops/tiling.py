"""Tiled inference with feathered overlap, streamed into the output array.

A network sees only its tile, so near a tile's edge it lacks context and its output differs
from the whole-image result; the difference decays with the distance from the edge at a rate
set by the network's effective receptive field (measured in :mod:`superres.infer.context`).
Neighbouring tiles therefore overlap by ``2 * margin + ramp`` input pixels: within ``margin``
of a tile's edge its output gets no weight, then a linear ramp hands over from one tile to
the next. The weights are separable and sum to one everywhere, so no normalisation pass is
needed, and the output is finished band by band (a row of tiles at a time): memory holds one
band of float accumulators, never the whole image in float.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


def tile_starts(length: int, tile: int, overlap: int, align: int = 1, least: int = 1) -> tuple[list[int], int]:
    """(starts, size) of the fewest windows of at most ``tile`` pixels that cover ``[0, length)``
    with neighbours sharing >= ``overlap`` pixels; the windows are shrunk to the smallest equal
    size that still does, so that no compute is spent on needless overlap. ``align``: every start is a
    multiple of it (the last window then ends at or beyond ``length``: it is cut there), so that a network
    that works on a grid (attention windows, downsampling) sees each tile on the whole image's grid.
    ``least``: no window is shorter (the network's minimum size: a window padded up to it would see other
    pixels at the image's border than the whole image does)."""
    if tile >= length:
        return [0], length
    if max(overlap + 1, least) + align - 1 > tile:
        raise ValueError(f"overlap {overlap} must be smaller than the tile {tile}"
                         + (f" less {align - 1} for alignment to {align}" if align > 1 else "")
                         + (f", and the tile at least {least}" if least > 1 else ""))
    tile -= align - 1  # room to move each start back to the grid
    count = max(2, math.ceil((length - overlap) / (tile - overlap)))
    size = min(tile, max(least, math.ceil((length + (count - 1) * overlap) / count) + 1))
    starts = [(i * (length - size)) // (count - 1) for i in range(count)]
    return sorted({a - a % align for a in starts}), size + align - 1


def axis_weights(starts: list[int], tile: int, length: int, margin: int, ramp: int, scale: int) -> list[np.ndarray]:
    """Per-tile 1-D weights (output resolution) that sum to one at every output pixel.

    A tile's raw weight is 0 within ``margin`` input pixels of an edge it shares with another
    tile, rises linearly over the next ``ramp`` pixels, and is 1 beyond (image borders are real
    borders: full weight). Dividing by the sum over tiles makes the weights a partition of unity,
    which for two neighbours overlapping by ``2 * margin + ramp`` is a plain linear hand-over.
    """
    x = (np.arange(tile * scale) + 0.5) / scale  # pixel centres, in input pixels from the tile start
    raws = []
    for i, a in enumerate(starts):
        size = min(tile, length - a)
        r = np.ones(size * scale)
        xs = x[:size * scale]
        if i > 0:
            r = np.minimum(r, np.clip((xs - margin) / max(ramp, 1e-9), 0, 1))
        if i + 1 < len(starts):
            r = np.minimum(r, np.clip((size - xs - margin) / max(ramp, 1e-9), 0, 1))
        raws.append(r)
    total = np.zeros(length * scale)
    for a, r in zip(starts, raws, strict=True):
        total[a * scale:a * scale + len(r)] += r
    if total.min() <= 0:
        raise ValueError(f"tiles of {tile} pixels overlapping by less than 2 x {margin} leave pixels uncovered")
    return [r / total[a * scale:a * scale + len(r)] for a, r in zip(starts, raws, strict=True)]


@dataclass(frozen=True)
class TilePlan:
    tile: int  # input pixels per side (0: whole image)
    margin: int  # input pixels at each shared edge given no weight
    ramp: int  # input pixels over which neighbours hand over
    align: int = 1  # tiles start on multiples of this (the network's grid: windows, downsampling)
    least: int = 1  # no tile is shorter than this (the network's minimum size)


def tile_grid(height: int, width: int, plan: TilePlan) -> tuple[tuple[list[int], int], tuple[list[int], int]]:
    """The tiles of a plan with tiles (``plan.tile`` > 0): (row starts, tile height), (column starts, tile
    width), neighbours overlapping by the margin on both sides plus the ramp."""
    overlap = 2 * plan.margin + plan.ramp
    return (tile_starts(height, plan.tile, overlap, plan.align, plan.least),
            tile_starts(width, plan.tile, overlap, plan.align, plan.least))


def tile_count(height: int, width: int, plan: TilePlan) -> int:
    """The tiles (network passes) a plan makes: 1 for a whole-image plan."""
    if plan.tile == 0:
        return 1
    (ys, _), (xs, _) = tile_grid(height, width, plan)
    return len(ys) * len(xs)


def plan_overhead(height: int, width: int, plan: TilePlan) -> float:
    """Computed input pixels / image pixels under this plan (1.0 = no overlap)."""
    if plan.tile == 0:
        return 1.0
    (ys, th), (xs, tw) = tile_grid(height, width, plan)
    return len(ys) * th * len(xs) * tw / (height * width)


def smallest_tile(overlap: int, max_overhead: float) -> int:
    """The smallest tile side whose tiles compute at most ``max_overhead`` x the pixels of one pass on
    an image of any size: neighbours overlapping by ``overlap`` pixels advance by ``tile - overlap``, so
    each axis computes up to (tile + 2) / (tile - overlap) x its length (the 2: :func:`tile_starts`
    rounds the shrunk tiles up)."""
    if not max_overhead > 1:
        raise ValueError(f"max_overhead must be over 1, got {max_overhead}")
    per_axis = math.sqrt(max_overhead)
    return math.ceil((per_axis * overlap + 2) / (per_axis - 1))


def run_tiled(image: np.ndarray, model: Callable[[np.ndarray], np.ndarray], scale: int, plan: TilePlan,
              out: np.ndarray, finish: Callable[[np.ndarray], np.ndarray],
              progress: Callable[[int, int], None] | None = None) -> None:
    """Upscale HxWxC ``image`` tile by tile into ``out`` (sH x sW x C').

    ``model`` maps an hxwxC float32 array to shxswxC'; ``finish`` turns finished float rows (which
    it may overwrite) into ``out``'s dtype. ``progress`` is called with (tiles done, tiles in all).
    """
    h, w = image.shape[:2]
    if plan.tile == 0:
        out[:] = finish(model(image))
        if progress:
            progress(1, 1)
        return
    (ys, th), (xs, tw) = tile_grid(h, w, plan)
    wy = axis_weights(ys, th, h, plan.margin, plan.ramp, scale)
    wx = axis_weights(xs, tw, w, plan.margin, plan.ramp, scale)
    channels = out.shape[2]
    acc = np.zeros((0, w * scale, channels), np.float32)
    acc_top = 0  # output row of acc[0]
    done = 0
    for i, y0 in enumerate(ys):
        y1 = min(y0 + th, h)
        bottom = y1 * scale
        if bottom - acc_top > acc.shape[0]:
            grow = np.zeros((bottom - acc_top - acc.shape[0], w * scale, channels), np.float32)
            acc = np.concatenate([acc, grow]) if acc.size else grow
        for j, x0 in enumerate(xs):
            x1 = min(x0 + tw, w)
            sr = model(image[y0:y1, x0:x1])
            sr *= wy[i].astype(np.float32)[:, None, None]  # in place: no full-size weight arrays
            sr *= wx[j].astype(np.float32)[None, :, None]
            acc[y0 * scale - acc_top:bottom - acc_top, x0 * scale:x1 * scale] += sr
            del sr
            done += 1
            if progress:
                progress(done, len(ys) * len(xs))
        final = (ys[i + 1] * scale if i + 1 < len(ys) else bottom) - acc_top
        out[acc_top:acc_top + final] = finish(acc[:final])
        acc, acc_top = acc[final:].copy(), acc_top + final


def whole_map(x: torch.Tensor, span: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``span(x)``, declared as a part of a network whose output at a pixel depends on the whole of its input
    map ``x`` (N x C x H x W, its output the same size). Outside tiles it is just that; in a tile,
    :class:`superres.infer.statistics.TileStatistics` gives the tile's part of ``span`` on the whole image's
    map (``span.whole``, where it has one, computes that in parts to save memory). Its own calls are not seen
    by the probe or the tiles."""
    if torch.overrides.has_torch_function_unary(x):  # (a TorchFunctionMode is on: the probe's or a tile's)
        return torch.overrides.handle_torch_function(whole_map, (x,), x, span)
    return span(x)


def whole_value(x: torch.Tensor, summary: Callable[[torch.Tensor], object]) -> object:
    """``summary(x)``, declared as a value a network computes from the whole of its map ``x`` (N x C x H x W):
    a pooled map, keys and values that every pixel attends to (RGT's recursive generalization). Outside tiles
    it is just that; in a tile, :class:`superres.infer.statistics.TileStatistics` gives ``summary`` of the
    whole image's map (a tensor or a tuple of tensors). Its own calls are not seen by the probe or the tiles."""
    if torch.overrides.has_torch_function_unary(x):
        return torch.overrides.handle_torch_function(whole_value, (x,), x, summary)
    return summary(x)
