"""A loaded model and everything a runner needs to know about it (the shape of spandrel's descriptors)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from superres.archs.spec import ModelFacts, VideoRun


@dataclass
class ModelDescriptor:
    """A network (or a resampling function such as MATLAB bicubic) with its architecture's facts.

    Calling it runs it on an array the way :class:`superres.runner.Runner` does:
    ``desc(image)`` with an HxWxC (video networks: TxHxWxC) uint8, uint16 or float array in [0, 1]
    returns the same dtype, with padding, precision and clamping handled.
    """

    module: nn.Module | None
    arch: str
    kwargs: dict
    facts: ModelFacts
    source: str | None = None
    name: str | None = None  # the registered name of a named pretrained model (``superres models``)
    metadata: dict = field(default_factory=dict)
    # Whose code runs the network: ``superres`` (superres.archs), ``spandrel`` or ``spandrel_extra_arches``
    # (:mod:`superres.zoo.spandrel`), and that code's licence (the weights may have another).
    code: str = "superres"
    licence: str = "Apache-2.0"
    network: str | None = None  # the class that runs it, where its name is not ``arch`` (spandrel's RealPLKSR)
    tiling: str = "supported"  # spandrel's advice: "discouraged" for networks that look at the whole image
    # Models with no network (bicubic): the function on HxW[xC] arrays of any dtype, at ``scale``.
    resample: Callable[[np.ndarray], np.ndarray] | None = None
    _runner: object = field(default=None, init=False, repr=False, compare=False)

    @property
    def purpose(self) -> str:
        return self.facts.purpose

    @property
    def scale(self) -> int:
        return self.facts.scale

    @property
    def in_channels(self) -> int:
        return self.facts.in_channels

    @property
    def out_channels(self) -> int:
        return self.facts.out_channels

    @property
    def size_multiple(self) -> int:
        return self.facts.size_multiple

    @property
    def min_size(self) -> int:
        return self.facts.min_size

    @property
    def precisions(self) -> tuple[str, ...]:
        return self.facts.precisions

    @property
    def video(self) -> VideoRun | None:
        return self.facts.video

    @property
    def origin(self) -> str:
        """Which architecture, whose code runs it and under which licence, e.g. ``PLKSR (RealPLKSR), spandrel's
        code (MIT)``: what ``superres models FILE`` and the load messages say."""
        name = f"{self.arch} ({self.network})" if self.network and self.network != self.arch else self.arch
        whose = "superres's" if self.code == "superres" else f"{self.code}'s"
        return f"{name}, {whose} code ({self.licence})"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.purpose == "inpainting":
            raise ValueError(f"{self.arch} is an inpainting network: it fills the masked part of an image, and "
                             "superres runs networks on images alone (no mask)")
        if self._runner is None:
            from superres.runner import Runner

            self._runner = Runner(self)
        return self._runner(image)
