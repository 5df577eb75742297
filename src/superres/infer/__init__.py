"""Inference: tiled image upscaling on the CPU or a GPU (video comes with the video issue)."""

from superres.infer.image import Upscaler, upscale

__all__ = ["Upscaler", "upscale"]
