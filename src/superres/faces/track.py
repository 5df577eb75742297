"""Faces across video frames: detections matched to tracks by box overlap, landmarks smoothed over time,
so that restored faces do not flicker.

Matching: the Hungarian assignment (scipy) on box IoU between this frame's detections and the tracks.
Smoothing: the One Euro filter (Casiez, Roussel & Vogel, "1 Euro Filter: A Simple Speed-based Low-pass
Filter for Noisy Input in Interactive Systems", CHI 2012) on each landmark coordinate: a low-pass whose
cutoff rises with the speed of the face, so a still face is held steady (detector jitter filtered out)
and a moving one is followed with little lag. Speeds are measured in eye distances per frame, so the
same settings suit small and large faces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from superres.faces.detect import Face


def _alpha(cutoff: float) -> float:
    """The exponential smoothing factor of a first-order low-pass at ``cutoff`` cycles per frame."""
    tau = 1 / (2 * math.pi * cutoff)
    return 1 / (1 + tau)


@dataclass
class _Track:
    face: Face  # the smoothed face
    speed: np.ndarray  # smoothed landmark velocity, pixels per frame (5 x 2)
    missed: int = 0
    raw: list[Face] = field(default_factory=list)


class FaceTracker:
    """Smooths the faces of consecutive frames: ``update(detections)`` -> the faces to restore.

    ``min_cutoff``: the cutoff (cycles per frame) for a still face; ``beta``: how fast the cutoff rises
    with speed (per eye distance per frame); ``iou``: the least box overlap that continues a track;
    ``hold``: frames a face is kept at its last place when the detector misses it (no pop-in and out).
    """

    def __init__(self, min_cutoff: float = 0.02, beta: float = 2.0, speed_cutoff: float = 0.5,
                 iou: float = 0.3, hold: int = 2):
        self.min_cutoff, self.beta, self.speed_cutoff = min_cutoff, beta, speed_cutoff
        self.iou, self.hold = iou, hold
        self.tracks: list[_Track] = []

    def update(self, faces: list[Face]) -> list[Face]:
        from scipy.optimize import linear_sum_assignment

        matched: dict[int, int] = {}
        if self.tracks and faces:
            overlap = _iou(np.array([t.face.box for t in self.tracks]), np.array([f.box for f in faces]))
            rows, cols = linear_sum_assignment(-overlap)
            matched = {int(c): int(r) for r, c in zip(rows, cols, strict=True) if overlap[r, c] >= self.iou}
        kept: list[_Track] = []
        for j, face in enumerate(faces):
            if j in matched:
                track = self.tracks[matched[j]]
                self._smooth(track, face)
                track.missed = 0
            else:
                track = _Track(face, np.zeros((5, 2), np.float32))
            kept.append(track)
        taken = set(matched.values())
        for i, track in enumerate(self.tracks):
            if i not in taken and track.missed < self.hold:
                track.missed += 1
                kept.append(track)
        self.tracks = kept
        return [t.face for t in self.tracks]

    def _smooth(self, track: _Track, face: Face) -> None:
        prev = track.face
        eyes = max(float(np.linalg.norm(prev.landmarks[1] - prev.landmarks[0])), 1.0)
        velocity = face.landmarks - prev.landmarks
        a = _alpha(self.speed_cutoff)
        track.speed = a * velocity + (1 - a) * track.speed
        # the face's speed: its landmarks' mean velocity, in which their independent jitter mostly cancels
        cutoff = self.min_cutoff + self.beta * float(np.linalg.norm(track.speed.mean(0))) / eyes
        a = _alpha(cutoff)
        landmarks = (a * face.landmarks + (1 - a) * prev.landmarks).astype(np.float32)
        box = (a * face.box + (1 - a) * prev.box).astype(np.float32)
        track.face = Face(box, landmarks, face.score)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes (x1, y1, x2, y2): len(a) x len(b)."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)
