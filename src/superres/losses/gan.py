"""Adversarial losses: vanilla GAN (Goodfellow et al. 2014; SRGAN), LSGAN (Mao et al. 2017),
hinge (Lim and Ye 2017), WGAN with softplus (as StyleGAN2), and the relativistic average
discriminator of ESRGAN (Wang et al., ECCV 2018 workshops, Eq. 1-2; Jolicoeur-Martineau 2018).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class GANLoss(nn.Module):
    """``loss(logits, target_is_real, for_discriminator)`` for one of the four GAN types."""

    def __init__(self, gan_type: str = "vanilla"):
        super().__init__()
        if gan_type not in ("vanilla", "lsgan", "hinge", "wgan_softplus"):
            raise ValueError(f"unknown gan_type {gan_type!r}: use vanilla, lsgan, hinge or wgan_softplus")
        self.gan_type = gan_type

    def forward(self, logits: Tensor, target_is_real: bool, for_discriminator: bool = True) -> Tensor:
        if self.gan_type == "vanilla":
            target = logits.new_ones(()) if target_is_real else logits.new_zeros(())
            return F.binary_cross_entropy_with_logits(logits, target.expand_as(logits))
        if self.gan_type == "lsgan":
            return F.mse_loss(logits, logits.new_full(logits.shape, float(target_is_real)))
        if self.gan_type == "wgan_softplus":
            return F.softplus(-logits if target_is_real else logits).mean()
        if not for_discriminator:  # hinge generator loss
            return -logits.mean() if target_is_real else logits.mean()
        return F.relu(1 - logits).mean() if target_is_real else F.relu(1 + logits).mean()

    def relativistic(self, real_logits: Tensor, fake_logits: Tensor, for_discriminator: bool) -> Tensor:
        """ESRGAN's relativistic average loss: D_Ra(x_r, x_f) = sigmoid(C(x_r) - E[C(x_f)]).

        For the discriminator, real should look more real than the average fake and fake less
        real than the average real; the generator's loss is the symmetric one (Eq. 2), so it
        benefits from gradients of both real and generated data. As in the official code, the
        discriminator's averages are constants (detached); the generator's are not.
        """
        fake_mean, real_mean = fake_logits.mean(), real_logits.mean()
        if for_discriminator:
            fake_mean, real_mean = fake_mean.detach(), real_mean.detach()
        real_rel, fake_rel = real_logits - fake_mean, fake_logits - real_mean
        real_target = for_discriminator
        return (self(real_rel, real_target, for_discriminator)
                + self(fake_rel, not real_target, for_discriminator)) / 2
