"""Learning-rate schedules as factors of each group's base rate, driven by the iteration.

MultiStep (SRResNet, EDSR, ESRGAN: halve at milestones) and CosineAnnealingRestart (EDVR,
BasicVSR, Real-ESRGAN: cosine periods with restart weights, as BasicSR's scheduler of the same
name; SGDR of Loshchilov and Hutter, ICLR 2017), each with an optional linear warm-up.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable

import torch

from superres.train.config import Constant, CosineAnnealingRestart, MultiStep


def lr_factor(schedule: MultiStep | CosineAnnealingRestart | Constant, base_lr: float,
              warmup_iters: int = 0) -> Callable[[int], float]:
    """iteration -> multiplier of ``base_lr`` (the rate used for the update at that iteration)."""
    if isinstance(schedule, MultiStep):
        milestones = sorted(schedule.milestones)

        def factor(it: int) -> float:
            return schedule.gamma ** bisect.bisect_right(milestones, it)
    elif isinstance(schedule, CosineAnnealingRestart):
        ends = [sum(schedule.periods[: i + 1]) for i in range(len(schedule.periods))]
        weights = schedule.restart_weights or [1.0] * len(schedule.periods)
        floor = schedule.eta_min / base_lr

        def factor(it: int) -> float:
            i = min(bisect.bisect_left(ends, it), len(ends) - 1)  # BasicSR: period i ends at ends[i]
            start = ends[i] - schedule.periods[i]
            t = min((it - start) / schedule.periods[i], 1.0)
            return floor + weights[i] * 0.5 * (1 - floor) * (1 + math.cos(math.pi * t))
    else:
        def factor(it: int) -> float:
            return 1.0

    if not warmup_iters:
        return factor
    return lambda it: factor(it) * min(1.0, (it + 1) / warmup_iters)


def build_scheduler(optimizer: torch.optim.Optimizer, schedule, warmup_iters: int = 0,
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    factors = [lr_factor(schedule, g["lr"], warmup_iters) for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
