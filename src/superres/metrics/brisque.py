"""BRISQUE: Mittal, Moorthy and Bovik, "No-Reference Image Quality Assessment in the Spatial
Domain", IEEE Transactions on Image Processing 2012. Lower is better (about 0-100 on LIVE's scale).

Computed as the Apache-2.0 PyPI packages ``brisque`` / ``image-quality`` compute it, whose support
vector regressor (the LIVE-trained epsilon-SVR with an RBF kernel, 770 support vectors, and the
feature ranges it scales by) ships here as ``brisque_model.npz`` (see ``BRISQUE_NOTICE.md``; read
from their ``svm.txt`` and ``normalize.pickle`` by :func:`read_brisque_files`, the pickle without
running any code). The 36 features: on the gray image (0.2125 R + 0.7154 G + 0.0721 B, in [0, 1])
and on its x0.5 bicubic resize (OpenCV), the MSCN coefficients (7x7 Gaussian window, sigma 7/6,
zero padding, C = 1/255) and their four neighbour products, each fitted by an asymmetric
generalized Gaussian (moment matching, the shape solved exactly rather than on the paper's grid).
"""

from __future__ import annotations

import io
import pickle
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
from scipy import special

GRAY = np.array([0.2125, 0.7154, 0.0721])  # skimage.color.rgb2gray, as the reference


@lru_cache(maxsize=1)
def brisque_model() -> dict[str, np.ndarray]:
    """The SVR (``sv``, ``coef``, ``gamma``, ``rho``) and the feature ranges (``min``, ``max``)."""
    with resources.files("superres.metrics").joinpath("brisque_model.npz").open("rb") as f:
        return dict(np.load(f))


class _PlainData(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numbers only: any class or function is refused."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refused: {module}.{name} (only plain data is read)")


def read_brisque_files(svm_txt: str | Path, normalize_pickle: str | Path) -> dict[str, np.ndarray]:
    """Parse the reference packages' LIBSVM model file and feature-range pickle into arrays."""
    header, _, body = Path(svm_txt).read_text().partition("\nSV\n")
    fields = dict(line.split(None, 1) for line in header.splitlines())
    if fields.get("svm_type") != "epsilon_svr" or fields.get("kernel_type") != "rbf":
        raise ValueError(f"{svm_txt}: expected an epsilon-SVR with an RBF kernel")
    rows = [line.split() for line in body.splitlines() if line.strip()]
    sv = np.zeros((len(rows), 36))
    for i, row in enumerate(rows):
        for item in row[1:]:
            index, value = item.split(":")
            sv[i, int(index) - 1] = float(value)
    ranges = _PlainData(io.BytesIO(Path(normalize_pickle).read_bytes())).load()
    if len(rows) != int(fields["total_sv"]):
        raise ValueError(f"{svm_txt}: {len(rows)} support vectors, header says {fields['total_sv']}")
    return {"sv": sv, "coef": np.array([float(r[0]) for r in rows]), "gamma": np.float64(fields["gamma"]),
            "rho": np.float64(fields["rho"]), "min": np.array(ranges["min_"], np.float64),
            "max": np.array(ranges["max_"], np.float64)}


def _gaussian_window(n: int = 7, sigma: float = 7 / 6) -> np.ndarray:
    y, x = np.indices((n, n)) - n // 2
    w = 1 / (2 * np.pi * sigma**2) * np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return w / np.sum(w)


def mscn(gray: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients of a gray image in [0, 1].

    In flat regions these are rounding noise around 0, which the AGGD fits split by sign: the
    features there depend on the last bits, so every step follows the reference's arithmetic order
    (an equally exact order moves Set5 bird's score by 0.02).
    """
    from scipy import signal  # 1-3 s to import: only when BRISQUE runs

    window = _gaussian_window()
    mu = signal.convolve2d(gray, window, "same")
    sigma = np.sqrt(np.abs(mu**2 - signal.convolve2d(gray**2, window, "same")))
    return (gray - mu) / (sigma + 1 / 255)


def _phi(alpha: float) -> float:
    return special.gamma(2 / alpha) ** 2 / (special.gamma(1 / alpha) * special.gamma(3 / alpha))


def aggd_fit(x: np.ndarray) -> tuple[float, float, float, float]:
    """Asymmetric generalized Gaussian (alpha, mean, sigma_l^2, sigma_r^2) by moment matching."""
    from scipy import optimize

    x = x.ravel()
    left, right = x[x < 0], x[x >= 0]
    var_l, var_r = np.mean(left**2), np.mean(right**2)
    g = np.sqrt(var_l) / np.sqrt(var_r)
    r_hat = np.mean(np.abs(x)) ** 2 / np.mean(x**2)
    r_norm = r_hat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    alpha = float(optimize.root(lambda a: _phi(a) - r_norm, [0.2]).x[0])  # the reference's solver and start
    mean = (np.sqrt(var_r) - np.sqrt(var_l)) * np.sqrt(special.gamma(1 / alpha) / special.gamma(3 / alpha)) * (
        special.gamma(2 / alpha) / special.gamma(1 / alpha))
    return alpha, float(mean), float(var_l), float(var_r)


def brisque_features(gray: np.ndarray) -> np.ndarray:
    """The 18 features of one scale: (alpha, variance) of the MSCN, (alpha, mean, var_l, var_r) x 4 products."""
    m = mscn(gray)
    alpha, _, var_l, var_r = aggd_fit(m)
    feats = [alpha, (var_l + var_r) / 2]
    for product in (m[:, :-1] * m[:, 1:], m[:-1, :] * m[1:, :], m[:-1, :-1] * m[1:, 1:], m[1:, :-1] * m[:-1, 1:]):
        feats += aggd_fit(product)
    return np.array(feats)


def brisque(img: np.ndarray, crop_border: int = 0) -> float:
    """BRISQUE of an RGB (HxWx3) or gray (HxW, HxWx1) image on the 0-255 scale. Lower is better.

    Values within 1e-3 of integers (8-bit samples read as floats) are taken as those integers: the
    flat-region features depend on the last bits (see :func:`mscn`), and the reference reads uint8.
    """
    import cv2

    img = np.asarray(img, dtype=np.float64)
    rounded = np.round(img)
    if np.abs(img - rounded).max(initial=0) < 1e-3:
        img = rounded
    gray = img / 255
    if gray.ndim == 3 and gray.shape[2] in (3, 4):
        gray = gray[..., :3] @ GRAY
    elif gray.ndim == 3 and gray.shape[2] == 1:
        gray = gray[..., 0]
    if gray.ndim != 2:
        raise ValueError(f"expected an HxW or HxWx3 image, got shape {np.shape(img)}")
    if crop_border:
        gray = gray[crop_border:-crop_border, crop_border:-crop_border]
    if min(gray.shape) < 16:
        raise ValueError(f"BRISQUE needs at least 16x16 pixels, got {gray.shape[1]}x{gray.shape[0]}")
    half = cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    feats = np.concatenate([brisque_features(gray), brisque_features(half)])
    model = brisque_model()
    scaled = -1 + 2 * (feats - model["min"]) / (model["max"] - model["min"])
    kernel = np.exp(-model["gamma"] * ((model["sv"] - scaled) ** 2).sum(1))
    return float(kernel @ model["coef"] - model["rho"])


__all__ = ["brisque", "brisque_features", "brisque_model", "read_brisque_files"]
