"""Real-ESRGAN degradations on the CPU: ours against the official implementation, side by side.

One batch of 12 GT patches of 256x256 (crops of real photos), x4, the official settings
(``train_realesrgan_x4plus.yml``). The reference is what Real-ESRGAN runs per batch: its dataset's
kernel sampling for each image (BasicSR 1.4.2 ``random_mixed_kernels`` / ``circular_lowpass_kernel``)
and the body of ``RealESRGANModel.feed_data`` (USM sharpening, ``filter2D``, resizes, BasicSR's
noise functions, ``DiffJPEG``), written out here with BasicSR's functions because the model class
insists on CUDA. Ours is :func:`superres.data.degradations.degrade` plus :func:`usm_sharpen`,
kernel sampling included. Prints the median time of each over several batches and the ratio.

    python benchmarks/degradation_speed.py [--repeats 7] [--threads 2] [--images ../shared/data/BSD200]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

OPT = {"resize_prob": [0.2, 0.7, 0.1], "resize_range": [0.15, 1.5], "gaussian_noise_prob": 0.5,
       "noise_range": [1, 30], "poisson_scale_range": [0.05, 3], "gray_noise_prob": 0.4, "jpeg_range": [30, 95],
       "second_blur_prob": 0.8, "resize_prob2": [0.3, 0.4, 0.3], "resize_range2": [0.3, 1.2],
       "gaussian_noise_prob2": 0.5, "noise_range2": [1, 25], "poisson_scale_range2": [0.05, 2.5],
       "gray_noise_prob2": 0.4, "jpeg_range2": [30, 95], "scale": 4}
KERNELS = ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]
PROBS = [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]


def patches(folder: Path, n: int = 12, size: int = 256) -> torch.Tensor:
    from superres.io import list_images, read_rgb8

    rng = np.random.default_rng(0)
    out = []
    for f in list_images(folder)[:n]:
        img = read_rgb8(f)
        top, left = rng.integers(0, img.shape[0] - size + 1), rng.integers(0, img.shape[1] - size + 1)
        out.append(img[top:top + size, left:left + size])
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous().float() / 255


def official_kernels(sigma: tuple[float, float]) -> np.ndarray:
    """One kernel the way RealESRGANDataset.__getitem__ samples it (kernel sizes 7..21, padded to 21)."""
    from basicsr.data.degradations import circular_lowpass_kernel, random_mixed_kernels

    size = random.choice([2 * v + 1 for v in range(3, 11)])
    if np.random.uniform() < 0.1:
        omega = np.random.uniform(np.pi / 3, np.pi) if size < 13 else np.random.uniform(np.pi / 5, np.pi)
        kernel = circular_lowpass_kernel(omega, size, pad_to=False)
    else:
        kernel = random_mixed_kernels(KERNELS, PROBS, size, sigma, sigma, [-math.pi, math.pi], [0.5, 4], [1, 2],
                                      noise_range=None)
    pad = (21 - size) // 2
    return np.pad(kernel, ((pad, pad), (pad, pad)))


def official(gt: torch.Tensor, jpeger, usm) -> torch.Tensor:
    """Real-ESRGAN's per-batch synthesis: dataset kernels + RealESRGANModel.feed_data (no crop, no pool)."""
    from basicsr.data.degradations import (
        circular_lowpass_kernel,
        random_add_gaussian_noise_pt,
        random_add_poisson_noise_pt,
    )
    from basicsr.utils.img_process_util import filter2D

    b = gt.shape[0]
    kernel1 = torch.FloatTensor(np.stack([official_kernels((0.2, 3)) for _ in range(b)]))
    kernel2 = torch.FloatTensor(np.stack([official_kernels((0.2, 1.5)) for _ in range(b)]))
    sinc = []
    for _ in range(b):
        if np.random.uniform() < 0.8:
            size = random.choice([2 * v + 1 for v in range(3, 11)])
            sinc.append(circular_lowpass_kernel(np.random.uniform(np.pi / 3, np.pi), size, pad_to=21))
        else:
            pulse = np.zeros((21, 21))
            pulse[10, 10] = 1
            sinc.append(pulse)
    sinc_kernel = torch.FloatTensor(np.stack(sinc))

    o = OPT
    gt_usm = usm(gt)
    h, w = gt.shape[2:]
    out = filter2D(gt_usm, kernel1)
    for stage in ("", "2"):
        if stage == "2" and np.random.uniform() < o["second_blur_prob"]:
            out = filter2D(out, kernel2)
        updown = random.choices(["up", "down", "keep"], o["resize_prob" + stage])[0]
        low, high = o["resize_range" + stage]
        scale = np.random.uniform(1, high) if updown == "up" else np.random.uniform(low, 1) if updown == "down" else 1
        mode = random.choice(["area", "bilinear", "bicubic"])
        if stage == "":
            out = F.interpolate(out, scale_factor=scale, mode=mode)
        else:
            out = F.interpolate(out, size=(int(h / o["scale"] * scale), int(w / o["scale"] * scale)), mode=mode)
        if np.random.uniform() < o["gaussian_noise_prob" + stage]:
            out = random_add_gaussian_noise_pt(out, sigma_range=o["noise_range" + stage], clip=True, rounds=False,
                                               gray_prob=o["gray_noise_prob" + stage])
        else:
            out = random_add_poisson_noise_pt(out, scale_range=o["poisson_scale_range" + stage],
                                              gray_prob=o["gray_noise_prob" + stage], clip=True, rounds=False)
        if stage == "":
            # .contiguous(): on torch 2.14 DiffJPEG returns a strided view that filter2D's .view rejects
            out = jpeger(torch.clamp(out, 0, 1), quality=out.new_zeros(b).uniform_(*o["jpeg_range"])).contiguous()
    quality = out.new_zeros(b).uniform_(*o["jpeg_range2"])
    size = (h // o["scale"], w // o["scale"])
    if np.random.uniform() < 0.5:
        out = F.interpolate(out, size=size, mode=random.choice(["area", "bilinear", "bicubic"]))
        out = jpeger(torch.clamp(filter2D(out, sinc_kernel), 0, 1), quality=quality)
    else:
        out = jpeger(torch.clamp(out, 0, 1), quality=quality).contiguous()
        out = F.interpolate(out, size=size, mode=random.choice(["area", "bilinear", "bicubic"]))
        out = filter2D(out, sinc_kernel)
    return torch.clamp((out * 255.0).round(), 0, 255) / 255.0


def ours(gt: torch.Tensor, seed: int) -> torch.Tensor:
    from superres.data.degradations import RealDegradation, degrade, usm_sharpen

    return degrade(usm_sharpen(gt), 4, RealDegradation(), seed)


def median_time(fn, repeats: int) -> float:
    fn(0)  # warm-up
    times = []
    for i in range(repeats):
        tic = time.perf_counter()
        fn(i + 1)
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=Path, default=Path(__file__).parents[1] / "../shared/data/BSD200")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import torchvision.transforms.functional as functional

    sys.modules.setdefault("torchvision.transforms.functional_tensor", functional)  # BasicSR 1.4.2 on new torchvision
    from basicsr.utils import DiffJPEG, USMSharp

    gt = patches(args.images)
    jpeger, usm = DiffJPEG(differentiable=False), USMSharp()

    def reference(i: int) -> None:
        random.seed(i)
        np.random.seed(i)
        torch.manual_seed(i)
        with torch.no_grad():
            official(gt, jpeger, usm)

    def mine(i: int) -> None:
        with torch.no_grad():
            ours(gt, i)

    t_ref, t_ours = median_time(reference, args.repeats), median_time(mine, args.repeats)
    print(f"batch {tuple(gt.shape)}, x4, {args.threads} threads, median of {args.repeats}")
    print(f"Real-ESRGAN (BasicSR 1.4.2 + DiffJPEG): {t_ref * 1000:8.1f} ms")
    print(f"superres degrade + usm_sharpen:         {t_ours * 1000:8.1f} ms")
    print(f"ratio (reference / ours): {t_ref / t_ours:.2f}x")


if __name__ == "__main__":
    main()
