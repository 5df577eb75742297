import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from superres.ops import imresize
from superres.ops.imresize import contributions


def _float32_bound(shape, scale) -> float:
    """Largest difference of two float32 implementations of the same two-pass resize of an image in
    [0, 1]: each pass is a K-tap sum (<= K * 2^-24 relative, in any order) of float32-rounded weights
    (+1), and the second pass carries the first's error; so each result is within
    (K_h + K_w + 2) * 2^-24 * S_h * S_w of the exact one (S = sum |w|), and the two within twice that.
    1.7e-6 (4-tap upscaling) to 5.6e-6 (x1/4, 16 taps); measured differences: <= 3e-7."""
    k, s = [], []
    for n in shape[:2]:
        weights, _ = contributions(n, math.ceil(n * scale), scale)
        k.append(weights.shape[1])
        s.append(np.abs(weights).sum(1).max())
    return 2 * (k[0] + k[1] + 2) * 2.0**-24 * s[0] * s[1]


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 2, 4])
def test_matches_basicsr(photos, basicsr, scale):
    from basicsr.utils.matlab_functions import imresize as ref

    img = photos["chelsea"]
    ours = imresize(img, scale)
    expected = ref(img, scale)
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() <= _float32_bound(img.shape, scale)


@pytest.mark.parametrize("scale", [3, 0.7, 1.3, 0.37])
def test_matches_basicsr_with_exact_coordinates(photos, basicsr, scale, monkeypatch):
    """At other scales BasicSR's float32 pixel coordinates are off by up to 3e-5 (it computes
    u = x / scale + ... in float32); with its weights computed in float64 (as MATLAB does) the two
    agree to float32 summation error everywhere."""
    import basicsr.utils.matlab_functions as mf

    original = mf.calculate_weights_indices

    def float64_weights(*args):
        old = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            weights, indices, start, end = original(*args)
        finally:
            torch.set_default_dtype(old)
        return weights.float(), indices, start, end

    monkeypatch.setattr(mf, "calculate_weights_indices", float64_weights)
    img = photos["astronaut"][100:300, 50:260]
    assert np.abs(imresize(img, scale) - mf.imresize(img, scale)).max() <= _float32_bound(img.shape, scale)


@pytest.mark.parametrize("scale", [0.25, 1 / 3, 3, 1.7])
def test_torch_matches_numpy_batched(photos, scale):
    imgs = np.stack([photos["astronaut"][:300, :300], photos["chelsea"][:300, :300]])
    batch = torch.from_numpy(imgs.transpose(0, 3, 1, 2).copy())
    out = imresize(batch, scale)
    assert out.shape[-2:] == (math.ceil(300 * scale),) * 2
    for i in range(2):
        np.testing.assert_allclose(out[i].numpy().transpose(1, 2, 0), imresize(imgs[i], scale), atol=1e-6)
    single = imresize(batch[0], scale)  # CxHxW
    torch.testing.assert_close(single, out[0])


def test_output_size_rule_and_layouts():
    img = np.random.default_rng(0).random((101, 57, 3)).astype(np.float32)
    assert imresize(img, 1 / 4).shape == (26, 15, 3)  # ceil(in * scale)
    assert imresize(img[..., 0], 2).shape == (202, 114)
    assert imresize(img, size=(50, 60)).shape == (50, 60, 3)
    assert imresize(img, (0.5, 2)).shape == (51, 114, 3)
    assert imresize(img, 1 / 4).dtype == np.float32
    assert imresize(img.astype(np.float64), 1 / 4).dtype == np.float64
    with pytest.raises(ValueError):
        imresize(img, 0)
    with pytest.raises(ValueError):
        imresize(torch.zeros(3, 8, 8, dtype=torch.uint8), 2)


def test_uint8_rounds_after_each_pass_like_matlab(photos):
    u8 = np.rint(photos["chelsea"] * 255).astype(np.uint8)
    out = imresize(u8, 0.5)
    assert out.dtype == np.uint8
    first = np.clip(np.floor(imresize(u8.astype(np.float64), (0.5, 1)) + 0.5), 0, 255)
    expected = np.clip(np.floor(imresize(first, (1, 0.5)) + 0.5), 0, 255)
    assert np.array_equal(out, expected)


def test_matlab_lr_files_bit_exact(shared_data):
    """Set5/LR_bicubic was made by MATLAB's imresize on uint8 images (rounding half away from zero
    after each pass): with uint8 input ours gives the very same files at x2, x3 and x4."""
    from superres.io import read_image
    from superres.ops import modcrop

    for scale in (2, 3, 4):
        for hr_path in sorted((shared_data / "Set5" / "HR").glob("*.png")):
            lr_path = shared_data / "Set5" / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png"
            hr, _ = read_image(hr_path)
            lr, _ = read_image(lr_path)
            ours = imresize(np.rint(modcrop(hr, scale) * 255).astype(np.uint8), 1 / scale)
            assert np.array_equal(ours, np.rint(lr * 255).astype(np.uint8)), (hr_path.name, scale)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.floats(0.05, 8))
def test_weights_sum_to_one_and_stay_in_range(length, scale):
    out = max(1, math.ceil(length * scale))
    weights, indices = contributions(length, out, scale, True)
    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-12)
    assert indices.min() >= 0 and indices.max() < length


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 30), st.integers(2, 30), st.floats(0.1, 5), st.floats(0, 1))
def test_constant_image_stays_constant(h, w, scale, value):
    img = np.full((h, w, 3), value)
    np.testing.assert_allclose(imresize(img, scale), value, atol=1e-12)
