"""Image quality metrics as SR papers compute them: PSNR, SSIM (full-reference), NIQE and BRISQUE (blind)."""

from superres.metrics.brisque import brisque
from superres.metrics.niqe_model import niqe
from superres.metrics.psnr_ssim import psnr, psnr_torch, ssim, ssim_torch

__all__ = ["brisque", "niqe", "psnr", "psnr_torch", "ssim", "ssim_torch"]
