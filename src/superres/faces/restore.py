"""Face restoration around a face network: each face detected in the input, aligned to the FFHQ template
in the upscaled image, restored and pasted back (:mod:`.paste`); for video, tracked over time.

The face network is any model descriptor whose purpose is ``face`` (scale 1, S x S RGB crops, S its
size requirement; GFPGAN, RestoreFormer and CodeFormer take 512); it runs through the one
:class:`~superres.runner.Runner`, so device and precision follow the same options as the background.
Faces are cropped from the upscaled background, so that the change a restorer makes is measured against
the pixels it replaces (see :mod:`.paste`).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from superres.faces.align import face_transform, warp
from superres.faces.detect import Face, FaceDetector, FaceError
from superres.faces.paste import COLOR_MODES, face_change, paste_changes
from superres.ops.layout import to_float
from superres.runtime import RunOptions


@dataclass(frozen=True)
class FaceOptions:
    """How faces are restored.

    ``strength``: 0 leaves faces as the background model made them, 1 is the restorer's output, values
    between blend the two. ``min_size``: faces whose box is smaller than this (input pixels) are left to
    the background model. ``color``: ``keep`` takes the faces' colour and shading from the unrestored
    face (so they match their surroundings) and the detail from the restorer; ``none`` takes all of the
    restorer's output. ``batch``: faces per network call.
    """

    strength: float = 1.0
    min_size: float = 32.0
    color: str = "keep"
    batch: int = 4

    def __post_init__(self):
        if not 0 <= self.strength <= 1:
            raise FaceError(f"face strength must be between 0 and 1, got {self.strength}")
        if not self.min_size >= 0:
            raise FaceError(f"face min size must be >= 0 pixels, got {self.min_size}")
        if self.color not in COLOR_MODES:
            raise FaceError(f"face color must be one of {', '.join(COLOR_MODES)}, got {self.color!r}")
        if self.batch < 1:
            raise FaceError(f"face batch must be >= 1, got {self.batch}")


def load_face_model(model):
    """A face restoration model descriptor from a path or a descriptor, checked against the contract."""
    from superres.zoo import BICUBIC, MODELS, load_model
    from superres.zoo.pretrained import FACE_WEIGHTS_HINT

    if isinstance(model, str | os.PathLike) and str(model) not in (*MODELS, BICUBIC) and not os.path.exists(model):
        raise FaceError(f"{model}: no such file; {FACE_WEIGHTS_HINT}")
    desc = load_model(model) if isinstance(model, str | os.PathLike) else model
    name = model if isinstance(model, str | os.PathLike) else (desc.name or desc.arch)
    if desc.purpose != "face":
        raise FaceError(f"{name}: a {desc.arch} is a {desc.purpose} network, not a face restorer")
    if desc.scale != 1 or desc.in_channels != 3 or desc.out_channels != 3 or desc.min_size < 16 or \
            desc.min_size % max(desc.size_multiple, 1):
        raise FaceError(f"{name}: a face restorer must map S x S RGB crops to the same (it is x{desc.scale}, "
                        f"{desc.in_channels} -> {desc.out_channels} channels, smallest side {desc.min_size})")
    return desc


def rgb8(image: np.ndarray) -> np.ndarray:
    """Any image layout the upscaler takes (HxW, HxWx1-4; uint8, uint16 or float) as HxWx3 uint8 RGB."""
    img = image[..., None] if image.ndim == 2 else image
    if img.ndim != 3 or img.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"image must be HxW or HxWxC with C = 1 to 4, got shape {image.shape}")
    color = img[..., :3] if img.shape[2] >= 3 else np.repeat(img[..., :1], 3, axis=2)
    if color.dtype == np.uint8:
        return np.ascontiguousarray(color)
    return np.rint(to_float(color) * 255).astype(np.uint8)


def crop_faces(image: np.ndarray, faces: list[Face], size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each face of ``image`` (HxWx3, any dtype) aligned to the FFHQ template at size x size (borders
    mirrored), and the 2x3 matrices from ``image`` to each crop."""
    matrices = [face_transform(face.landmarks, size) for face in faces]
    crops = [warp(image, m, size, size, border=cv2.BORDER_REFLECT_101) for m in matrices]
    return crops, matrices


