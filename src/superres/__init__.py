"""superres: image and video super-resolution, the classic models with exact metrics.

Importing the package is cheap: submodules (``superres.io``, ``superres.ops``,
``superres.metrics``, ``superres.zoo``) and the model API (``create_model``, ``load_model``,
``save_model``, ``list_models``, ``interpolate``), ``upscale``, ``Upscaler``, ``RunOptions``,
``FaceEnhancer``, ``upscale_files`` and ``upscale_video`` are imported when first used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {"io", "ops", "metrics", "errors", "archs", "zoo", "infer", "faces"}
_ZOO_API = {"create_model", "load_model", "save_model", "list_models", "interpolate"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"superres.{name}")
    if name in _ZOO_API:
        return getattr(importlib.import_module("superres.zoo"), name)
    if name in ("upscale", "Upscaler", "Runner", "RunOptions"):
        return getattr(importlib.import_module("superres.infer"), name)
    if name == "FaceEnhancer":
        return importlib.import_module("superres.infer.faces").FaceEnhancer
    if name == "upscale_files":
        return importlib.import_module("superres.infer.executors").upscale_files
    if name == "upscale_video":
        return importlib.import_module("superres.infer.video").upscale_video
    raise AttributeError(f"module 'superres' has no attribute {name!r}")


__all__ = ["FaceEnhancer", "RunOptions", "Runner", "Upscaler", "__version__", "upscale", "upscale_files",
           "upscale_video", *sorted(_SUBMODULES), *sorted(_ZOO_API)]
