"""Inference: one runner (:mod:`superres.runner`) and the loops around it: tiled image
upscaling (:mod:`superres.infer.image`) and video streams (:mod:`superres.infer.video`)."""

from superres.infer.image import Upscaler, upscale
from superres.runner import Runner
from superres.runtime import RunOptions

__all__ = ["RunOptions", "Runner", "Upscaler", "upscale"]
