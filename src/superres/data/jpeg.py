"""Baseline JPEG compression in torch: a batch at once, one quality per image, optionally differentiable.

The steps of a libjpeg encode and decode (ITU-T T.81), written as tensor operations so that
Real-ESRGAN's degradation model can compress a whole training batch on the training device, as its
``DiffJPEG`` does (after Shin and Song, "JPEG-resistant Adversarial Images", NIPS-W 2017):
RGB -> YCbCr (JFIF, full range), 4:2:0 chroma subsampling (2x2 mean), 8x8 DCT, quantisation by
the Annex K tables scaled by quality the way libjpeg's ``jpeg_set_quality`` does (integer tables
clamped to 1..255), dequantisation, inverse DCT, chroma upsampling by libjpeg's default "fancy"
triangle filter (bilinear), YCbCr -> RGB. Sizes that are not a multiple of 16 are padded by edge
replication, as an encoder does, and cropped back.

What it leaves out (Huffman coding is lossless; libjpeg's integer DCT and intermediate rounding
are not) moves the result by a fraction of a dB: ``tests/test_degradations.py`` holds it within
1 dB of OpenCV's encoder and decoder on real photos.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ITU-T T.81 Annex K, tables K.1 (luminance) and K.2 (chrominance), in natural (row-major) order.
LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61), (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56), (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77), (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101), (72, 92, 95, 98, 112, 100, 103, 99),
)
CHROMA_TABLE = ((17, 18, 24, 47, 99, 99, 99, 99), (18, 21, 26, 66, 99, 99, 99, 99),
                (24, 26, 56, 99, 99, 99, 99, 99), (47, 66, 99, 99, 99, 99, 99, 99)) + ((99,) * 8,) * 4

# JFIF RGB -> YCbCr (the chroma channels are offset by 128).
_RGB_TO_YCBCR = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))


def _dct_matrix(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The orthonormal 8-point DCT-II matrix: JPEG's 2-D FDCT of a block X is D X D^T."""
    k = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d.to(device, dtype)


def quality_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """libjpeg's luminance and chrominance tables for each quality in ``quality`` (B,): (B, 8, 8) each.

    Quality q in [1, 100] scales the Annex K tables by 5000/q % below 50 and 200 - 2q % from 50 up;
    entries are rounded and clamped to 1..255 (baseline JPEG). A fractional q is used as given.
    """
    q = quality.double().clamp(1, 100)
    scale = torch.where(q < 50, 5000 / q, 200 - 2 * q)[:, None, None]
    tables = []
    for base in (LUMA_TABLE, CHROMA_TABLE):
        t = torch.tensor(base, dtype=torch.float64, device=q.device)
        tables.append(torch.floor((t * scale + 50) / 100).clamp(1, 255).float())
    return tables[0], tables[1]


def _round(x: torch.Tensor, differentiable: bool) -> torch.Tensor:
    """Rounding; the differentiable version is Shin and Song's cubic approximation."""
    r = torch.round(x)
    return r + (x - r) ** 3 if differentiable else r


def _code_blocks(plane: torch.Tensor, table: torch.Tensor, dct: torch.Tensor, differentiable: bool) -> torch.Tensor:
    """Level shift, DCT, quantise, dequantise and inverse DCT of every 8x8 block of (B, C, H, W)."""
    b, c, h, w = plane.shape
    blocks = (plane - 128).reshape(b, c, h // 8, 8, w // 8, 8).transpose(3, 4)
    coef = dct @ blocks @ dct.T
    table = table[:, None, None, None]
    coef = _round(coef / table, differentiable) * table
    blocks = dct.T @ coef @ dct
    return blocks.transpose(3, 4).reshape(b, c, h, w) + 128


def _downsample(c: torch.Tensor, exact: bool) -> torch.Tensor:
    """2x2 means of the chroma planes; ``exact``: libjpeg's integer sums with biases 1, 2, 1, 2... along a row."""
    if not exact:
        return F.avg_pool2d(c, 2)
    bias = 1 + torch.arange(c.shape[-1] // 2, device=c.device) % 2
    return torch.floor((F.avg_pool2d(c, 2) * 4 + bias) / 4)


def _upsample(c: torch.Tensor, exact: bool) -> torch.Tensor:
    """libjpeg's "fancy" h2v2 upsampling: a triangle filter (3/4, 1/4 per axis), i.e. bilinear.

    ``exact`` does it in libjpeg's integers: column sums 3 * near + far, then (3 a + b + 8) >> 4 on
    even and (3 a + b + 7) >> 4 on odd output columns, edges replicated.
    """
    if not exact:
        return F.interpolate(c, scale_factor=2, mode="bilinear", align_corners=False)
    b, n, h, w = c.shape
    rows = F.pad(c, (0, 0, 1, 1), mode="replicate")
    colsum = torch.stack([3 * c + rows[..., :-2, :], 3 * c + rows[..., 2:, :]], -2).reshape(b, n, 2 * h, w)
    cols = F.pad(colsum, (1, 1, 0, 0), mode="replicate")
    even = torch.floor((3 * colsum + cols[..., :-2] + 8) / 16)
    odd = torch.floor((3 * colsum + cols[..., 2:] + 7) / 16)
    return torch.stack([even, odd], -1).reshape(b, n, 2 * h, 2 * w)


def jpeg(image: torch.Tensor, quality: torch.Tensor | float, differentiable: bool = False) -> torch.Tensor:
    """JPEG-compress and decode RGB images (B, 3, H, W) in [0, 1], image i at ``quality[i]`` (1..100).

    Returns the decoded images in [0, 1], same shape. Samples are rounded to 8 bits where libjpeg
    rounds them (after colour conversion, subsampling, the inverse DCT and upsampling), which
    matters for images that were JPEG files before. With ``differentiable`` only the DCT
    coefficients are rounded, by the cubic approximation, so gradients flow through.
    """
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"jpeg expects RGB images (B, 3, H, W), got {tuple(image.shape)}")
    b, _, h, w = image.shape
    quality = torch.as_tensor(quality, dtype=torch.float64, device=image.device).reshape(-1).expand(b)
    luma, chroma = quality_tables(quality)
    dtype = image.dtype if image.dtype in (torch.float32, torch.float64) else torch.float32

    def to_8bit(x: torch.Tensor) -> torch.Tensor:
        return x if differentiable else x.round().clamp(0, 255)

    x = to_8bit(image.to(dtype) * 255)
    pad_h, pad_w = -h % 16, -w % 16
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    to_ycc = torch.tensor(_RGB_TO_YCBCR, dtype=dtype, device=image.device)
    ycc = torch.einsum("ij,bjhw->bihw", to_ycc, x)
    y, c = ycc[:, :1], ycc[:, 1:] + 128
    if not differentiable:  # libjpeg rounds luma half up and chroma half down
        y, c = torch.floor(y + 0.5), torch.ceil(c - 0.5)
    dct = _dct_matrix(image.device, dtype)
    y = to_8bit(_code_blocks(y, luma.to(dtype), dct, differentiable))
    c = _downsample(c, exact=not differentiable)
    c = to_8bit(_code_blocks(c, chroma.to(dtype), dct, differentiable))
    c = _upsample(c, exact=not differentiable)

    ycc = torch.cat([y, c - 128], 1)
    rgb = to_8bit(torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_ycc), ycc))
    return (rgb[:, :, :h, :w] / 255).clamp(0, 1).to(image.dtype)


__all__ = ["CHROMA_TABLE", "LUMA_TABLE", "jpeg", "quality_tables"]
