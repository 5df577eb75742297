"""Face detection with five landmarks: MTCNN (Zhang, Zhang, Li & Qiao, "Joint Face Detection and Alignment
Using Multitask Cascaded Convolutional Networks", IEEE Signal Processing Letters 23(10), 2016).

Three small networks in cascade: P-Net proposes 12x12 windows over an image pyramid, R-Net rejects and
refines them on 24x24 crops, O-Net refines them again on 48x48 crops and gives five landmarks (the eyes,
the nose tip and the mouth corners). The weights are the authors' Caffe models as converted by the MIT
package facenet-pytorch, read from its wheel as data (``weights_only``; nothing of it is imported and
nothing is downloaded).

Coordinates are in pixels with the image spanning [0, W] x [0, H] (pixel (i, j) covers
[j, j + 1] x [i, i + 1]), so they scale exactly with the image.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from superres.errors import SuperresError
from superres.packages import package_data

INSTALL = "pip install 'facenet-pytorch>=2.5.3,!=2.6.0'"
# The largest first pyramid level (pixels): P-Net keeps about 100 bytes per pixel of it (0.8 GB here), so
# images over ~22 Mpx (at the default smallest face, 20 pixels) are searched at a reduced size.
MAX_LEVEL_PIXELS = 8_000_000


class FaceError(SuperresError, ValueError):
    """A face model, detector or face option that cannot be used (one line for the user)."""


@dataclass(frozen=True)
class Face:
    """A detected face: its box, five landmarks and the detector's confidence."""

    box: np.ndarray  # (x1, y1, x2, y2), float
    landmarks: np.ndarray  # 5 x 2 (x, y): eye, eye, nose tip, mouth corner, mouth corner, left to right in the image
    score: float

    @property
    def size(self) -> float:
        """The box's longer side, in pixels."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    def scaled(self, sx: float, sy: float | None = None) -> Face:
        """The same face in an image resized ``sx`` x (``sy`` x vertically)."""
        s = np.array([sx, sy if sy is not None else sx], np.float32)
        return Face(self.box * np.tile(s, 2), self.landmarks * s, self.score)

    def to_json(self) -> dict:
        return {"box": [round(float(v), 2) for v in self.box],
                "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
                "score": round(self.score, 4)}


def _flatten_whc(x: torch.Tensor) -> torch.Tensor:
    """Flatten N x C x H x W in (W, H, C) order: the converted dense weights expect Caffe's layout."""
    return x.permute(0, 3, 2, 1).flatten(1)


class PNet(nn.Module):
    """The proposal network: fully convolutional, a face score and box offsets per 12x12 window (stride 2)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / not a face
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box offsets

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), self.conv4_1(x).softmax(1)[:, 1]


class RNet(nn.Module):
    """The refinement network, on 24x24 crops: a face score and box offsets."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu4(self.dense4(_flatten_whc(self.prelu3(self.conv3(x)))))
        return self.dense5_2(x), self.dense5_1(x).softmax(1)[:, 1]


