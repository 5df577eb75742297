"""Shared fixtures: real images (bundled samples, ../shared/data when present) and references."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from superres.io import read_image

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "superres" / "samples"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory) -> Path:
    """Converted pretrained weights go to a fresh cache: each run tests the conversion too."""
    import os

    path = tmp_path_factory.mktemp("cache")
    os.environ["SUPERRES_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "Set5" / "HR").is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """The bundled real photographs, float32 RGB in [0, 1]."""
    return {p.stem: read_image(p)[0] for p in sorted(SAMPLES.glob("*.png"))}


@pytest.fixture(scope="session")
def basicsr():
    """BasicSR 1.4.2 (dev-only reference). It imports a torchvision module removed in 0.17."""
    import torchvision.transforms.functional as functional

    sys.modules.setdefault("torchvision.transforms.functional_tensor", functional)
    return pytest.importorskip("basicsr")
