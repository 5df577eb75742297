"""Real-ESRGAN's high-order degradation model, batched in torch so it runs on the training device.

Wang, Xie, Dong and Shan, "Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure
Synthetic Data", ICCVW 2021, Sec. 3. The ground truth is sharpened (USM), then degraded twice by
blur -> random resize -> Gaussian or Poisson noise -> JPEG, and finally resized to the LR size
with a 2-D sinc filter, before or after a last JPEG. The defaults of :class:`RealDegradation`
are the values of the official ``options/train_realesrgan_x4plus.yml``.

Every random choice is drawn from one ``torch.Generator``, so a batch is a function of its seed.
Choices the official code makes once per batch only because it was convenient (whether the
second blur happens, Gaussian or Poisson noise) are made per image here: each image sees the
same distribution, and a batch holds more variety. The resize scale and the order of the final
steps stay per batch, since they set the tensor size; :class:`PairPool` (the official "training
pair pool") mixes batches to make up for it.
"""

from __future__ import annotations

import math
import os
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from superres.config import ConfigError, Strict, read_yaml, validate
from superres.data.jpeg import jpeg

KernelType = Literal["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]
KERNEL_TYPES: tuple[str, ...] = KernelType.__args__
MAX_KERNEL = 21  # every kernel is padded to 21x21, the official largest size


class BlurSettings(Strict):
    """How one stage samples its blur kernel (Real-ESRGAN Sec. 3.1, "Blur")."""

    kernel_list: list[KernelType] = Field(list(KERNEL_TYPES))
    kernel_prob: list[float] = Field([0.45, 0.25, 0.12, 0.03, 0.12, 0.03])
    sinc_prob: float = Field(0.1, ge=0, le=1, description="probability of a 2-D sinc kernel instead")
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    kernel_sizes: list[int] = Field([7, 9, 11, 13, 15, 17, 19, 21], description="odd sizes up to 21")

    @model_validator(mode="after")
    def _consistent(self) -> BlurSettings:
        if len(self.kernel_list) != len(self.kernel_prob):
            raise ValueError("kernel_list and kernel_prob must have the same length")
        if any(k % 2 == 0 or not 1 <= k <= MAX_KERNEL for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd and at most {MAX_KERNEL}")
        return self


class StageSettings(Strict):
    """One degradation pass: blur, resize, noise, JPEG (Real-ESRGAN Sec. 3.1-3.2)."""

    blur: BlurSettings = Field(default_factory=BlurSettings)
    blur_prob: float = Field(1.0, ge=0, le=1)
    resize_prob: tuple[float, float, float] = Field((0.2, 0.7, 0.1), description="up, down, keep")
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = Field(0.5, ge=0, le=1, description="otherwise Poisson noise")
    noise_range: tuple[float, float] = Field((1.0, 30.0), description="Gaussian sigma, in 8-bit levels")
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = Field(0.4, ge=0, le=1)
    jpeg_range: tuple[float, float] = (30.0, 95.0)


def _second_stage() -> StageSettings:
    return StageSettings(blur=BlurSettings(blur_sigma=(0.2, 1.5)), blur_prob=0.8, resize_prob=(0.3, 0.4, 0.3),
                         resize_range=(0.3, 1.2), noise_range=(1.0, 25.0), poisson_scale_range=(0.05, 2.5))


class RealDegradation(Strict):
    """The whole pipeline; defaults are the official ``train_realesrgan_x4plus.yml``."""

    first: StageSettings = Field(default_factory=StageSettings)
    second: StageSettings = Field(default_factory=_second_stage)
    final_sinc_prob: float = Field(0.8, ge=0, le=1)
    usm_weight: float = 0.5
    usm_radius: int = Field(50, gt=0)
    usm_threshold: float = Field(10.0, description="in 8-bit levels")
    usm_pixel: bool = Field(True, description="pixel loss against the sharpened ground truth (l1_gt_usm)")
    usm_perceptual: bool = Field(True, description="perceptual loss against it (percep_gt_usm)")
    usm_gan: bool = Field(False, description="discriminator's real images sharpened (gan_gt_usm)")
    gt_size: int | None = Field(None, gt=0, description="crop the degraded pair to this HR size "
                                "(the official 400 -> 256); none: keep the dataset's patch")
    queue_size: int = Field(180, ge=0, description="training pair pool size; 0 disables it")


def read_real_settings(path: str | os.PathLike | None) -> RealDegradation:
    """The paper's settings (``None``), the ``data.real`` section of a training config (its ``base``
    files merged), or a YAML file of just those keys."""
    if path is None:
        return RealDegradation()
    data = read_yaml(path)
    if "data" not in data:  # no setting is named data: a file of the settings themselves
        return validate(RealDegradation, data, path)
    section = data["data"]
    if not isinstance(section, dict) or section.get("real") is None:
        raise ConfigError(f"{path}: data.real: not set (the config makes no real degradations)")
    return validate(RealDegradation, section["real"], path, ("data", "real"))


# --- blur kernels (Sec. 3.1) -------------------------------------------------------------------


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float64) * (high - low) + low


def _pick(n: int, choices, generator: torch.Generator | None) -> torch.Tensor:
    return torch.tensor(choices)[torch.randint(len(choices), (n,), generator=generator)]


def _grid(size: int = MAX_KERNEL) -> tuple[torch.Tensor, torch.Tensor]:
    ax = torch.arange(size, dtype=torch.float64) - size // 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    return xx, yy


def _inside(size: torch.Tensor) -> torch.Tensor:
    """(n, 21, 21) masks of each kernel's centred size x size window (smaller kernels are zero-padded)."""
    xx, yy = _grid()
    half = (size // 2)[:, None, None]
    return (xx.abs() <= half) & (yy.abs() <= half)


def gaussian_family_kernels(kind: torch.Tensor, sigma_x: torch.Tensor, sigma_y: torch.Tensor, theta: torch.Tensor,
                            beta: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Normalised (n, 21, 21) kernels from the quadratic form Q = p^T S^-1 p of a rotated covariance S.

    ``kind`` 0: Gaussian exp(-Q/2); 1: generalized Gaussian exp(-Q^beta/2); 2: plateau 1/(1 + Q^beta).
    """
    xx, yy = _grid()
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    u = cos * xx + sin * yy  # coordinates along the rotated axes
    v = -sin * xx + cos * yy
    q = (u / sigma_x[:, None, None]) ** 2 + (v / sigma_y[:, None, None]) ** 2
    kind, beta = kind[:, None, None], beta[:, None, None]
    qb = q ** torch.where(kind == 0, torch.ones_like(beta), beta)
    k = torch.where(kind == 2, 1 / (qb + 1), torch.exp(-0.5 * qb))
    k = k * _inside(size)
    return (k / k.sum((1, 2), keepdim=True)).float()


def sinc_kernels(cutoff: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Normalised circular low-pass (2-D sinc) kernels: ringing and overshoot (Sec. 3.1, "sinc filter")."""
    xx, yy = _grid()
    r = torch.sqrt(xx ** 2 + yy ** 2)
    wc = cutoff[:, None, None]
    k = wc * torch.special.bessel_j1(wc * r) / (2 * math.pi * r.clamp_min(1e-12))
    k = torch.where(r == 0, wc ** 2 / (4 * math.pi), k) * _inside(size)
    return (k / k.sum((1, 2), keepdim=True)).float()


def sample_kernels(n: int, blur: BlurSettings, generator: torch.Generator | None = None,
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """n random blur kernels (n, 21, 21) as the official dataset samples them, and their parameters.

    The parameters (``type``: index into ``kernel_list`` or -1 for sinc, ``size``, ``sigma_x``,
    ``sigma_y``, ``theta``, ``beta``, ``cutoff``) are returned for inspection and tests.
    """
    size = _pick(n, blur.kernel_sizes, generator)
    is_sinc = torch.rand(n, generator=generator) < blur.sinc_prob
    kind_index = torch.multinomial(torch.tensor(blur.kernel_prob, dtype=torch.float64), n, replacement=True,
                                   generator=generator)
    names = [blur.kernel_list[i] for i in kind_index.tolist()]
    aniso = torch.tensor([name.endswith("aniso") for name in names])
    family = torch.tensor([0 if name in ("iso", "aniso") else 1 if name.startswith("generalized") else 2
                           for name in names])
    sigma_x = _uniform(n, *blur.blur_sigma, generator)
    sigma_y = torch.where(aniso, _uniform(n, *blur.blur_sigma, generator), sigma_x)
    theta = torch.where(aniso, _uniform(n, -math.pi, math.pi, generator), torch.zeros(n, dtype=torch.float64))
    # the official shape parameter: half the time below 1, half above (plateau: [1, 1] then [1, 2])
    low = torch.rand(n, generator=generator) < 0.5
    beta_range = torch.tensor([blur.betag_range if f == 1 else blur.betap_range for f in family.tolist()],
                              dtype=torch.float64).reshape(n, 2)
    t = torch.rand(n, generator=generator, dtype=torch.float64)
    beta = torch.where(low, beta_range[:, 0] + t * (1 - beta_range[:, 0]), 1 + t * (beta_range[:, 1] - 1))
    # sinc cut-off: wider kernels may be blurrier (the official ranges for sizes 7..21)
    lowest = torch.where(size < 13, math.pi / 3, math.pi / 5).double()
    cutoff = lowest + _uniform(n, 0, 1, generator) * (math.pi - lowest)
    kernels = torch.where(is_sinc[:, None, None], sinc_kernels(cutoff, size),
                          gaussian_family_kernels(family, sigma_x, sigma_y, theta, beta, size))
    params = {"type": torch.where(is_sinc, -1, kind_index), "size": size, "sigma_x": sigma_x, "sigma_y": sigma_y,
              "theta": theta, "beta": beta, "cutoff": cutoff}
    return kernels, params


def final_sinc_kernels(n: int, prob: float, sizes: list[int], generator: torch.Generator | None = None,
                       ) -> torch.Tensor:
    """The last filter: with probability ``prob`` a sinc kernel (cut-off in [pi/3, pi]), else identity."""
    size = _pick(n, sizes, generator)
    cutoff = _uniform(n, math.pi / 3, math.pi, generator)
    use = torch.rand(n, generator=generator) < prob
    pulse = torch.zeros(n, MAX_KERNEL, MAX_KERNEL)
    pulse[:, MAX_KERNEL // 2, MAX_KERNEL // 2] = 1
    return torch.where(use[:, None, None], sinc_kernels(cutoff, size), pulse)


def _pad(img: torch.Tensor, r: int) -> torch.Tensor:
    """Reflect padding (OpenCV's BORDER_REFLECT_101), or edge replication for images too small for it."""
    return F.pad(img, (r,) * 4, mode="reflect" if r < min(img.shape[-2:]) else "replicate")


def filter2d(img: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Filter image i of (B, C, H, W) with kernel i of (B, k, k) (or one (k, k) kernel), reflect padding.

    A correlation, as ``cv2.filter2D`` and the official ``filter2D`` compute it.
    """
    b, c, h, w = img.shape
    k = kernels.shape[-1]
    padded = _pad(img, k // 2)
    weight = kernels.to(img).reshape(-1, 1, k, k)
    if weight.shape[0] == 1:
        return F.conv2d(padded.reshape(b * c, 1, h + k - 1, w + k - 1), weight).reshape(b, c, h, w)
    weight = weight.repeat_interleave(c, 0)
    return F.conv2d(padded.reshape(1, b * c, h + k - 1, w + k - 1), weight, groups=b * c).reshape(b, c, h, w)


# --- USM sharpening of the ground truth (Sec. 4.2) ---------------------------------------------


def _gaussian_1d(radius: int) -> torch.Tensor:
    """OpenCV's getGaussianKernel(size, 0): sigma = 0.3 ((size - 1) / 2 - 1) + 0.8."""
    size = radius + 1 if radius % 2 == 0 else radius
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return (g / g.sum()).float()


def _separable_blur(img: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Each channel of each image blurred by g (x) g; depthwise convolutions (4x faster on CPU than a batch)."""
    b, c, h, w = img.shape
    r = g.numel() // 2
    x = _pad(img.reshape(1, b * c, h, w), r)
    g = g.to(img).expand(b * c, -1)
    x = F.conv2d(x, g.reshape(b * c, 1, -1, 1), groups=b * c)
    return F.conv2d(x, g.reshape(b * c, 1, 1, -1), groups=b * c).reshape(b, c, h, w)


def usm_sharpen(img: torch.Tensor, weight: float = 0.5, radius: int = 50, threshold: float = 10) -> torch.Tensor:
    """Unsharp masking where the detail exceeds ``threshold`` (8-bit levels), with a soft mask.

    The Gaussian (OpenCV's default sigma for the size) is separable, so this is two 1-D passes.
    """
    g = _gaussian_1d(radius)
    residual = img - _separable_blur(img, g)
    mask = (residual.abs() * 255 > threshold).to(img.dtype)
    soft = _separable_blur(mask, g)
    sharp = (img + weight * residual).clamp(0, 1)
    return soft * sharp + (1 - soft) * img


# --- noise (Sec. 3.1, "Noise") -----------------------------------------------------------------


def _per_image(x: torch.Tensor) -> torch.Tensor:
    return x.view(-1, 1, 1, 1)


def gaussian_noise(img: torch.Tensor, sigma: torch.Tensor, gray: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Additive Gaussian noise of std ``sigma[i]`` / 255; where ``gray[i]``, the same noise in all channels."""
    noise = torch.empty_like(img)
    _, c, h, w = img.shape
    mono, color = gray.nonzero()[:, 0], (~gray).nonzero()[:, 0]
    noise[mono] = torch.randn((len(mono), 1, h, w), generator=generator, device=img.device,
                              dtype=img.dtype).expand(-1, c, -1, -1)
    noise[color] = torch.randn((len(color), c, h, w), generator=generator, device=img.device, dtype=img.dtype)
    return img + noise * _per_image(sigma.to(img)) / 255


def _levels(img8: torch.Tensor) -> torch.Tensor:
    """2^ceil(log2(number of distinct 8-bit values)) of each image: the official photon-count scale."""
    b = img8.shape[0]
    offsets = 256 * torch.arange(b, device=img8.device)[:, None]
    codes = (img8 * 255).round().long().clamp(0, 255).flatten(1) + offsets
    distinct = (torch.bincount(codes.reshape(-1), minlength=256 * b).reshape(b, 256) > 0).sum(1)
    return _per_image(2.0 ** torch.ceil(torch.log2(distinct.double()))).to(img8)


def poisson_noise(img: torch.Tensor, scale: torch.Tensor, gray: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Shot noise: Poisson counts at each image's level scale, times ``scale[i]``.

    Where ``gray[i]`` the noise is drawn once from the luma and added to every channel.
    """
    def shot(x: torch.Tensor) -> torch.Tensor:
        x = (x * 255).round().clamp(0, 255) / 255
        vals = _levels(x)
        return torch.poisson(x * vals, generator=generator) / vals - x

    noise = torch.empty_like(img)
    mono, color = gray.nonzero()[:, 0], (~gray).nonzero()[:, 0]
    luma = 0.2989 * img[mono, :1] + 0.587 * img[mono, 1:2] + 0.114 * img[mono, 2:]
    noise[mono] = shot(luma).expand(-1, img.shape[1], -1, -1)
    noise[color] = shot(img[color])
    return img + noise * _per_image(scale.to(img))


# --- the pipeline ------------------------------------------------------------------------------


def _resize(img: torch.Tensor, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    mode = ("area", "bilinear", "bicubic")[int(torch.randint(3, (1,), generator=generator))]
    return F.interpolate(img, size=size, mode=mode)


def sample_stage(n: int, stage: StageSettings, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The per-image random parameters of one pass: kernels (identity where the blur is skipped),
    noise kind, Gaussian sigma (8-bit levels), Poisson scale, gray noise, JPEG quality."""
    kernels, _ = sample_kernels(n, stage.blur, generator)
    skip = torch.rand(n, generator=generator) >= stage.blur_prob
    kernels[skip] = 0
    kernels[skip, MAX_KERNEL // 2, MAX_KERNEL // 2] = 1
    return {"kernels": kernels, "sigma": _uniform(n, *stage.noise_range, generator),
            "poisson_scale": _uniform(n, *stage.poisson_scale_range, generator),
            "gray": torch.rand(n, generator=generator) < stage.gray_noise_prob,
            "gaussian": torch.rand(n, generator=generator) < stage.gaussian_noise_prob,
            "quality": _uniform(n, *stage.jpeg_range, generator)}


def _stage(out: torch.Tensor, stage: StageSettings, size: tuple[int, int], cpu: torch.Generator,
           gen: torch.Generator) -> torch.Tensor:
    """One pass: blur, resize to ``size``, Gaussian or Poisson noise, JPEG."""
    p = {k: v.to(out.device) for k, v in sample_stage(out.shape[0], stage, cpu).items()}
    out = _resize(filter2d(out, p["kernels"]), size, cpu)
    noisy = torch.empty_like(out)
    g, q = p["gaussian"].nonzero()[:, 0], (~p["gaussian"]).nonzero()[:, 0]
    noisy[g] = gaussian_noise(out[g], p["sigma"][g], p["gray"][g], gen)
    noisy[q] = poisson_noise(out[q], p["poisson_scale"][q], p["gray"][q], gen)
    return jpeg(noisy.clamp(0, 1), p["quality"])


def _random_size(h: float, w: float, stage: StageSettings, cpu: torch.Generator) -> tuple[int, int]:
    """The official random resize: up, down or keep with ``resize_prob``, then a uniform scale."""
    direction = int(torch.multinomial(torch.tensor(stage.resize_prob), 1, generator=cpu))
    low, high = stage.resize_range
    s = float(_uniform(1, *((1.0, high), (low, 1.0), (1.0, 1.0))[direction], cpu))
    return max(1, int(h * s)), max(1, int(w * s))


def degrade(gt_usm: torch.Tensor, scale: int, settings: RealDegradation, seed: int) -> torch.Tensor:
    """The LR images (B, 3, H/scale, W/scale) made from sharpened ground truth (B, 3, H, W) in [0, 1].

    Everything random follows ``seed``: the same seed and input give the same output. The result
    is rounded to 8-bit levels, as the official pipeline ends.
    """
    cpu = torch.Generator().manual_seed(seed)
    gen = torch.Generator(gt_usm.device).manual_seed(seed + 1)
    h, w = gt_usm.shape[-2:]
    out = _stage(gt_usm, settings.first, _random_size(h, w, settings.first, cpu), cpu, gen)
    h2, w2 = _random_size(h / scale, w / scale, settings.second, cpu)
    out = _stage(out, settings.second, (h2, w2), cpu, gen)
    n = out.shape[0]
    sinc = final_sinc_kernels(n, settings.final_sinc_prob, settings.first.blur.kernel_sizes, cpu).to(out.device)
    quality = _uniform(n, *settings.second.jpeg_range, cpu).to(out.device)
    lr_size = (h // scale, w // scale)
    if torch.rand(1, generator=cpu) < 0.5:  # [resize back + sinc] then JPEG
        out = jpeg(filter2d(_resize(out, lr_size, cpu), sinc).clamp(0, 1), quality)
    else:  # JPEG then [resize back + sinc]
        out = filter2d(_resize(jpeg(out, quality), lr_size, cpu), sinc)
    return (out * 255).round().clamp(0, 255) / 255


def degrade_real(hr: np.ndarray, scale: int, settings: RealDegradation, seed: int) -> np.ndarray:
    """The LR image (uint8 H/scale x W/scale x 3) of one whole uint8 RGB image whose sides are multiples
    of ``scale``, degraded as training degrades its patches: USM sharpening, then :func:`degrade`."""
    from superres.ops.layout import from_float, to_image, to_tensor

    gt = to_tensor(hr)[None]
    with torch.no_grad():
        lr = degrade(usm_sharpen(gt, settings.usm_weight, settings.usm_radius, settings.usm_threshold), scale,
                     settings, seed)
    return from_float(to_image(lr[0]), np.uint8)


def paired_random_crop(hr: list[torch.Tensor], lr: torch.Tensor, gt_size: int, scale: int,
                       generator: torch.Generator) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The same random aligned crop (HR side ``gt_size``) of a batch of HR tensors and their LR."""
    lp = gt_size // scale
    h, w = lr.shape[-2:]
    if h < lp or w < lp:
        raise ValueError(f"the LR patch {w}x{h} is smaller than gt_size / scale = {lp}")
    top = int(torch.randint(h - lp + 1, (1,), generator=generator))
    left = int(torch.randint(w - lp + 1, (1,), generator=generator))
    crop = [t[..., top * scale:(top + lp) * scale, left * scale:(left + lp) * scale] for t in hr]
    return crop, lr[..., top:top + lp, left:left + lp]


class PairPool:
    """Real-ESRGAN's training pair pool: a shuffled queue of past (LR, HR) pairs.

    Until it is full a batch is stored and passed through; then each batch is swapped with
    ``batch`` random pairs from the pool, so one batch mixes pairs from several degradations
    (resize scales and final-step orders are otherwise shared by a batch).
    """

    def __init__(self, size: int):
        self.size = size
        self.lr: torch.Tensor | None = None
        self.hr: torch.Tensor | None = None
        self.filled = 0

    def __call__(self, lr: torch.Tensor, hr: torch.Tensor, generator: torch.Generator,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        b = lr.shape[0]
        if self.size == 0:
            return lr, hr
        if self.size % b:
            raise ValueError(f"queue_size {self.size} must be a multiple of the batch size {b}")
        if self.lr is None:
            self.lr = lr.new_zeros((self.size, *lr.shape[1:]))
            self.hr = hr.new_zeros((self.size, *hr.shape[1:]))
        if self.filled < self.size:
            self.lr[self.filled:self.filled + b] = lr
            self.hr[self.filled:self.filled + b] = hr
            self.filled += b
            return lr, hr
        order = torch.randperm(self.size, generator=generator).to(lr.device)
        self.lr, self.hr = self.lr[order], self.hr[order]
        out = self.lr[:b].clone(), self.hr[:b].clone()
        self.lr[:b], self.hr[:b] = lr, hr
        return out

    def state_dict(self) -> dict:
        return {"size": self.size, "filled": self.filled, "lr": self.lr, "hr": self.hr}

    def load_state_dict(self, state: dict, device: torch.device | str | None = None) -> None:
        move = (lambda t: t if t is None or device is None else t.to(device))  # noqa: E731
        self.size, self.filled, self.lr, self.hr = state["size"], state["filled"], move(state["lr"]), move(state["hr"])


__all__ = ["KERNEL_TYPES", "BlurSettings", "PairPool", "RealDegradation", "StageSettings", "degrade", "degrade_real",
           "filter2d", "final_sinc_kernels", "gaussian_family_kernels", "gaussian_noise", "paired_random_crop",
           "poisson_noise", "read_real_settings", "sample_kernels", "sample_stage", "sinc_kernels", "usm_sharpen"]
