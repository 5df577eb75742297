"""Video SR data: clips of frames from folders, or synthetic clips by camera motion over still images.

Folders: any folder of frame folders. A clip is a folder that directly holds images, found at
any depth, so the standard layouts need no special code: REDS (``train_sharp/000/00000000.png``;
:data:`REDS4` is its usual test split), Vimeo-90K septuplets (``sequences/00001/0001/im1.png``;
``include`` takes the lines of ``sep_trainlist.txt``), Vid4 (``GT/calendar/...`` with
``BIx4/calendar/...``). LR frames are read from a parallel folder (same clip paths, same file
names) or made on the fly from each mod-cropped HR frame by BI (MATLAB bicubic) or BD
(Gaussian sigma 1.6), with enough surrounding context that a patch's LR equals the crop of the
whole frame's LR.

Synthetic clips (:class:`MotionClips`) move a virtual camera smoothly over a still image (pan,
zoom and a small rotation, constant per clip) so that video networks can be trained and tested
with real image content and known, sub-pixel motion, on data a CPU can afford.

Sampling follows the models: ``window`` gives N frames centred on a frame (indices past either
end repeat the end frame) and that centre frame as the target (EDVR, TAN); ``clip`` gives N
consecutive frames and all N targets (BasicVSR, IconVSR, VSR-Transformer). Augmentation: the
same flips/transposes for every frame, and reversed time order. Randomness is a function of
(seed, position in the sample stream), as for images.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from superres.data.paired import DataError, augment, degrade
from superres.io import IMAGE_EXTENSIONS, list_images, read_rgb8
from superres.ops import modcrop
from superres.ops.layout import to_tensor

REDS4 = ("000", "011", "015", "020")


@dataclass(frozen=True)
class Clip:
    name: str  # the clip folder relative to its root, e.g. "000" or "00001/0001"
    hr: list[Path]
    lr: list[Path] | None = None


def clip_folders(root: str | os.PathLike) -> list[Path]:
    """Every folder at or under ``root`` that directly holds images, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    found = []
    for folder, _, files in os.walk(root):
        if any(Path(f).suffix.lower() in IMAGE_EXTENSIONS and not f.startswith(".") for f in files):
            found.append(Path(folder))
    return sorted(found)