class ONet(nn.Module):
    """The output network, on 48x48 crops: a face score, box offsets and five landmarks."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)  # landmarks: five x then five y, relative to the box

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu5(self.dense5(_flatten_whc(self.prelu4(self.conv4(x)))))
        return self.dense6_2(x), self.dense6_3(x), self.dense6_1(x).softmax(1)[:, 1]


@functools.lru_cache(maxsize=4)
def load_mtcnn(device: str = "cpu") -> tuple[PNet, RNet, ONet]:
    """P-, R- and O-Net with their weights, in eval mode on ``device`` (loaded once per process)."""
    nets = []
    for cls, name in ((PNet, "pnet"), (RNet, "rnet"), (ONet, "onet")):
        path = package_data("facenet_pytorch", f"data/{name}.pt")
        if path is None:
            raise FaceError(f"face detection needs the MTCNN weights that ship with facenet-pytorch: {INSTALL}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as e:
            raise FaceError(f"{path}: cannot read the MTCNN weights ({e}); reinstall: {INSTALL}") from None
        net = cls()
        net.load_state_dict(state)
        nets.append(net.to(device).eval())
    return tuple(nets)


class FaceDetector:
    """MTCNN on HxWx3 uint8 RGB images -> :class:`Face` list, most confident first.

    ``min_face``: the smallest face searched for (pixels; the pyramid starts where it is 12 pixels);
    ``thresholds``: the three stages' score thresholds; ``factor``: the pyramid's step. The defaults
    are the paper's code's (20, (0.6, 0.7, 0.7), 0.709).
    """

    def __init__(self, min_face: float = 20, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 factor: float = 0.709, device: str | torch.device = "cpu"):
        if min_face < 12:
            raise FaceError(f"the smallest face MTCNN can search for is 12 pixels, got {min_face}")
        self.min_face, self.thresholds, self.factor = min_face, thresholds, factor
        self.device = torch.device(device)
        self.pnet, self.rnet, self.onet = load_mtcnn(str(self.device))

    def __call__(self, image: np.ndarray) -> list[Face]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"the face detector takes HxWx3 uint8 RGB images, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        if not h or not w:
            return []
        shrink = math.sqrt(MAX_LEVEL_PIXELS / (h * w * (12 / self.min_face) ** 2))
        if shrink < 1:  # P-Net's first pyramid level would need gigabytes: search a smaller copy
            size = (max(1, round(w * shrink)), max(1, round(h * shrink)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            return [f.scaled(w / size[0], h / size[1]) for f in self._detect(small)]
        return self._detect(image)

    def _detect(self, image: np.ndarray) -> list[Face]:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1).float()
            boxes = self._propose(x)
            if len(boxes):
                boxes = self._refine(x, boxes)
            if not len(boxes):
                return []
            boxes, points, scores = self._output(x, boxes)
        boxes[:, :2] -= 1  # the paper's code counts pixels from 1, inclusive; here the image spans [0, W]
        order = np.argsort(-scores, kind="stable")
        return [Face(boxes[i], points[i], float(scores[i])) for i in order]

    def pyramid(self, height: int, width: int) -> list[float]:
        """The scales at which P-Net's 12-pixel window sees faces from ``min_face`` up to the image's size."""
        scales, scale = [], 12 / self.min_face
        while min(height, width) * scale >= 12:
            scales.append(scale)
            scale *= self.factor
        return scales

    # Boxes follow the conventions of the paper's (MATLAB) code, which facenet-pytorch keeps: (x1, y1, x2, y2)
    # are pixel numbers counted from 1 and inclusive, so a box is x2 - x1 + 1 pixels wide.

    def _propose(self, x: torch.Tensor) -> torch.Tensor:
        """Stage 1: K x 5 candidate boxes (x1, y1, x2, y2, score), regressed and made square."""
        h, w = x.shape[-2:]
        found = []
        for scale in self.pyramid(h, w):
            size = (int(h * scale + 1), int(w * scale + 1))
            offsets, prob = self.pnet(_normalize(F.interpolate(x[None], size=size, mode="area")))
            iy, ix = torch.nonzero(prob[0] >= self.thresholds[0], as_tuple=True)
            if not len(iy):
                continue
            # each output cell sees a 12x12 window at stride 2 of the scaled image
            cell = torch.stack([ix, iy], 1).float() * 2
            corners = torch.cat([((cell + 1) / scale).floor(), ((cell + 12) / scale).floor()], 1)
            boxes = torch.cat([corners, prob[0, iy, ix, None], offsets[0, :, iy, ix].T], 1)
            found.append(boxes[nms(boxes[:, :4], boxes[:, 4], 0.5)])
        if not found:
            return torch.zeros(0, 5)
        boxes = torch.cat(found)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        wh = (boxes[:, 2:4] - boxes[:, 0:2]).repeat(1, 2)
        return _square(torch.cat([boxes[:, :4] + boxes[:, 5:9] * wh, boxes[:, 4:5]], 1))

    def _refine(self, x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Stage 2: R-Net keeps and refines the candidates."""
        offsets, prob = self.rnet(_crops(x, boxes, 24))
        keep = prob > self.thresholds[1]
        boxes = torch.cat([boxes[keep, :4], prob[keep, None]], 1)
        offsets = offsets[keep]
        pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
        return _square(torch.cat([_regress(boxes[pick, :4], offsets[pick]), boxes[pick, 4:5]], 1))

    def _output(self, x: torch.Tensor, boxes: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stage 3: O-Net's final boxes, landmarks (the image spanning [0, W]) and scores, numpy."""
        offsets, marks, prob = self.onet(_crops(x, boxes, 48))
        keep = prob > self.thresholds[2]
        boxes, offsets, marks, prob = boxes[keep, :4], offsets[keep], marks[keep], prob[keep]
        wh = boxes[:, 2:4] - boxes[:, 0:2] + 1
        points = torch.stack([marks[:, :5], marks[:, 5:]], 2) * wh[:, None] + boxes[:, None, 0:2] - 1
        boxes = _regress(boxes, offsets)
        pick = _nms_min(boxes, prob, 0.7)  # a box mostly inside a more confident one is a part of that face
        return boxes[pick].cpu().numpy(), points[pick].cpu().numpy(), prob[pick].cpu().numpy()


def _normalize(x: torch.Tensor) -> torch.Tensor:
    """0-255 samples -> the networks' input scale."""
    return (x - 127.5) * 0.0078125


def _regress(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Boxes moved by the networks' offsets, which are fractions of the box's width and height."""
    wh = (boxes[:, 2:4] - boxes[:, 0:2] + 1).repeat(1, 2)
    return boxes + offsets * wh


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes grown to squares of their longer side about their centres (the next stage's crops are square)."""
    wh = boxes[:, 2:4] - boxes[:, 0:2]
    side = wh.max(1, keepdim=True).values
    corner = boxes[:, 0:2] + (wh - side) / 2
    return torch.cat([corner, corner + side, boxes[:, 4:]], 1)


def _crops(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """The boxes' pixels (whole pixels, as the paper's code takes them) resized to size x size by area
    averaging (the bins of ``adaptive_avg_pool2d``), normalized; all boxes at once, from one summed-area
    table. Parts outside the image are black, as in the paper's code (facenet-pytorch squeezes the part
    inside instead, which misplaces the landmarks of faces larger than the image)."""
    _, h, w = x.shape
    table = F.pad(x.double().cumsum(1).cumsum(2), (1, 0, 1, 0))  # zero-padded: clamping indices extends it
    corners = boxes[:, :4].trunc().long()
    start = corners[:, :2] - 1  # 0-based first pixel; the ends are exclusive
    extent = (corners[:, 2:4] - start).clamp(min=1)
    i = torch.arange(size, device=x.device)
    lo = start[:, None, :] + (i[None, :, None] * extent[:, None, :]).div(size, rounding_mode="floor")
    hi = start[:, None, :] + ((i[None, :, None] + 1) * extent[:, None, :] + size - 1).div(size, rounding_mode="floor")
    area = ((hi[..., 1] - lo[..., 1])[:, :, None] * (hi[..., 0] - lo[..., 0])[:, None, :]).double()
    x0, x1 = lo[..., 0].clamp(0, w)[:, None, :], hi[..., 0].clamp(0, w)[:, None, :]
    y0, y1 = lo[..., 1].clamp(0, h)[:, :, None], hi[..., 1].clamp(0, h)[:, :, None]
    total = table[:, y1, x1] - table[:, y0, x1] - table[:, y1, x0] + table[:, y0, x0]
    return _normalize((total / area).float().transpose(0, 1))


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """torchvision's non-maximum suppression, imported when first needed (torchvision.ops imports TorchDynamo:
    seconds that a command without faces should not pay)."""
    from torchvision.ops import nms as torchvision_nms

    return torchvision_nms(boxes, scores, threshold)


def _nms_min(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy suppression by intersection over the smaller box's area (MTCNN's last step)."""
    if not len(boxes):
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    lo = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    hi = torch.minimum(boxes[:, None, 2:4], boxes[None, :, 2:4])
    inter = (hi - lo + 1).clamp(min=0).prod(-1)
    area = (boxes[:, 2:4] - boxes[:, :2] + 1).prod(-1)
    overlap = inter / torch.minimum(area[:, None], area[None, :])
    kept: list[int] = []
    for i in torch.argsort(scores, descending=True).tolist():
        if all(overlap[i, j] <= threshold for j in kept):
            kept.append(i)
    return torch.tensor(kept, dtype=torch.long, device=boxes.device)
