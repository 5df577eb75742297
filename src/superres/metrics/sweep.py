"""The perception-distortion trade-off of network interpolation (ESRGAN, Wang et al. 2018, Sec. 3.4
and Fig. 10; Blau and Michaeli, "The Perception-Distortion Tradeoff", CVPR 2018).

For each alpha, the weights (1 - alpha) x A + alpha x B (A: a PSNR-oriented model, B: its GAN
fine-tune) are scored on a test set the papers' way (:func:`superres.metrics.evaluate.evaluate`:
MATLAB-bicubic LR, Y-PSNR/SSIM with crop = scale) and by the blind metrics NIQE and BRISQUE on
the same outputs (same border crop). The PIRM challenge's perceptual index, PI = ((10 - Ma) +
NIQE) / 2, needs Ma et al.'s learned score, whose model is not obtainable offline (it ships only
as a MATLAB release): NIQE stands in for it here, lower is better as for PI.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from superres.errors import SuperresError
from superres.metrics.brisque import brisque
from superres.metrics.evaluate import EVAL_OPTIONS, evaluate
from superres.metrics.niqe_model import niqe
from superres.runtime import RunOptions

SWEEP_KEYS = ["alpha", "psnr", "ssim", "niqe", "brisque"]


def interpolation_sweep(model_a, model_b, hr_dir: str | os.PathLike, alphas: Sequence[float], *,
                        scale: int | None = None, lr_dir: str | os.PathLike | None = None,
                        degradation: str = "bicubic", y_channel: bool = True, crop_border: int | None = None,
                        options: RunOptions = EVAL_OPTIONS, progress: Callable[[dict], None] | None = None,
                        ) -> list[dict]:
    """One row per alpha: ``{name, alpha, psnr, ssim, niqe, brisque}``, each the mean over the images."""
    import torch

    from superres.data import eval_pairs
    from superres.runner import Runner
    from superres.zoo import interpolate, load_model

    a = load_model(model_a) if isinstance(model_a, str | os.PathLike) else model_a
    b = load_model(model_b) if isinstance(model_b, str | os.PathLike) else model_b
    scale = scale or a.scale
    if a.scale != scale or a.purpose != "sr":
        raise ValueError(f"{model_a}: not a x{scale} image SR model")
    pairs = eval_pairs(hr_dir, scale, lr_dir, degradation)
    if not pairs:
        raise SuperresError(f"{hr_dir}: no images")
    crop = scale if crop_border is None else crop_border
    rows = []
    with torch.inference_mode():
        for alpha in alphas:
            records = evaluate(Runner(interpolate(a, b, alpha), options), pairs, y_channel, crop, keep_outputs=True)
            for r in records:
                out = r.pop("output").astype(np.float64)
                r["niqe"], r["brisque"] = niqe(out, crop), brisque(out, crop)
            row = {"name": f"alpha={alpha:g}", "alpha": float(alpha)}
            row |= {k: float(np.mean([r[k] for r in records])) for k in SWEEP_KEYS[1:]}
            rows.append(row)
            if progress:
                progress(row)
    return rows


def plot_sweep(rows: Sequence[dict], path: str | os.PathLike, title: str = "") -> None:
    """PSNR against NIQE, one point per alpha (labelled), as ESRGAN's Fig. 10; written as PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SuperresError("the plot needs matplotlib: pip install matplotlib (the table was written)") from None
    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=120)
    x, y = [r["niqe"] for r in rows], [r["psnr"] for r in rows]
    ax.plot(x, y, "-o", color="tab:blue", markersize=4)
    for r in rows:
        ax.annotate(f"{r['alpha']:g}", (r["niqe"], r["psnr"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("NIQE (lower: more natural; stands in for PI)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title or "network interpolation: alpha = weight of the GAN model", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)
