"""Perceptual loss: Johnson et al., "Perceptual Losses for Real-Time Style Transfer and
Super-Resolution" (ECCV 2016), with ESRGAN's change (Wang et al., ECCV 2018 workshops, Sec. 3.3):
VGG19 features taken *before* the activation, compared with L1 and weighted per layer.

The ImageNet VGG19 weights are read from a file (torchvision's ``vgg19-dcbb9e9d.pth``, by default
from the torch hub cache); they are never downloaded here.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from superres.errors import SuperresError

VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = f"https://download.pytorch.org/models/{VGG19_FILE}"


def vgg19_layer_names() -> list[str]:
    """Names of ``torchvision.models.vgg19().features`` modules: conv1_1, relu1_1, ..., pool5."""
    names = []
    for block, convs in enumerate((2, 2, 4, 4, 4), start=1):
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


def default_vgg19_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


class VGGFeatures(nn.Module):
    """VGG19 up to the deepest requested layer (frozen); returns {layer name: features}."""

    def __init__(self, layers: list[str], weights: str | os.PathLike | None = None, use_input_norm: bool = True):
        super().__init__()
        from torchvision.models import vgg19

        names = vgg19_layer_names()
        unknown = [n for n in layers if n not in names]
        if unknown:
            raise ValueError(f"unknown VGG19 layers {unknown}; known: {', '.join(names)}")
        vgg = vgg19(weights=None)
        if weights != "random":
            path = Path(weights) if weights else default_vgg19_path()
            if not path.is_file():
                raise SuperresError(
                    f"{path}: VGG19 ImageNet weights not found; download {VGG19_URL} to that path "
                    "(or set train.perceptual_loss.vgg_weights to the file)")
            vgg.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        last = max(names.index(n) for n in layers)
        self.features = vgg.features[: last + 1]
        self.names, self.layers = names[: last + 1], set(layers)
        self.use_input_norm = use_input_norm
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if self.use_input_norm:
            x = (x - self.mean) / self.std
        out = {}
        for name, layer in zip(self.names, self.features, strict=True):
            x = layer(x)
            if name in self.layers:
                out[name] = x.clone() if isinstance(layer, nn.Conv2d) else x  # next ReLU is in place
        return out


class PerceptualLoss(nn.Module):
    """sum_l w_l * criterion(VGG_l(pred), VGG_l(target)) over the configured layers."""

    def __init__(self, layer_weights: dict[str, float], weights: str | os.PathLike | None = None,
                 use_input_norm: bool = True, criterion: str = "L1"):
        super().__init__()
        self.layer_weights = dict(layer_weights)
        self.vgg = VGGFeatures(list(layer_weights), weights, use_input_norm)
        self.criterion = nn.L1Loss() if criterion == "L1" else nn.MSELoss()

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        if pred.shape[1] == 1:  # Y-channel models: VGG sees gray RGB
            pred, target = pred.expand(-1, 3, -1, -1), target.expand(-1, 3, -1, -1)
        pf = self.vgg(pred)
        with torch.no_grad():
            tf = self.vgg(target)
        return sum(w * self.criterion(pf[n], tf[n]) for n, w in self.layer_weights.items())