def find_clips(hr_root: str | os.PathLike, lr_root: str | os.PathLike | None = None,
               include: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> list[Clip]:
    """The clips under ``hr_root`` (optionally only ``include``, never ``exclude``), with their LR frames."""
    hr_root = Path(hr_root)
    clips = []
    for folder in clip_folders(hr_root):
        name = folder.relative_to(hr_root).as_posix() if folder != hr_root else folder.name
        if (include is not None and name not in include) or name in exclude:
            continue
        hr = list_images(folder)
        lr = None
        if lr_root is not None:
            lr_folder = Path(lr_root) / folder.relative_to(hr_root)
            by_stem = {f.stem: f for f in list_images(lr_folder)} if lr_folder.is_dir() else {}
            missing = [f.name for f in hr if f.stem not in by_stem]
            if missing:
                raise DataError(f"{lr_folder}: no LR frame for {len(missing)} HR frame(s) of clip {name}, "
                                f"e.g. {', '.join(missing[:3])}")
            lr = [by_stem[f.stem] for f in hr]
        clips.append(Clip(name, hr, lr))
    if not clips:
        raise DataError(f"{hr_root}: no clips (folders of frames) found")
    return clips


def frame_indices(count: int, first: int, length: int) -> list[int]:
    """``length`` indices from ``first``, clamped to [0, count): the ends repeat (edge padding)."""
    return [min(max(i, 0), count - 1) for i in range(first, first + length)]


def _lr_of_patch(frames: list[np.ndarray], top: int, left: int, size: int, scale: int,
                 degradation: str) -> list[np.ndarray]:
    """The LR of the HR patch (top, left, size) of each frame, as if the whole frame had been degraded:
    the patch is degraded with up to 4 * scale pixels of context, then cropped."""
    margin = 4 * scale
    h, w = frames[0].shape[:2]
    t0, l0 = max(0, top - margin), max(0, left - margin)
    t1, l1 = min(h, top + size + margin), min(w, left + size + margin)
    out = []
    for f in frames:
        lr = degrade(np.ascontiguousarray(f[t0:t1, l0:l1]), scale, degradation)
        r, c, n = (top - t0) // scale, (left - l0) // scale, size // scale
        out.append(lr[r:r + n, c:c + n])
    return out


class _ClipSampler(Dataset):
    """What both clip datasets share: sampling settings, augmentation, tensors."""

    def __init__(self, scale: int, patch_size: int, frames: int, mode: str, degradation: str, flip: bool,
                 rot90: bool, reverse: bool, single_frame: bool = False):
        if patch_size % scale:
            raise DataError(f"patch_size {patch_size} is not a multiple of the scale {scale}")
        if mode not in ("window", "clip"):
            raise ValueError(f"mode must be 'window' or 'clip', got {mode!r}")
        self.scale, self.patch_size, self.frames, self.mode = scale, patch_size, frames, mode
        self.degradation, self.flip, self.rot90, self.reverse = degradation, flip, rot90, reverse
        self.single_frame = single_frame  # clip mode: the trainer feeds each frame on its own

    def _finish(self, rng: np.random.Generator, lr: list[np.ndarray], hr: list[np.ndarray]) -> dict[str, torch.Tensor]:
        n = len(lr)
        arrays = augment(rng, [*lr, *hr], self.flip, self.rot90)
        lr, hr = arrays[:n], arrays[n:]
        if self.reverse and rng.random() < 0.5:
            lr, hr = lr[::-1], hr[::-1]
        if self.single_frame and self.mode == "window":  # the ablation: the same network, one frame of information
            lr = [lr[n // 2]] * n
        lr_t, hr_t = to_tensor(np.stack(lr)), to_tensor(np.stack(hr))
        return {"lr": lr_t, "hr": hr_t[n // 2] if self.mode == "window" else hr_t}


class VideoClips(_ClipSampler):
    """Random (LR, HR) patches of ``frames`` frames from clip folders; items are (clip index, sample seed)."""

    def __init__(self, hr_roots: Sequence[str], scale: int, patch_size: int, frames: int, mode: str = "window",
                 lr_roots: Sequence[str] | None = None, degradation: str = "bicubic", flip: bool = True,
                 rot90: bool = True, reverse: bool = True, include: Sequence[str] | None = None,
                 exclude: Sequence[str] = (), single_frame: bool = False):
        super().__init__(scale, patch_size, frames, mode, degradation, flip, rot90, reverse, single_frame)
        lr_roots = lr_roots or [None] * len(hr_roots)
        if len(lr_roots) != len(hr_roots):
            raise DataError("give one LR folder per HR folder")
        self.clips = [c for hr, lr in zip(hr_roots, lr_roots, strict=True)
                      for c in find_clips(hr, lr, include, exclude)]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, sample_seed = key
        clip, s = self.clips[index], self.scale
        rng = np.random.default_rng(sample_seed)
        count = len(clip.hr)
        if self.mode == "window":
            first = int(rng.integers(0, count)) - self.frames // 2
        else:
            first = int(rng.integers(0, max(count - self.frames, 0) + 1))
        picks = frame_indices(count, first, self.frames)
        hr = [modcrop(read_rgb8(clip.hr[i]), s) for i in picks]
        h, w = hr[0].shape[:2]
        if min(h, w) < self.patch_size:
            raise DataError(f"{clip.hr[0].parent}: frames of {w}x{h} are smaller than the "
                            f"{self.patch_size}-pixel patch")
        lp = self.patch_size // s
        top, left = int(rng.integers(0, h // s - lp + 1)) * s, int(rng.integers(0, w // s - lp + 1)) * s
        if clip.lr is not None:
            lr = [read_rgb8(clip.lr[i])[top // s:top // s + lp, left // s:left // s + lp] for i in picks]
        else:
            lr = _lr_of_patch(hr, top, left, self.patch_size, s, self.degradation)
        hr = [f[top:top + self.patch_size, left:left + self.patch_size] for f in hr]
        return self._finish(rng, lr, hr)


def camera_path(rng: np.random.Generator, frames: int, max_shift: float, max_zoom: float,
                max_rotation: float) -> list[np.ndarray]:
    """2x3 affine maps (output patch -> image, about the patch centre) of a camera moving at a constant
    random velocity (<= ``max_shift`` px/frame per axis), zoom rate and rotation rate (degrees/frame)."""
    velocity = rng.uniform(-max_shift, max_shift, 2)
    zoom, turn = rng.uniform(-max_zoom, max_zoom), math.radians(rng.uniform(-max_rotation, max_rotation))
    maps = []
    for k in range(frames):
        a, z = turn * k, 1 + zoom * k
        linear = z * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        maps.append(np.hstack([linear, (velocity * k)[:, None]]))
    return maps


def camera_flow(ref: np.ndarray, supp: np.ndarray, size: int, scale: int = 1) -> np.ndarray:
    """The exact flow between two views of :func:`render_clip` (maps ``ref`` and ``supp`` of
    :func:`camera_path`, ``size`` HR pixels): for each pixel of the ``ref`` view downscaled by ``scale``,
    where the same image point lies in the ``supp`` view, minus where it lies in ``ref``, in those
    pixels ((size / scale)^2 x 2, x then y). This is the flow SPyNet predicts to warp ``supp`` onto ``ref``."""
    c = (size - 1) / 2
    centres = (np.arange(size // scale) + 0.5) * scale - 0.5 - c  # pixel centres in HR pixels from the view centre
    p = np.stack(np.meshgrid(centres, centres), -1)
    q = (p @ ref[:, :2].T + ref[:, 2] - supp[:, 2]) @ np.linalg.inv(supp[:, :2]).T
    return ((q - p) / scale).astype(np.float32)


def render_clip(image: np.ndarray, maps: list[np.ndarray], center: tuple[float, float], size: int) -> list[np.ndarray]:
    """The ``size`` x ``size`` views of ``image`` through each map, centred at ``center`` (x, y) at frame 0."""
    c = (size - 1) / 2
    views = []
    for m in maps:
        full = m.copy()
        full[:, 2] = m[:, :2] @ np.array([-c, -c]) + m[:, 2] + np.asarray(center)  # patch pixel -> image pixel
        views.append(cv2.warpAffine(image, full, (size, size), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                                    borderMode=cv2.BORDER_REFLECT_101))
    return views


class MotionClips(_ClipSampler):
    """Synthetic clips: a camera moving smoothly over still images (pan, zoom, small rotation).

    Each sample draws a motion and a start point, renders ``frames`` HR views with context around
    the patch, degrades them (BI or BD) and crops, so LR and HR are exactly paired and the motion
    is sub-pixel and known. Images too small for the patch plus the motion are left out.
    """

    def __init__(self, hr_dirs: Sequence[str], scale: int, patch_size: int, frames: int, mode: str = "clip",
                 degradation: str = "bicubic", flip: bool = True, rot90: bool = True, reverse: bool = True,
                 max_shift: float = 2.0, max_zoom: float = 0.005, max_rotation: float = 0.3,
                 single_frame: bool = False):
        super().__init__(scale, patch_size, frames, mode, degradation, flip, rot90, reverse, single_frame)
        self.max_shift, self.max_zoom, self.max_rotation = max_shift, max_zoom, max_rotation
        self.view = patch_size + 8 * scale  # the patch and 4 * scale pixels of context on each side
        reach = self.view * (1 + max_zoom * frames) * 1.5 + 2 * max_shift * frames
        images = [read_rgb8(f) for folder in hr_dirs for f in list_images(folder)]
        self.images = [im for im in images if min(im.shape[:2]) >= reach]
        if not self.images:
            raise DataError(f"{', '.join(map(str, hr_dirs))}: no image of at least {math.ceil(reach)} pixels "
                            f"for {frames}-frame clips of {patch_size}-pixel patches")

    def __len__(self) -> int:
        return len(self.images)

    def render(self, index: int, rng: np.random.Generator, size: int) -> list[np.ndarray]:
        """``frames`` views of ``size`` pixels of image ``index`` along a random camera path."""
        return self.render_path(index, rng, size)[0]

    def render_path(self, index: int, rng: np.random.Generator, size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The views of :meth:`render` and the camera maps that made them."""
        image = self.images[index]
        maps = camera_path(rng, self.frames, self.max_shift, self.max_zoom, self.max_rotation)
        reach = [max(abs(m[i, 2]) for m in maps) + size * 0.75 * (1 + self.max_zoom * self.frames) for i in (0, 1)]
        h, w = image.shape[:2]
        center = (rng.uniform(reach[0], w - reach[0]), rng.uniform(reach[1], h - reach[1]))
        return render_clip(image, maps, center, size), maps

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, sample_seed = key
        rng = np.random.default_rng(sample_seed)
        views = self.render(index, rng, self.view)
        m = 4 * self.scale
        lr = _lr_of_patch(views, m, m, self.patch_size, self.scale, self.degradation)
        hr = [v[m:m + self.patch_size, m:m + self.patch_size] for v in views]
        return self._finish(rng, lr, hr)


class MotionFlows(MotionClips):
    """Pairs of LR frames from :class:`MotionClips` and their exact flow, to measure (or train) SPyNet.

    Items are (image index, sample seed) -> ``{"ref", "supp"}`` (3 x h x w LR frames, two consecutive
    frames in random order, degraded as the video networks see them) and ``"flow"`` (2 x h x w, LR
    pixels: warps ``supp`` onto ``ref``). The motion is random per sample, so no other augmentation.
    """

    def __init__(self, hr_dirs: Sequence[str], scale: int, patch_size: int, degradation: str = "bicubic",
                 max_shift: float = 8.0, max_zoom: float = 0.02, max_rotation: float = 1.0):
        super().__init__(hr_dirs, scale, patch_size, 2, "clip", degradation, flip=False, rot90=False, reverse=False,
                         max_shift=max_shift, max_zoom=max_zoom, max_rotation=max_rotation)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, sample_seed = key
        rng = np.random.default_rng(sample_seed)
        views, maps = self.render_path(index, rng, self.view)
        m, n = 4 * self.scale, self.patch_size // self.scale  # the patch's context, its LR size
        lr = _lr_of_patch(views, m, m, self.patch_size, self.scale, self.degradation)
        a, b = rng.permutation(2)
        flow = camera_flow(maps[a], maps[b], self.view, self.scale)[4:4 + n, 4:4 + n]  # m HR px = 4 LR px
        return {"ref": to_tensor(lr[a]), "supp": to_tensor(lr[b]), "flow": to_tensor(flow)}


def write_motion_clips(hr_dirs: Sequence[str], out_dir: str | os.PathLike, count: int, frames: int, size: int,
                       seed: int = 0, **motion) -> list[Path]:
    """Render ``count`` synthetic HR clips of ``frames`` frames of ``size`` pixels to ``out_dir/NNN/``
    (a Vid4-style test set; evaluate it with LR made by BI or BD on the fly). Returns the clip folders."""
    from superres.io import write_image

    sampler = MotionClips(hr_dirs, 1, size, frames, "clip", flip=False, rot90=False, reverse=False, **motion)
    rng = np.random.default_rng(seed)
    folders = []
    for i in range(count):
        folder = Path(out_dir) / f"{i:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for k, view in enumerate(sampler.render(i % len(sampler.images), rng, size)):
            write_image(folder / f"{k:08d}.png", view)
        folders.append(folder)
    return folders


def eval_clips(hr_root: str | os.PathLike, scale: int, lr_root: str | os.PathLike | None = None,
               degradation: str = "bicubic", max_clips: int | None = None, include: Sequence[str] | None = None,
               ) -> list[tuple[str, list[np.ndarray], list[np.ndarray]]]:
    """A video test set (Vid4-style): (clip name, mod-cropped HR frames, LR frames) per clip, LR read
    from ``lr_root`` or made from each whole HR frame by BI or BD; ``include``: only these clips
    (REDS4 from REDS's train_sharp)."""
    out = []
    for clip in find_clips(hr_root, lr_root, include)[:max_clips]:
        hr = [modcrop(read_rgb8(f), scale) for f in clip.hr]
        lr = [read_rgb8(f) for f in clip.lr] if clip.lr else [degrade(f, scale, degradation) for f in hr]
        out.append((clip.name, hr, lr))
    return out


__all__ = ["REDS4", "Clip", "MotionClips", "MotionFlows", "VideoClips", "camera_flow", "camera_path", "clip_folders",
           "eval_clips", "find_clips", "frame_indices", "render_clip", "write_motion_clips"]
