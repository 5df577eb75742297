"""BRISQUE against the reference package (``brisque``, dev only) on real photos, and its stored model."""

from __future__ import annotations

import importlib.util
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from superres.cli import main
from superres.io import write_image
from superres.metrics import brisque
from superres.metrics.brisque import _PlainData, brisque_model, read_brisque_files
from superres.ops import imresize


@pytest.fixture(scope="module")
def reference():
    """The reference's score. Its features are 1-element arrays that numpy 2 refuses to ``float()``:
    flattened here, its own functions otherwise (``BRISQUE.score``'s steps)."""
    brisque_ref = pytest.importorskip("brisque")
    import cv2
    import skimage.color

    ref = brisque_ref.BRISQUE(url=False)

    def score(image: np.ndarray) -> float:
        gray = skimage.color.rgb2gray(image)
        half = cv2.resize(gray, None, fx=1 / 2, fy=1 / 2, interpolation=cv2.INTER_CUBIC)
        feats = [np.asarray(f, np.float64).ravel()[0] for g in (gray, half)
                 for f in ref.calculate_brisque_features(g, kernel_size=7, sigma=7 / 6)]
        return ref.calculate_image_quality_score(np.array(feats))

    return score


def real_images(photos, shared=None) -> dict[str, np.ndarray]:
    """uint8 photos and their bicubic x4 round trips (blurred: much higher BRISQUE)."""
    images = {}
    for name, img in photos.items():
        u8 = np.round(img * 255).astype(np.uint8)
        images[name] = u8
        small = imresize(u8.astype(np.float64), 0.25)
        images[f"{name} bicubic x4"] = np.clip(np.round(imresize(small, 4)), 0, 255).astype(np.uint8)
    return images


def test_brisque_matches_the_reference_on_real_photos(photos, reference):
    for name, img in real_images(photos).items():
        ours, ref = brisque(img), reference(img)
        assert abs(ours - ref) <= 1e-3, (name, ours, ref)


def test_brisque_matches_the_reference_on_set5(shared_data, reference):
    from superres.io import read_image

    for path in sorted((shared_data / "Set5" / "HR").glob("*.png")):
        img = np.round(read_image(path)[0] * 255).astype(np.uint8)
        assert abs(brisque(img) - reference(img)) <= 1e-3, path.name


def test_brisque_ranks_blur_worse_and_takes_gray(photos):
    images = real_images(photos)
    for name in photos:
        assert brisque(images[f"{name} bicubic x4"]) > brisque(images[name]) + 20
    img = images["chelsea"]
    gray = np.round(img.astype(np.float64) @ [0.2125, 0.7154, 0.0721]).astype(np.uint8)
    assert brisque(gray) == brisque(gray[..., None])
    with pytest.raises(ValueError, match="16x16"):
        brisque(img[:10, :10])


def test_stored_model_is_the_reference_files():
    spec = importlib.util.find_spec("brisque")
    if spec is None:
        pytest.skip("brisque (the reference package) is not installed")
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    parsed = read_brisque_files(models / "svm.txt", models / "normalize.pickle")
    stored = brisque_model()
    assert stored.keys() == parsed.keys() and stored["sv"].shape == (770, 36)
    for key, value in parsed.items():
        np.testing.assert_array_equal(stored[key], value, err_msg=key)


def test_the_pickle_reader_refuses_code():
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    with pytest.raises(pickle.UnpicklingError, match="refused"):
        _PlainData(io.BytesIO(pickle.dumps({"min_": [Evil()]}))).load()
    assert _PlainData(io.BytesIO(pickle.dumps({"min_": [0.5, -1.0]}))).load() == {"min_": [0.5, -1.0]}


def test_metrics_command_prints_niqe_and_brisque(tmp_path, photos, capsys, reference):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name, img in photos.items():
        write_image(folder / f"{name}.png", img)
    assert main(["metrics", str(folder), "--json", str(tmp_path / "m.json")]) == 0
    assert "BRISQUE" in capsys.readouterr().out
    rows = {r["name"]: r for r in json.loads((tmp_path / "m.json").read_text())}
    for name, img in photos.items():
        assert abs(rows[name]["brisque"] - reference(np.round(img * 255).astype(np.uint8))) <= 1e-3