class FaceRestorer:
    """Detects, restores and pastes back faces, given an image and its upscaled version.

    ``face_model``: a checkpoint path or a face-restoration descriptor; ``face_options``:
    :class:`FaceOptions`; ``options``: how the network runs (device, precision); ``detector``: a
    function from HxWx3 uint8 RGB to :class:`Face` lists (default MTCNN on the network's device).
    """

    def __init__(self, face_model, face_options: FaceOptions | None = None, options: RunOptions | None = None, *,
                 detector: Callable[[np.ndarray], list[Face]] | None = None):
        from superres.runner import Runner

        self.face_options = face_options or FaceOptions()
        self.desc = load_face_model(face_model)
        self.size = self.desc.min_size
        self.runner = Runner(self.desc, options)
        self.detector = detector or FaceDetector(device=self.runner.device)

    def summary(self) -> str:
        return f"faces by {self.desc.name or self.desc.arch} ({self.runner.precision_for(np.uint8)})"

    def detect(self, image: np.ndarray) -> list[Face]:
        """The faces of an input image that will be restored (those of at least ``min_size``)."""
        return self.big_enough(self.detect_all(image))

    def detect_all(self, image: np.ndarray) -> list[Face]:
        return self.detector(rgb8(image)) if min(image.shape[:2]) >= 1 else []

    def big_enough(self, faces: list[Face]) -> list[Face]:
        return [f for f in faces if f.size >= self.face_options.min_size]

    def restore(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """S x S x 3 crops (one dtype) through the face network, ``batch`` at a time."""
        n = self.face_options.batch
        return [out for i in range(0, len(crops), n) for out in self.runner.batch(np.stack(crops[i:i + n]))]

    def paste(self, image: np.ndarray, upscaled: np.ndarray, faces: list[Face]) -> np.ndarray:
        """``upscaled`` (``image`` upscaled by any model, to any size) with ``faces`` (found in ``image``)
        cropped from it, restored and pasted back."""
        if not faces:
            return upscaled
        bg = upscaled[..., None] if upscaled.ndim == 2 else upscaled
        sy, sx = bg.shape[0] / image.shape[0], bg.shape[1] / image.shape[1]
        color = bg[..., :3] if bg.shape[2] >= 3 else np.repeat(bg[..., :1], 3, axis=2)
        crops, matrices = crop_faces(color, [face.scaled(sx, sy) for face in faces], self.size)
        opts = self.face_options
        changes = [face_change(r, c, opts.color) for r, c in zip(self.restore(crops), crops, strict=True)]
        out = paste_changes(bg, changes, matrices, opts.strength)
        return out[..., 0] if upscaled.ndim == 2 else out

    def stream(self, upscale: Callable[[Iterator], Iterator], tracker=None) -> FaceStream:
        """``upscale``, a frame-stream upscaler, that also restores faces (see :class:`FaceStream`)."""
        return FaceStream(self, upscale, tracker)


class FaceStream:
    """A frame-stream upscaler (frames of (RGB, pts, time base) in and out, in order, as
    :mod:`superres.infer.video`'s) with faces restored, their landmarks smoothed over time by ``tracker``
    (default :class:`~superres.faces.track.FaceTracker`) so that they do not flicker."""

    def __init__(self, faces: FaceRestorer, upscale: Callable[[Iterator], Iterator], tracker=None):
        from superres.faces.track import FaceTracker

        self.faces, self.upscale, self.tracker = faces, upscale, tracker or FaceTracker()
        self.scale = upscale.scale

    def __call__(self, frames: Iterator) -> Iterator:
        pending: deque = deque()  # the input frames whose outputs have not come out yet

        def remember(items: Iterator) -> Iterator:
            for frame in items:
                pending.append(frame)
                yield frame

        for sr, pts, tb in self.upscale(remember(frames)):
            rgb = pending.popleft()[0]
            # all faces are tracked and the smoothed ones filtered by size, so that a face near the
            # size limit is not restored in one frame and left in the next
            faces = self.faces.big_enough(self.tracker.update(self.faces.detect_all(rgb)))
            yield self.faces.paste(rgb, sr, faces), pts, tb
