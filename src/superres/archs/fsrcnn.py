"""FSRCNN: Dong, Loy and Tang, "Accelerating the Super-Resolution Convolutional Neural Network",
ECCV 2016.

Works on the LR image directly: feature extraction (5x5, d), shrinking (1x1, s), m mapping
layers (3x3, s), expanding (1x1, d), all with PReLU, then a 9x9 transposed convolution with
stride = scale. FSRCNN is d=56, s=12, m=4; FSRCNN-s is d=32, s=5, m=1. Key names follow the
widely used PyTorch port (``first_part``, ``mid_part``, ``last_part``).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from superres.archs.spec import ArchSpec, ModelFacts, StateDict, count_indices


class FSRCNN(nn.Module):
    """FSRCNN(d, s, m) for ``upscale`` x2/x3/x4 on ``num_channels`` (1 = Y, as the paper)."""

    def __init__(self, upscale: int = 3, num_channels: int = 1, d: int = 56, s: int = 12, m: int = 4):
        super().__init__()
        self.upscale = upscale
        self.first_part = nn.Sequential(nn.Conv2d(num_channels, d, 5, padding=2), nn.PReLU(d))
        mid: list[nn.Module] = [nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            mid += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        mid += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.mid_part = nn.Sequential(*mid)
        self.last_part = nn.ConvTranspose2d(d, num_channels, 9, stride=upscale, padding=4,
                                            output_padding=upscale - 1)
        self._init_weights()

    def _init_weights(self) -> None:
        # As the paper: He init for the convolutions, N(0, 0.001) for the deconvolution.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, math.sqrt(2 / (m.out_channels * m.weight[0][0].numel())))
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.last_part.weight, 0.0, 0.001)
        nn.init.zeros_(self.last_part.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.last_part(self.mid_part(self.first_part(x)))


def _detect(s: StateDict) -> dict | None:
    if not {"first_part.0.weight", "mid_part.0.weight", "last_part.weight"} <= s.keys():
        return None
    convs = count_indices(s, r"mid_part\.(\d+)\.weight") // 2  # conv + PReLU per layer
    d, channels = s["first_part.0.weight"].shape[:2]
    return {"num_channels": channels, "d": d, "s": s["mid_part.0.weight"].shape[0], "m": convs - 2}


def _facts(kw: dict) -> ModelFacts:
    return ModelFacts("sr", kw["upscale"], kw["num_channels"], kw["num_channels"])


# The scale is the deconvolution's stride, which the weights do not store: load_model(scale=).
ARCHS = (ArchSpec(FSRCNN, _detect, _facts, unstored_scale="upscale"),)
