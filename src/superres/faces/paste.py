"""Paste restored faces back into the upscaled image: what the restorer changed, inverse-warped and blended
with a feathered mask, so that nothing outside the faces changes and no crop edge shows.

Each face adds ``strength x mask x (restored - unrestored)`` to the background, where the unrestored face
is the very crop the restorer was given. A restorer that changes nothing therefore leaves the background
exactly as it was (alignment, warps and blending lose nothing), ``strength`` 0 is the background and 1 the
full restoration. Where the masks of neighbouring faces overlap, their changes are averaged by mask weight
rather than added.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from superres.faces.align import invert, warp
from superres.ops.layout import from_float, to_float

COLOR_MODES = ("keep", "none")


@functools.lru_cache(maxsize=8)
def feather_mask(size: int) -> np.ndarray:
    """A size x size float32 mask: 1 in the middle, falling smoothly to exactly 0 at the crop's edge
    (a square eroded by a tenth of the size, blurred within that margin)."""
    margin = max(2, size // 10)
    mask = np.zeros((size, size), np.float32)
    mask[margin:size - margin, margin:size - margin] = 1
    radius = margin - 1
    mask = cv2.GaussianBlur(mask, (2 * radius + 1, 2 * radius + 1), radius / 3, borderType=cv2.BORDER_CONSTANT)
    mask.setflags(write=False)
    return mask


def face_change(restored: np.ndarray, crop: np.ndarray, color: str = "keep") -> np.ndarray:
    """What the restorer changed, float32 HxWx3 (restored - crop, both of the crop's dtype).

    ``color="keep"``: the change's low frequencies (below a Gaussian of a sixteenth of the crop's size) are
    dropped, so the face keeps the unrestored face's colour and shading, which match its surroundings,
    and takes only the restored detail; ``"none"``: the change as it is.
    """
    change = to_float(restored) - to_float(crop)
    if color == "keep":
        sigma = crop.shape[0] / 16
        change -= cv2.GaussianBlur(change, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    elif color != "none":
        raise ValueError(f"color must be one of {', '.join(COLOR_MODES)}, got {color!r}")
    return change


def paste_changes(background: np.ndarray, changes: list[np.ndarray], matrices: list[np.ndarray],
                  strength: float = 1.0) -> np.ndarray:
    """``background`` (HxWxC, any dtype; C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA) with each face's
    ``change`` (S x S x 3, float) put back through the inverse of its ``matrix`` (background -> crop) and
    blended by its feathered mask. Colour channels change, alpha does not. Returns a new array."""
    out = background.copy()
    if not changes or strength == 0:
        return out
    h, w = background.shape[:2]
    gray = background.shape[2] <= 2
    placed = []
    for change, matrix in zip(changes, matrices, strict=True):
        size = change.shape[0]
        back = invert(matrix)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ back.T
        x0, y0 = (max(int(np.floor(v)), 0) for v in corners.min(0))
        x1, y1 = min(int(np.ceil(corners[:, 0].max())), w), min(int(np.ceil(corners[:, 1].max())), h)
        if x1 <= x0 or y1 <= y0:
            continue  # the face's crop lies outside the image
        mask = feather_mask(size)
        if gray:  # the change of the gray level: the same weights as the RGB -> gray conversion
            change = cv2.cvtColor(change, cv2.COLOR_RGB2GRAY)[..., None]
        weighted = np.concatenate([change * mask[..., None], mask[..., None]], 2)
        to_roi = back.copy()
        to_roi[:, 2] -= (x0, y0)
        placed.append(((x0, y0, x1, y1), warp(weighted, to_roi, x1 - x0, y1 - y0)))
    channels = 1 if gray else 3
    for group in _overlapping(placed):
        _blend(out, group, channels, strength)
    return out


def _overlapping(placed: list) -> list[list]:
    """The placed faces in groups whose rectangles overlap (directly or through others): each group is
    blended in its own bounding box, so faces far apart never need a buffer spanning the image."""
    groups: list[list] = []
    for item in placed:
        (x0, y0, x1, y1), _ = item
        joined = [g for g in groups if any(x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1 for b, _ in g)]
        merged = [item] + [p for g in joined for p in g]
        groups = [g for g in groups if all(g is not j for j in joined)] + [merged]
    return groups


def _blend(out: np.ndarray, group: list, channels: int, strength: float) -> None:
    """Add a group's mask-weighted changes (averaged where masks overlap) to ``out`` in place."""
    ux0, uy0 = min(p[0][0] for p in group), min(p[0][1] for p in group)
    ux1, uy1 = max(p[0][2] for p in group), max(p[0][3] for p in group)
    total = np.zeros((uy1 - uy0, ux1 - ux0, channels + 1), np.float32)
    for (x0, y0, x1, y1), part in group:
        total[y0 - uy0:y1 - uy0, x0 - ux0:x1 - ux0] += part.reshape(y1 - y0, x1 - x0, channels + 1)
    weight = np.maximum(total[..., -1:], 1)
    region = out[uy0:uy1, ux0:ux1, :channels]
    touched = total[..., -1] > 0  # only pixels under some mask are converted, so the others stay bit-exact
    value = to_float(region[touched]) + np.float32(strength) * total[touched][:, :channels] / weight[touched]
    region[touched] = from_float(value, out.dtype)
