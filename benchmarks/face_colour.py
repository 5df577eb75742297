"""How restored faces keep the colour of their surroundings: three ways of pasting back, measured.

A stand-in "restorer" makes the errors users report of real ones: a warm tint, a brightness change that
varies across the face (relighting) and sharper detail (an unsharp mask). Each face of real photos
(Set5 woman and BSD200 pictures of people; bicubic x2 background) is restored and pasted back with its
change taken
  none     as it is,
  meanstd  after matching the restored crop's per-channel mean and deviation in CIELAB to the unrestored
           crop's (Reinhard et al.'s colour transfer),
  keep     without its low frequencies (a Gaussian of 1/16 of the crop): superres's default.
Printed per method: the colour deviation left (CIEDE76 of the low-passed difference from the background
over the faces, mean) and the share of the restorer's detail kept (high-frequency energy of the change,
relative to ``none``), and the time per face of the paste-back. Needs ../shared/data.

    PYTHONPATH=src python benchmarks/face_colour.py
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from superres.archs.spec import ModelFacts
from superres.faces import FaceOptions, FaceRestorer, crop_faces
from superres.faces.align import invert, warp
from superres.faces.paste import face_change, feather_mask, paste_changes
from superres.infer import Upscaler
from superres.io import read_rgb8
from superres.ops.layout import to_float
from superres.zoo import ModelDescriptor, load_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PHOTOS = [DATA / "Set5" / "HR" / "woman.png"] + [DATA / "BSD200" / f"{n}.png" for n in
                                                  ("113044", "189003", "246053", "285036", "376001", "65019")]


class Restorer(nn.Module):
    """Tint + relighting across the face + unsharp mask, on N x 3 x S x S in [0, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.shape[-1]
        blur = torch.nn.functional.avg_pool2d(x, 5, 1, 2, count_include_pad=False)
        ramp = torch.linspace(0.08, -0.04, s, dtype=x.dtype)[None, None, None, :]
        tint = torch.tensor([0.05, 0.02, -0.03], dtype=x.dtype)[None, :, None, None]
        return (x + 1.0 * (x - blur) + ramp + tint).clamp(0, 1)


def meanstd_change(restored: np.ndarray, crop: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Reinhard colour transfer of the restored crop onto the unrestored one (CIELAB, inner mask), as a change."""
    r, c = (cv2.cvtColor(to_float(x), cv2.COLOR_RGB2Lab) for x in (restored, crop))
    inner = mask > 0.5
    mr, sr = r[inner].mean(0), r[inner].std(0) + 1e-6
    mc, sc = c[inner].mean(0), c[inner].std(0)
    matched = cv2.cvtColor(((r - mr) / sr * sc + mc).astype(np.float32), cv2.COLOR_Lab2RGB)
    return matched - to_float(crop)


def main() -> None:
    facts = ModelFacts(purpose="face", scale=1, in_channels=3, out_channels=3, size_multiple=512, min_size=512)
    desc = ModelDescriptor(module=Restorer().eval(), arch="Restorer", kwargs={}, facts=facts)
    faces_of = FaceRestorer(desc, FaceOptions())
    background = Upscaler(load_model("bicubic", scale=2))
    size = faces_of.size
    mask512 = feather_mask(size)
    results: dict[str, list] = {m: [] for m in ("none", "meanstd", "keep")}
    detail: dict[str, list] = {m: [] for m in results}
    seconds: dict[str, float] = {m: 0.0 for m in results}
    count = 0
    for path in PHOTOS:
        image = read_rgb8(path)
        faces = faces_of.detect(image)
        if not faces:
            continue
        bg = background.upscale_array(image)
        scaled = [f.scaled(2) for f in faces]
        crops, matrices = crop_faces(bg, scaled, size)
        restored = faces_of.restore(crops)
        count += len(faces)
        region = np.zeros(bg.shape[:2], bool)
        for m in matrices:
            region |= warp(mask512, invert(m), bg.shape[1], bg.shape[0]) > 0.9
        eye = float(np.mean([np.linalg.norm(f.landmarks[1] - f.landmarks[0]) for f in scaled]))
        outs = {}
        for method in results:
            tic = time.perf_counter()
            if method == "meanstd":
                changes = [meanstd_change(r, c, mask512) for r, c in zip(restored, crops, strict=True)]
            else:
                changes = [face_change(r, c, method) for r, c in zip(restored, crops, strict=True)]
            outs[method] = paste_changes(bg, changes, matrices)
            seconds[method] += time.perf_counter() - tic
        lab_bg = cv2.cvtColor(to_float(bg), cv2.COLOR_RGB2Lab)
        hf_none = None
        for method, out in outs.items():
            diff = cv2.cvtColor(to_float(out), cv2.COLOR_RGB2Lab) - lab_bg
            low = cv2.GaussianBlur(diff, (0, 0), eye / 2)
            results[method].append(np.linalg.norm(low, axis=-1)[region].mean())
            change = to_float(out) - to_float(bg)
            hf = change - cv2.GaussianBlur(change, (0, 0), 2)
            energy = float((hf[region] ** 2).sum())
            hf_none = energy if method == "none" else hf_none
            detail[method].append(energy / hf_none)
    print(f"{count} faces in {len(PHOTOS)} photos (bicubic x2 background)")
    print("method    colour deviation (dE76, low-passed)   detail kept   paste-back s/face")
    for method in results:
        print(f"{method:8}  {np.mean(results[method]):8.2f}                              "
              f"{np.mean(detail[method]):6.2f}        {seconds[method] / count:.3f}")


if __name__ == "__main__":
    main()
