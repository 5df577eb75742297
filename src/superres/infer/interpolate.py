"""Frame interpolation over a stream: ``factor - 1`` new frames between each pair of source frames.

Methods: ``rife``, a network whose purpose is ``interpolation`` (RIFE, Huang et al., "Real-Time
Intermediate Flow Estimation for Video Frame Interpolation", ECCV 2022; ``superres fetch rife-v4.0``),
run through :class:`~superres.runner.Runner`; ``blend``, the two neighbours mixed by the timestep;
``repeat``, the earlier neighbour again (what a rate conversion without interpolation shows). A network
with a timestep input (7 channels: both frames and a plane of t) makes each frame at t = k/factor
directly; a midpoint-only network (6 channels: RIFE 3.x) makes them by halving recursively, as the
official RIFE inference does, so its factor must be a power of two.

Timestamps are exact: the new frame k of the pair (a, b) has pts ``a + (b - a) * k / factor`` for
constant and variable frame rates alike, in an output time base fine enough to hold it (by default
the input's divided by ``factor``; :func:`exact_time_base` finds the coarsest one for known steps).
Across a scene cut nothing is blended: the new frames repeat the frame before the cut.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from superres.errors import SuperresError
from superres.ops.layout import from_float, to_float
from superres.runtime import RunOptions

if TYPE_CHECKING:
    from superres.infer.video import Frame
    from superres.zoo import ModelDescriptor

METHODS = ("rife", "blend", "repeat")
DEFAULT_INTERPOLATION_MODEL = "rife-v4.0"


class InterpolationError(SuperresError, ValueError):
    """Interpolation that cannot be done as asked (a lower target rate, timestamps that go back)."""


def interpolation_factor(source_rate: Fraction | float | str, target_rate: Fraction | float | str) -> int:
    """The factor that takes a stream at ``source_rate`` frames/s to ``target_rate``: a whole number >= 1.

    A lower target rate is refused (interpolation only adds frames), and so is one that is not a whole
    multiple of the source's (24 -> 60 would need frames at uneven timesteps), each with one line.
    """
    source, target = Fraction(source_rate), Fraction(target_rate)
    if source <= 0 or target <= 0:
        raise InterpolationError(f"frame rates must be positive, got {float(source):g} and {float(target):g} fps")
    if target < source:
        raise InterpolationError(f"target rate {float(target):g} fps is lower than the source's {float(source):g} "
                                 "fps: interpolation only adds frames")
    ratio = target / source
    if ratio.denominator != 1:
        raise InterpolationError(f"target rate {float(target):g} fps is not a whole multiple of the source's "
                                 f"{float(source):g} fps (x{float(ratio):.4g}); choose x{math.floor(ratio)} or "
                                 f"x{math.ceil(ratio)}")
    return ratio.numerator


def exact_time_base(time_base: Fraction, factor: int, steps: Iterable[int] = ()) -> Fraction:
    """The coarsest time base ``time_base / m`` in which every new frame between frames ``step`` ticks apart
    falls on a whole tick: ``m = factor / gcd(factor, gcd(steps))``. Without steps (variable frame rate,
    steps unknown): ``time_base / factor``, exact for any step. A constant rate whose step ``factor``
    divides keeps its time base (25 fps in 1/12800: step 512, x2 -> 1/12800)."""
    g = 0
    for step in steps:
        g = math.gcd(g, int(step))
    return Fraction(time_base) / (factor // math.gcd(factor, g) if g else factor)


class FrameInterpolator:
    """Makes the frames between two frames: ``between(a, b, times)`` -> one uint8 frame per t in ``times``.

    ``method``: ``rife`` (``model``: a name, a checkpoint path or a loaded descriptor whose purpose is
    ``interpolation``; default :data:`DEFAULT_INTERPOLATION_MODEL`), ``blend`` or ``repeat``.
    """

    def __init__(self, method: str = "rife", model: str | os.PathLike | ModelDescriptor | None = None,
                 options: RunOptions | None = None):
        if method not in METHODS:
            raise InterpolationError(f"interpolation method must be one of {', '.join(METHODS)}, got {method!r}")
        self.method, self.runner = method, None
        if method == "rife":
            from superres.runner import Runner
            from superres.zoo import load_model

            desc = model if model is not None and not isinstance(model, str | os.PathLike) else \
                load_model(model or DEFAULT_INTERPOLATION_MODEL)
            if desc.purpose != "interpolation":
                raise InterpolationError(f"{model}: a {desc.arch} is a {desc.purpose} network, not a frame "
                                         "interpolation network")
            self.runner = Runner(desc, options)
        elif model is not None:
            raise InterpolationError(f"interpolation method {method!r} takes no model")

    @property
    def any_timestep(self) -> bool:
        """Whether the method makes a frame at any t (else midpoints only: factors must be powers of two)."""
        return self.runner is None or self.runner.desc.in_channels == 7

    def check_factor(self, factor: int) -> None:
        if not isinstance(factor, int) or factor < 1:
            raise InterpolationError(f"the interpolation factor must be a whole number >= 1, got {factor!r}")
        if not self.any_timestep and factor & (factor - 1):
            raise InterpolationError(f"{self.runner.desc.name or self.runner.desc.arch} makes midpoints only: "
                                     f"the factor must be a power of two, got {factor}")

    def between(self, a: np.ndarray, b: np.ndarray, times: Sequence[Fraction]) -> list[np.ndarray]:
        """uint8 RGB frames at each t of ``times`` (0 < t < 1) between ``a`` (t = 0) and ``b`` (t = 1)."""
        if self.method == "repeat":
            return [a] * len(times)
        fa, fb = to_float(a), to_float(b)
        if self.method == "blend":
            return [from_float(fa * np.float32(1 - t) + fb * np.float32(t), np.uint8) for t in times]
        if self.any_timestep:
            plane = np.empty((*a.shape[:2], 1), np.float32)
            out = []
            for t in times:
                plane.fill(float(t))
                out.append(from_float(self.runner.forward(np.concatenate((fa, fb, plane), -1)), np.uint8))
            return out
        made = self._midpoints(fa, fb, Fraction(0), Fraction(1), {t: None for t in times})
        return [from_float(made[t], np.uint8) for t in times]

    def _midpoints(self, fa: np.ndarray, fb: np.ndarray, ta: Fraction, tb: Fraction, wanted: dict) -> dict:
        """The midpoint of (ta, tb) and, recursively, those of both halves, until every wanted t is made;
        frames made on the way are the next level's inputs in float, not rounded."""
        middle = (ta + tb) / 2
        if not any(ta < t < tb for t in wanted):
            return wanted
        fm = self.runner.forward(np.concatenate((fa, fb), -1))
        if middle in wanted:
            wanted[middle] = fm
        self._midpoints(fa, fm, ta, middle, wanted)
        return self._midpoints(fm, fb, middle, tb, wanted)


