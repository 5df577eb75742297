"""Training losses: pixel (L1, MSE, Charbonnier), perceptual (VGG19) and adversarial."""

from superres.losses.gan import GANLoss
from superres.losses.perceptual import PerceptualLoss, VGGFeatures
from superres.losses.pixel import CharbonnierLoss, pixel_loss

__all__ = ["CharbonnierLoss", "GANLoss", "PerceptualLoss", "VGGFeatures", "pixel_loss"]
