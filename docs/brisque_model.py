"""Recompute ``src/superres/metrics/brisque_model.npz`` from the PyPI package ``brisque`` (Apache-2.0).

Reads its ``models/svm.txt`` (LIBSVM) and ``models/normalize.pickle`` (plain data, read without
running code) from the installed package's files, without importing it.

    python docs/brisque_model.py
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from superres.metrics.brisque import read_brisque_files

OUT = Path(__file__).resolve().parents[1] / "src" / "superres" / "metrics" / "brisque_model.npz"


def reference_files() -> tuple[Path, Path]:
    spec = importlib.util.find_spec("brisque")
    if spec is None:
        raise SystemExit("pip install brisque")
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    return models / "svm.txt", models / "normalize.pickle"


if __name__ == "__main__":
    model = read_brisque_files(*reference_files())
    np.savez_compressed(OUT, **model)
    print(f"wrote {OUT}: {len(model['coef'])} support vectors, {OUT.stat().st_size} bytes")