def interpolate_frames(frames: Iterable[Frame], factor: int = 2, *, method: str = "rife",
                       model: str | os.PathLike | ModelDescriptor | None = None, options: RunOptions | None = None,
                       cuts: Collection[int] = (), is_cut: Callable[[np.ndarray, np.ndarray], bool] | None = None,
                       time_base: Fraction | None = None, end_pts: int | None = None,
                       interpolator: FrameInterpolator | None = None) -> Iterator[Frame]:
    """A stream of ``(RGB uint8 HxWx3, pts, time base)`` frames with ``factor - 1`` new frames between each
    pair of neighbours: source frame i, then the frames at t = 1/factor .. (factor-1)/factor towards i + 1.

    - Scene cuts: ``cuts`` holds the indices of source frames that start a new shot, and/or ``is_cut(a, b)``
      says whether a shot ends between frames a and b; there the new frames repeat the frame before the
      cut (no blend of two shots).
    - Timestamps, exact: source frame pts ``p`` becomes ``p * tb / out``; new frame k between pts ``p`` and
      ``q`` is ``(p + (q - p) * k / factor) * tb / out``, in the output time base ``out`` (``time_base``;
      default: the input's divided by ``factor``, exact for any pts: see :func:`exact_time_base` for a
      coarser one), a new frame that falls between ticks of a given ``time_base`` is refused. Frames
      without pts (image folders) give new frames without pts (the writer numbers them at the new rate).
    - ``end_pts`` (the input's time base): where the stream ends, the last frame's pts plus its duration;
      the last frame is then followed by ``factor - 1`` copies of itself up to there, so that the output
      lasts as long as the input (sound stays in sync). Without it the output ends on the last source
      frame: ``(n - 1) * factor + 1`` frames from ``n``.

    ``method``, ``model``, ``options``: as :class:`FrameInterpolator` (or pass one built already as
    ``interpolator``). Frames are consumed one at a time: memory does not grow with the stream.
    """
    tool = interpolator or FrameInterpolator(method, model, options)
    tool.check_factor(factor)
    times = [Fraction(k, factor) for k in range(1, factor)]
    cut_set = frozenset(cuts)
    previous: Frame | None = None
    out_base: Fraction | None = None
    index = -1
    for index, frame in enumerate(frames):
        rgb, pts, tb = frame
        if out_base is None:
            out_base = Fraction(time_base) if time_base is not None else Fraction(tb) / factor
        if previous is None:
            yield rgb, _ticks(pts, tb, out_base), out_base
            previous = frame
            continue
        a, pa, ta = previous
        if ta != tb:
            raise InterpolationError(f"frame {index} has time base {tb}, the stream's is {ta}")
        if pts is not None and pa is not None and pts <= pa:
            raise InterpolationError(f"frame {index}: pts {pts} does not follow the previous frame's {pa}")
        cut = index in cut_set or (is_cut is not None and is_cut(a, rgb))
        made = [a] * len(times) if cut else tool.between(a, rgb, times)
        for t, new in zip(times, made, strict=True):
            yield new, None if pa is None or pts is None else _ticks(pa + (pts - pa) * t, tb, out_base), out_base
        yield rgb, _ticks(pts, tb, out_base), out_base
        previous = frame
    if previous is not None and end_pts is not None and previous[1] is not None:
        a, pa, ta = previous
        if end_pts <= pa:
            raise InterpolationError(f"end_pts {end_pts} is not after the last frame's pts {pa}")
        for t in times:
            yield a, _ticks(pa + (end_pts - pa) * t, ta, out_base), out_base


def _ticks(pts: Fraction | int | None, time_base: Fraction, out_base: Fraction) -> int | None:
    """``pts`` (in ``time_base``) as a whole number of ``out_base`` ticks, or an error if it is not one."""
    if pts is None:
        return None
    ticks = Fraction(pts) * Fraction(time_base) / out_base
    if ticks.denominator != 1:
        raise InterpolationError(f"pts {float(pts):g} x {time_base} falls between ticks of the output time base "
                                 f"{out_base}; give a finer time_base (default: the input's / factor)")
    return ticks.numerator
