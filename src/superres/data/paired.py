"""Paired HR/LR image data for training and evaluation, made the way SR papers make it.

LR images come from the mod-cropped HR image by MATLAB bicubic (``bicubic``, the "BI" setting of
SRCNN/FSRCNN/ESPCN/EDSR) or Gaussian blur + decimation (``bd``), computed once per whole image
in 8 bits (rounded like MATLAB), or they are read from an LR folder and matched by file name.
Training crops aligned patches (random position in LR coordinates), flips and rotates them.

Randomness is a function of (seed, position in the sample stream), never of a global generator:
the same run gives the same patches whatever the number of DataLoader workers or DDP
processes, and a resumed run continues the exact stream (see :class:`SampleStream`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from superres.errors import SuperresError
from superres.io import list_images, read_image, read_rgb8, to_integer
from superres.ops import blur_downsample, imresize, modcrop, rgb2ycbcr
from superres.ops.layout import to_tensor


class DataError(SuperresError):
    """A dataset that cannot be used: the message names the folder or file."""


@dataclass(frozen=True)
class Pair:
    name: str
    hr: np.ndarray  # uint8 HxWx3 RGB, mod-cropped
    lr: np.ndarray  # uint8 (H/scale)x(W/scale)x3 RGB
    gray: bool = False  # the HR file is gray (its three channels equal): scored on its gray values


def degrade(hr: np.ndarray, scale: int, degradation: str) -> np.ndarray:
    """The LR image of a mod-cropped uint8 HR image: MATLAB bicubic (``bicubic``) or ``bd``."""
    if degradation == "bicubic":
        return imresize(hr, 1 / scale)
    if degradation == "bd":
        return blur_downsample(hr, scale)
    raise ValueError(f"degradation must be 'bicubic' or 'bd', got {degradation!r}")


def _lr_files(lr_dirs: Sequence[str | os.PathLike]) -> dict[str, Path]:
    """LR files by stem; a stem may carry an ``xN`` suffix (``baby_x3.png`` or ``babyx3.png``)."""
    found: dict[str, Path] = {}
    for folder in lr_dirs:
        for f in list_images(folder):
            found.setdefault(f.stem, f)
    return found


def _match_lr(stem: str, scale: int, lr_files: dict[str, Path]) -> Path | None:
    for key in (stem, f"{stem}x{scale}", f"{stem}_x{scale}", f"{stem}_X{scale}"):
        if key in lr_files:
            return lr_files[key]
    return None


def load_pair(hr_path: Path, scale: int, degradation: str = "bicubic", lr_path: Path | None = None,
              hr_scale: float = 1.0) -> Pair:
    """Read one HR image (optionally shrunk by ``hr_scale`` first) and make or read its LR image."""
    image, info = read_image(hr_path)
    hr = to_integer(image[..., :3], 8)
    if hr_scale != 1.0:
        hr = imresize(hr, hr_scale)
    hr = modcrop(hr, scale)
    if min(hr.shape[:2]) < scale:
        raise DataError(f"{hr_path}: {hr.shape[1]}x{hr.shape[0]} is smaller than the scale {scale}")
    if lr_path is None:
        lr = degrade(hr, scale, degradation)
    else:
        lr = read_rgb8(lr_path)
        expected = (hr.shape[0] // scale, hr.shape[1] // scale)
        if lr.shape[:2] != expected:
            raise DataError(f"{lr_path}: LR is {lr.shape[1]}x{lr.shape[0]}, expected {expected[1]}x{expected[0]} "
                            f"for the {hr.shape[1]}x{hr.shape[0]} (mod-cropped) HR {hr_path.name} at x{scale}")
    name = hr_path.stem if hr_scale == 1.0 else f"{hr_path.stem}@{hr_scale:g}"
    return Pair(name, hr, lr, info.gray)


def pair_sources(hr_dirs: Sequence[str | os.PathLike], scale: int, lr_dirs: Sequence[str | os.PathLike] | None = None,
                 ) -> list[tuple[Path, Path | None]]:
    """(HR file, matching LR file or None) for every image in ``hr_dirs``; clear errors if empty/unmatched."""
    hr_files = [f for folder in hr_dirs for f in list_images(folder)]
    if not hr_files:
        raise DataError(f"{', '.join(map(str, hr_dirs))}: no images found")
    if not lr_dirs:
        return [(f, None) for f in hr_files]
    lr_files = _lr_files(lr_dirs)
    pairs = [(f, _match_lr(f.stem, scale, lr_files)) for f in hr_files]
    missing = [f.name for f, lr in pairs if lr is None]
    if missing:
        raise DataError(f"{', '.join(map(str, lr_dirs))}: no LR image for {len(missing)} HR image(s), "
                        f"e.g. {', '.join(missing[:3])}")
    return pairs


def eval_pairs(hr_dir: str | os.PathLike, scale: int, lr_dir: str | os.PathLike | None = None,
               degradation: str = "bicubic", max_images: int | None = None) -> list[Pair]:
    """A test set the papers' way: mod-cropped HR and its MATLAB-bicubic (or given) LR."""
    sources = pair_sources([hr_dir], scale, [lr_dir] if lr_dir else None)[:max_images]
    return [load_pair(hr, scale, degradation, lr) for hr, lr in sources]


