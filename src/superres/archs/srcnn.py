"""SRCNN: Dong, Loy, He and Tang, "Image Super-Resolution Using Deep Convolutional Networks",
ECCV 2014 / TPAMI 2016.

Three convolutions (patch extraction, non-linear mapping, reconstruction) on an image that was
first upscaled by bicubic interpolation. The 9-1-5 and 9-5-5 settings with n1 = 64, n2 = 32 are
``kernel_sizes=(9, 1, 5)`` and ``(9, 5, 5)``. Key names follow MMagic's ``SRCNNNet``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from superres.archs.spec import ArchSpec, ModelFacts, StateDict


class SRCNN(nn.Module):
    """SRCNN. ``channels`` = (in, n1, n2, out): 1 for the Y channel (the paper), 3 for RGB.

    ``upsample_mode``: "bicubic" (PyTorch bicubic, as MMagic), "matlab" (MATLAB bicubic, as the
    paper) or "none" (the input is already upscaled).
    """

    def __init__(self, channels: tuple[int, int, int, int] = (3, 64, 32, 3),
                 kernel_sizes: tuple[int, int, int] = (9, 1, 5), upscale_factor: int = 4,
                 upsample_mode: str = "bicubic"):
        super().__init__()
        if upsample_mode not in ("bicubic", "matlab", "none"):
            raise ValueError(f"upsample_mode must be bicubic, matlab or none, got {upsample_mode!r}")
        self.upscale_factor = upscale_factor
        self.upsample_mode = upsample_mode
        self.conv1 = nn.Conv2d(channels[0], channels[1], kernel_sizes[0], padding=kernel_sizes[0] // 2)
        self.conv2 = nn.Conv2d(channels[1], channels[2], kernel_sizes[1], padding=kernel_sizes[1] // 2)
        self.conv3 = nn.Conv2d(channels[2], channels[3], kernel_sizes[2], padding=kernel_sizes[2] // 2)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        if self.upsample_mode == "bicubic":
            x = F.interpolate(x, scale_factor=self.upscale_factor, mode="bicubic", align_corners=False)
        elif self.upsample_mode == "matlab":
            from superres.ops.imresize import imresize

            x = imresize(x, self.upscale_factor)
        out = self.relu(self.conv1(x))
        out = self.relu(self.conv2(out))
        return self.conv3(out)


_THREE_CONVS = {f"conv{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}  # SRCNN and ESPCN


def _detect(s: StateDict) -> dict | None:
    if set(s) != _THREE_CONVS:
        return None
    w1, w2, w3 = s["conv1.weight"], s["conv2.weight"], s["conv3.weight"]
    if w3.shape[0] != w1.shape[1] or w1.shape[-1] != 9:  # ESPCN's conv3 has r^2 x channels
        return None
    return {"channels": (w1.shape[1], w1.shape[0], w2.shape[0], w3.shape[0]),
            "kernel_sizes": (w1.shape[-1], w2.shape[-1], w3.shape[-1])}


def _facts(kw: dict) -> ModelFacts:
    channels = kw["channels"]
    # upsample_mode="none": the caller upscales first, so the network itself keeps the size.
    scale = 1 if kw["upsample_mode"] == "none" else kw["upscale_factor"]
    return ModelFacts("sr", scale, channels[0], channels[-1])


# The scale is not in the weights (it only sets the bicubic pre-upscaling): load_model(scale=).
ARCHS = (ArchSpec(SRCNN, _detect, _facts, unstored_scale="upscale_factor"),)
