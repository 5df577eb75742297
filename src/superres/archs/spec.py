"""What an architecture says about itself: how to recognise its weights and how it runs.

Each architecture file ends with an ``ARCHS`` tuple of :class:`ArchSpec` (one per network class):
detection from a state dict's keys and shapes, the renames that bring other official layouts to
its own, and the facts a runner needs (purpose, scale, channels, size requirements, precisions,
and for video networks how they run on a stream). Nothing outside ``archs/`` and ``zoo/`` names
an architecture; they read these facts instead (the shape of spandrel's architecture folders).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

StateDict = dict[str, torch.Tensor]

PURPOSES = ("sr", "video", "face", "discriminator", "optical flow", "interpolation", "restoration", "inpainting")
ALL_PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class VideoRun:
    """How a video network runs on a stream of frames.

    ``window``: ``frames`` frames in (the neighbours of the frame being made), the centre frame out.
    ``clip``: a clip of frames in, as many out; ``frames`` frames per clip with ``overlap`` frames of
    context on each side (recurrent networks), or exactly ``frames`` frames if ``fixed``.
    """

    mode: str  # "window" or "clip"
    frames: int
    overlap: int = 0
    fixed: bool = False
    single_frame: bool = True  # can be fed copies of one frame (the single-frame ablation)


@dataclass(frozen=True)
class ModelFacts:
    """What a runner needs to know about a network built with given arguments."""

    purpose: str  # one of PURPOSES
    scale: int
    in_channels: int
    out_channels: int
    size_multiple: int = 1  # input height and width must be multiples of this (the runner pads)
    min_size: int = 1  # smallest input side the network accepts (the runner pads up to it)
    precisions: tuple[str, ...] = ALL_PRECISIONS  # those it computes correctly in
    video: VideoRun | None = None  # how it runs on a stream (video networks only)


@dataclass(frozen=True)
class ArchSpec:
    """An architecture: its class, how to recognise and read its weights, and its facts."""

    cls: type[nn.Module]
    detect: Callable[[StateDict], dict | None]  # constructor arguments if the keys are this layout, else None
    facts: Callable[[dict], ModelFacts]  # from the full constructor arguments
    # Other official layouts: (renamed state dict, arguments the layout implies), or None if not one.
    convert: Callable[[StateDict], tuple[StateDict, dict] | None] | None = None
    # A constructor argument the weights do not store (SRCNN's and FSRCNN's scale): load_model(scale=).
    unstored_scale: str | None = None

    @property
    def name(self) -> str:
        return self.cls.__name__


def count_indices(state: StateDict, pattern: str) -> int:
    """How many distinct values the first group of ``pattern`` takes over the keys."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.fullmatch(k))})


def max_index(state: StateDict, pattern: str) -> int:
    rx = re.compile(pattern)
    return max(int(m.group(1)) for k in state if (m := rx.fullmatch(k)))