def to_y(img: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float32 Y in [16/255, 235/255] (MATLAB's rgb2ycbcr), HxWx1."""
    return rgb2ycbcr(img.astype(np.float64) / 255.0, y_only=True).astype(np.float32)


def augment(rng: np.random.Generator, arrays: list[np.ndarray], flip: bool, rot90: bool) -> list[np.ndarray]:
    """The same random transform for every array, as BasicSR's ``augment(hflip, rotation)``: ``flip``
    a horizontal flip, ``rot90`` a vertical flip and a transpose (both: all 8 dihedral cases)."""
    hflip, vflip, transpose = (rng.random(3) < 0.5) & np.array([flip, rot90, rot90])
    out = []
    for a in arrays:
        a = a[:, ::-1] if hflip else a
        a = a[::-1] if vflip else a
        out.append(a.transpose(1, 0, 2) if transpose else a)
    return out


class PairedPatches(Dataset):
    """Random aligned (LR, HR) patches; items are indexed by (image index, sample seed).

    ``hr_scales`` adds shrunk copies of every image (FSRCNN's scaling augmentation). With
    ``cache`` the decoded pairs stay in memory (uint8), which small sets such as T91 want.
    Files in ``exclude`` (resolved paths: the validation images) are never trained on.
    ``degradation="none"`` gives HR patches only (from anywhere in the image), for pipelines
    that make the LR on the training device (Real-ESRGAN's).
    """

    def __init__(self, hr_dirs: Sequence[str], scale: int, patch_size: int, lr_dirs: Sequence[str] | None = None,
                 degradation: str = "bicubic", y_channel: bool = False, flip: bool = True, rot90: bool = True,
                 hr_scales: Sequence[float] = (1.0,), cache: bool = True, exclude: Collection[Path] = ()):
        if patch_size % scale:
            raise DataError(f"patch_size {patch_size} is not a multiple of the scale {scale}")
        if lr_dirs and any(s != 1.0 for s in hr_scales):
            raise DataError("hr_scales needs LR images made on the fly (no LR folder)")
        if lr_dirs and degradation == "none":
            raise DataError("an LR folder and degradation 'none' (HR patches only) exclude each other")
        self.scale, self.patch_size, self.degradation = scale, patch_size, degradation
        self.y_channel, self.flip, self.rot90 = y_channel, flip, rot90
        sources = [(hr, lr) for hr, lr in pair_sources(hr_dirs, scale, lr_dirs) if hr.resolve() not in exclude]
        if not sources:
            raise DataError(f"{', '.join(map(str, hr_dirs))}: every image is a validation image")
        self.items = [(hr, lr, s) for hr, lr in sources for s in hr_scales]
        self._load = self._read
        if cache:
            self._cache_pairs()

    def _cache_pairs(self) -> None:
        """Read every pair once and keep it; images (and shrunk copies) smaller than a patch are left
        out, originals with a warning."""
        pairs = [self._read(i) for i in range(len(self.items))]
        keep = [i for i, pair in enumerate(pairs) if min(pair.hr.shape[:2]) >= self.patch_size]
        if not keep:
            self._check(pairs[0], 0)
        kept = set(keep)
        small = [self.items[i][0].name for i in range(len(pairs)) if i not in kept and self.items[i][2] == 1.0]
        if small:
            warnings.warn(f"{len(small)} training image(s) smaller than the {self.patch_size}-pixel patch left out: "
                          f"{', '.join(small[:5])}{', ...' if len(small) > 5 else ''}", stacklevel=3)
        self.items = [self.items[i] for i in keep]
        cached = [pairs[i] for i in keep]
        self._load = cached.__getitem__

    def _read(self, index: int) -> Pair:
        hr, lr, hr_scale = self.items[index]
        if self.degradation == "none":
            img = read_rgb8(hr)
            img = imresize(img, hr_scale) if hr_scale != 1.0 else img
            return Pair(hr.stem, img, img[:0, :0])
        return load_pair(hr, self.scale, self.degradation, lr, hr_scale)

    def _check(self, pair: Pair, index: int) -> None:
        if min(pair.hr.shape[:2]) < self.patch_size:
            raise DataError(f"{self.items[index][0]}: {pair.hr.shape[1]}x{pair.hr.shape[0]} (scaled by "
                            f"{self.items[index][2]:g}) is smaller than the {self.patch_size}-pixel patch")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, sample_seed = key
        pair = self._load(index)
        self._check(pair, index)
        rng = np.random.default_rng(sample_seed)
        if self.degradation == "none":
            p = self.patch_size
            top, left = (int(rng.integers(0, n - p + 1)) for n in pair.hr.shape[:2])
            (hr,) = augment(rng, [pair.hr[top:top + p, left:left + p]], self.flip, self.rot90)
            return {"hr": self._tensor(hr)}
        lp = self.patch_size // self.scale
        top = int(rng.integers(0, pair.lr.shape[0] - lp + 1))
        left = int(rng.integers(0, pair.lr.shape[1] - lp + 1))
        lr = pair.lr[top:top + lp, left:left + lp]
        s = self.scale
        hr = pair.hr[top * s:(top + lp) * s, left * s:(left + lp) * s]
        lr, hr = augment(rng, [lr, hr], self.flip, self.rot90)
        return {"lr": self._tensor(lr), "hr": self._tensor(hr)}

    def _tensor(self, img: np.ndarray) -> torch.Tensor:
        """uint8 HxWx3 -> float CxHxW in [0, 1] (Y only in ``y_channel`` mode)."""
        return to_tensor(to_y(np.ascontiguousarray(img)) if self.y_channel else img)


class SampleStream(torch.utils.data.Sampler):
    """Batches of (index, sample seed) for one DDP rank, starting at any iteration.

    The stream is the concatenation of per-epoch permutations (epoch e shuffled with seed
    (seed, e)); global batch k is stream[k*B : (k+1)*B] and rank r takes its r-th contiguous
    share. So one process with batch B and N processes with B/N each see the same samples, and
    resuming at iteration k needs nothing but k.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, start_iter: int = 0, rank: int = 0,
                 world_size: int = 1):
        if batch_size % world_size:
            raise DataError(f"batch_size {batch_size} is not divisible by the {world_size} processes")
        self.n, self.batch, self.seed = num_items, batch_size, seed
        self.start, self.rank, self.world = start_iter, rank, world_size

    @lru_cache(maxsize=4)  # noqa: B019 - a few epochs' permutations, per sampler
    def _perm(self, epoch: int) -> np.ndarray:
        return np.random.default_rng((self.seed, epoch)).permutation(self.n)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        share = self.batch // self.world
        k = self.start
        while True:
            first = k * self.batch + self.rank * share
            yield [(int(self._perm(p // self.n)[p % self.n]), sample_seed(self.seed, p))
                   for p in range(first, first + share)]
            k += 1


def sample_seed(seed: int, position: int) -> int:
    """A well-mixed 32-bit seed for item ``position`` of the stream of run ``seed``."""
    return int(np.random.SeedSequence((seed, position, 0x5EED)).generate_state(1)[0])
