"""Upscale an image with its faces restored: the background through any SR model (:class:`Upscaler`), the
faces detected in the input, restored by a face network and pasted back (:mod:`superres.faces`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from superres.faces import Face, FaceOptions, FaceRestorer
from superres.infer.image import Upscaler
from superres.runtime import RunOptions
from superres.zoo.pretrained import DEFAULT_MODEL


class FaceEnhancer:
    """An upscaler that restores faces: ``upscale_array`` as :class:`~superres.infer.Upscaler`'s.

    ``face_model``: a checkpoint path or a face-restoration descriptor; ``background``: a model name,
    path, descriptor or a built :class:`~superres.infer.Upscaler` (default ``realesrgan-x4plus``);
    ``face_options``: :class:`FaceOptions`; ``options``: the run options of both networks; ``detector``:
    as :class:`FaceRestorer`'s; other keywords go to the background's :class:`~superres.infer.Upscaler`.
    """

    def __init__(self, face_model, background=None, face_options: FaceOptions | None = None,
                 options: RunOptions | None = None, *, detector: Callable[[np.ndarray], list[Face]] | None = None,
                 **upscaler_args):
        if isinstance(background, Upscaler):
            self.background = background
        else:
            self.background = Upscaler(DEFAULT_MODEL if background is None else background, options, **upscaler_args)
        self.faces = FaceRestorer(face_model, face_options, self.background.options, detector=detector)

    # what the upscale command reads from an Upscaler
    @property
    def scale(self) -> int:
        return self.background.scale

    @property
    def torch_device(self):
        return self.background.torch_device

    def summary(self) -> str:
        return f"{self.background.summary()}; {self.faces.summary()}"

    def check_size(self, height: int, width: int, outscale: float | None = None) -> None:
        self.background.check_size(height, width, outscale)

    def upscale_array(self, image: np.ndarray, outscale: float | None = None,
                      progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """An image (any layout and dtype the upscaler takes) upscaled, its faces restored."""
        faces = self.faces.detect(image)
        return self.faces.paste(image, self.background.upscale_array(image, outscale, progress), faces)


def enhance(image: np.ndarray, face_model, background=None, *, outscale: float | None = None,
            face_options: FaceOptions | None = None, options: RunOptions | None = None) -> np.ndarray:
    """One image upscaled with its faces restored (builds a :class:`FaceEnhancer`; reuse one for batches)."""
    return FaceEnhancer(face_model, background, face_options, options).upscale_array(image, outscale)
