"""Discriminators for GAN SR training.

- ``VGGStyleDiscriminator``: the VGG-style classifier of SRGAN (Ledig et al., CVPR 2017) and
  ESRGAN (Wang et al., ECCVW 2018) for square patches (SRGAN 96, ESRGAN 128 or 256); layout as
  BasicSR.
- ``UNetDiscriminatorSN``: Real-ESRGAN's U-Net discriminator with spectral normalization
  (Wang et al., ICCVW 2021), giving a realness value per pixel; layout as the official code.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import spectral_norm

from superres.archs.spec import ArchSpec, ModelFacts, StateDict


class VGGStyleDiscriminator(nn.Module):
    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, input_size: int = 128):
        super().__init__()
        if input_size % 32 or input_size < 32:
            raise ValueError(f"input_size must be a multiple of 32 (SRGAN: 96, ESRGAN: 128), got {input_size}")
        self.input_size = input_size
        stages = 6 if input_size == 256 else 5  # BasicSR's layouts for 128 and 256
        side = input_size // 2**stages
        widths = [num_feat, num_feat * 2, num_feat * 4, num_feat * 8, num_feat * 8, num_feat * 8]
        self.conv0_0 = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1, bias=True)
        self.conv0_1 = nn.Conv2d(num_feat, num_feat, 4, 2, 1, bias=False)
        self.bn0_1 = nn.BatchNorm2d(num_feat, affine=True)
        for i in range(1, stages):
            setattr(self, f"conv{i}_0", nn.Conv2d(widths[i - 1], widths[i], 3, 1, 1, bias=False))
            setattr(self, f"bn{i}_0", nn.BatchNorm2d(widths[i], affine=True))
            setattr(self, f"conv{i}_1", nn.Conv2d(widths[i], widths[i], 4, 2, 1, bias=False))
            setattr(self, f"bn{i}_1", nn.BatchNorm2d(widths[i], affine=True))
        self.stages = stages
        self.linear1 = nn.Linear(num_feat * 8 * side * side, 100)
        self.linear2 = nn.Linear(100, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(f"VGGStyleDiscriminator expects {self.input_size}x{self.input_size} patches, "
                             f"got {tuple(x.shape[-2:])}")
        feat = self.lrelu(self.conv0_0(x))
        feat = self.lrelu(self.bn0_1(self.conv0_1(feat)))
        for i in range(1, self.stages):
            feat = self.lrelu(getattr(self, f"bn{i}_0")(getattr(self, f"conv{i}_0")(feat)))
            feat = self.lrelu(getattr(self, f"bn{i}_1")(getattr(self, f"conv{i}_1")(feat)))
        return self.linear2(self.lrelu(self.linear1(feat.flatten(1))))


class UNetDiscriminatorSN(nn.Module):
    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True):
        super().__init__()
        self.skip_connection = skip_connection
        self.conv0 = nn.Conv2d(num_in_ch, num_feat, kernel_size=3, stride=1, padding=1)
        self.conv1 = spectral_norm(nn.Conv2d(num_feat, num_feat * 2, 4, 2, 1, bias=False))
        self.conv2 = spectral_norm(nn.Conv2d(num_feat * 2, num_feat * 4, 4, 2, 1, bias=False))
        self.conv3 = spectral_norm(nn.Conv2d(num_feat * 4, num_feat * 8, 4, 2, 1, bias=False))
        self.conv4 = spectral_norm(nn.Conv2d(num_feat * 8, num_feat * 4, 3, 1, 1, bias=False))
        self.conv5 = spectral_norm(nn.Conv2d(num_feat * 4, num_feat * 2, 3, 1, 1, bias=False))
        self.conv6 = spectral_norm(nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1, bias=False))
        self.conv7 = spectral_norm(nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=False))
        self.conv8 = spectral_norm(nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(num_feat, 1, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2] % 8 or x.shape[-1] % 8:
            raise ValueError(f"UNetDiscriminatorSN needs height and width divisible by 8, got {tuple(x.shape[-2:])}")

        def act(t: Tensor) -> Tensor:
            return F.leaky_relu(t, negative_slope=0.2)

        def up(t: Tensor) -> Tensor:
            return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)

        x0 = act(self.conv0(x))
        x1 = act(self.conv1(x0))
        x2 = act(self.conv2(x1))
        x3 = act(self.conv3(x2))
        x4 = act(self.conv4(up(x3)))
        if self.skip_connection:
            x4 = x4 + x2
        x5 = act(self.conv5(up(x4)))
        if self.skip_connection:
            x5 = x5 + x1
        x6 = act(self.conv6(up(x5)))
        if self.skip_connection:
            x6 = x6 + x0
        out = act(self.conv8(act(self.conv7(x6))))
        return self.conv9(out)


def _detect_vgg(s: StateDict) -> dict | None:
    if not {"conv0_0.weight", "bn0_1.weight", "linear1.weight"} <= s.keys():
        return None
    return {"num_in_ch": s["conv0_0.weight"].shape[1], "num_feat": s["conv0_0.weight"].shape[0],
            "input_size": 256 if "conv5_0.weight" in s else 128}


def _facts_vgg(kw: dict) -> ModelFacts:
    # One realness value per patch of exactly input_size x input_size.
    size = kw["input_size"]
    return ModelFacts("discriminator", 1, kw["num_in_ch"], 1, size_multiple=size, min_size=size)


def _detect_unet(s: StateDict) -> dict | None:
    if not {"conv0.weight", "conv1.weight_orig", "conv9.weight"} <= s.keys():
        return None
    return {"num_in_ch": s["conv0.weight"].shape[1], "num_feat": s["conv0.weight"].shape[0]}


def _facts_unet(kw: dict) -> ModelFacts:
    # A realness value per pixel; three stride-2 stages down and back up.
    return ModelFacts("discriminator", 1, kw["num_in_ch"], 1, size_multiple=8, min_size=8)


ARCHS = (
    ArchSpec(VGGStyleDiscriminator, _detect_vgg, _facts_vgg),
    ArchSpec(UNetDiscriminatorSN, _detect_unet, _facts_unet),
)
