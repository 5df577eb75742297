"""Face alignment: a similarity transform of the five landmarks onto the FFHQ template, and warps that
keep detail in both directions.

FFHQ (Karras et al., "A Style-Based Generator Architecture for GANs", CVPR 2019) faces are aligned so
that the eyes, nose tip and mouth corners fall near fixed points; face restoration networks (GFPGAN,
RestoreFormer, CodeFormer) are trained on such 512x512 crops. The five-point template below is the one
GFPGAN and CodeFormer align with (facexlib's ``FaceRestoreHelper``), scaled to the network's size.

Points are in pixels with the image spanning [0, W] x [0, H]; OpenCV puts pixel centres on integers,
which :func:`cv2_matrix` accounts for.
"""

from __future__ import annotations

import cv2
import numpy as np

from superres.faces.detect import FaceError

FFHQ_TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                              [201.26117, 371.41043], [313.08905, 371.15118]], np.float32)


def face_transform(landmarks: np.ndarray, size: int = 512) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, translation) taking ``landmarks`` (5 x 2) onto the FFHQ
    template at ``size`` x ``size``, fitted with least median of squares (robust to one bad point)."""
    template = FFHQ_TEMPLATE_512 * (size / 512)
    matrix, _ = cv2.estimateAffinePartial2D(np.asarray(landmarks, np.float32).reshape(5, 2), template,
                                            method=cv2.LMEDS)
    if matrix is None or not np.isfinite(matrix).all() or abs(np.linalg.det(matrix[:, :2])) < 1e-12:
        raise FaceError(f"cannot align a face with landmarks {np.round(landmarks, 1).tolist()}")
    return matrix


def invert(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(matrix)


def cv2_matrix(matrix: np.ndarray) -> np.ndarray:
    """A transform between [0, W] coordinates as OpenCV's warps take it (pixel centres on integers)."""
    a, t = matrix[:, :2], matrix[:, 2]
    return np.concatenate([a, (t + a @ [0.5, 0.5] - 0.5)[:, None]], 1)


def zoom(matrix: np.ndarray) -> float:
    """How many output pixels one input pixel becomes along each axis (a similarity's scale)."""
    return float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))


def warp(image: np.ndarray, matrix: np.ndarray, width: int, height: int, border: int = cv2.BORDER_CONSTANT,
         value: float = 0.0) -> np.ndarray:
    """``image`` through ``matrix`` (a [0, W] similarity) into a width x height array, bilinear; where the
    transform shrinks, the source is first area-averaged to about the output's resolution (no aliasing)."""
    k = zoom(matrix)
    if k < 0.75:  # shrink the part of the source that is looked at with INTER_AREA, then warp what is left
        corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], np.float64)
        src = corners @ invert(matrix).T
        h, w = image.shape[:2]
        x0, y0 = (max(int(np.floor(v)) - 2, 0) for v in src.min(0))
        x1, y1 = min(int(np.ceil(src[:, 0].max())) + 2, w), min(int(np.ceil(src[:, 1].max())) + 2, h)
        if x1 > x0 and y1 > y0:
            part = image[y0:y1, x0:x1]
            size = (max(1, round((x1 - x0) * k)), max(1, round((y1 - y0) * k)))
            small = cv2.resize(part, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], *part.shape[2:])
            sx, sy = size[0] / (x1 - x0), size[1] / (y1 - y0)
            # the matrix from the shrunk part: undo the shrink and the offset, then the original transform
            back = np.array([[1 / sx, 0, x0], [0, 1 / sy, y0], [0, 0, 1]])
            matrix = matrix @ back
            image = small
    out = cv2.warpAffine(image, cv2_matrix(matrix), (width, height), flags=cv2.INTER_LINEAR, borderMode=border,
                         borderValue=(value,) * 4)
    return out.reshape(height, width, *image.shape[2:])
