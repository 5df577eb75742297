"""Face restoration around a face network: alignment, paste-back, strength, colour, image layouts, tracking
and the commands. The face networks here are stand-ins (an identity and a network that visibly changes
faces) with the facts of the real ones; faces come from a fixed list, so no detector runs (real
detection: tests/test_faces_detect.py)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from superres.archs.spec import ModelFacts
from superres.faces import FFHQ_TEMPLATE_512, Face, FaceError, FaceOptions, FaceRestorer, FaceTracker, face_transform
from superres.faces.align import invert, warp
from superres.faces.paste import feather_mask
from superres.infer import Upscaler
from superres.infer.faces import FaceEnhancer
from superres.zoo import ModelDescriptor, load_model

FACE_FACTS = ModelFacts(purpose="face", scale=1, in_channels=3, out_channels=3, size_multiple=512, min_size=512)


class Recolor(nn.Module):
    """Changes faces visibly: a tint, a brightness change and fine stripes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stripes = 0.2 * torch.sin(torch.arange(x.shape[-1], dtype=x.dtype, device=x.device) * 0.05)
        tint = torch.tensor([0.15, -0.05, 0.0], dtype=x.dtype, device=x.device)[:, None, None]
        return (x * 0.8 + 0.15 + tint + stripes).clamp(0, 1)


class Offset(nn.Module):
    """Brightens the whole crop by a constant: any visible crop edge would show as a step."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 0.25).clamp(0, 1)


def face_model(module: nn.Module, size: int = 512) -> ModelDescriptor:
    facts = ModelFacts(purpose="face", scale=1, in_channels=3, out_channels=3, size_multiple=size, min_size=size)
    return ModelDescriptor(module=module.eval(), arch=type(module).__name__, kwargs={}, facts=facts)


def face_at(cx: float, cy: float, width: float) -> Face:
    """A face whose landmarks are the FFHQ template's, centred at (cx, cy), eyes ``width`` x 0.49 apart."""
    s = width / 256
    marks = (FFHQ_TEMPLATE_512 - [256, 300]) * s + [cx, cy]
    box = np.array([cx - width / 2, cy - width * 0.6, cx + width / 2, cy + width * 0.5], np.float32)
    return Face(box, marks.astype(np.float32), 0.99)


@pytest.fixture(scope="module")
def photo(photos) -> np.ndarray:
    """The astronaut photo, 128 x 128, uint8 RGB."""
    return np.rint(cv2.resize(photos["astronaut"], (128, 128), interpolation=cv2.INTER_AREA) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def bicubic() -> Upscaler:
    return Upscaler(load_model("bicubic", scale=2))


FACES = [face_at(56, 30, 40), face_at(100, 90, 36), face_at(8, 120, 30)]  # the last partly outside


def enhancer(module: nn.Module, bicubic: Upscaler, faces=FACES, **options) -> FaceEnhancer:
    return FaceEnhancer(face_model(module), bicubic, FaceOptions(**options), detector=lambda image: list(faces))


def near(values: np.ndarray, face: Face, scale: float) -> np.ndarray:
    """``values`` about the face's nose (within a third of the eye distance), in an image ``scale`` x the input."""
    x, y = face.landmarks[2] * scale
    r = np.linalg.norm(face.landmarks[1] - face.landmarks[0]) * scale / 3
    h, w = values.shape[:2]
    return values[max(int(y - r), 0):min(int(y + r) + 1, h), max(int(x - r), 0):min(int(x + r) + 1, w)]


def crop_regions(shape: tuple[int, int], faces: list[Face], scale: float, size: int = 512) -> np.ndarray:
    """Where the faces' crops land in the output: the inverse-warped crop squares, filled."""
    region = np.zeros(shape, np.uint8)
    for face in faces:
        back = invert(face_transform(face.scaled(scale).landmarks, size))
        corners = np.array([[0, 0, 1], [size, 0, 1], [size, size, 1], [0, size, 1]], np.float64) @ back.T
        cv2.fillConvexPoly(region, np.round(corners - 0.5).astype(np.int32), 1)
    return cv2.dilate(region, np.ones((3, 3), np.uint8)).astype(bool)


def test_alignment_maps_landmarks_onto_the_template():
    face = face_at(40, 50, 30)
    rotation = cv2.getRotationMatrix2D((40, 50), 25, 1.3)
    marks = np.c_[face.landmarks, np.ones(5)] @ rotation.T
    matrix = face_transform(marks, 256)
    np.testing.assert_allclose(np.c_[marks, np.ones(5)] @ matrix.T, FFHQ_TEMPLATE_512 / 2, atol=1e-3)


def test_warp_there_and_back_keeps_a_smooth_image():
    """Alignment and its inverse (both directions anti-aliased where they shrink) lose little on smooth content."""
    yy, xx = np.mgrid[0:96, 0:96].astype(np.float32)
    image = (0.5 + 0.4 * np.sin(xx / 9) * np.cos(yy / 11))[..., None].repeat(3, 2)
    matrix = face_transform(face_at(48, 48, 40).landmarks, 512)
    crop = warp(image, matrix, 512, 512)
    back = warp(crop, invert(matrix), 96, 96)
    inside = crop_regions((96, 96), [face_at(48, 48, 40)], 1.0)
    inner = cv2.erode(inside.astype(np.uint8), np.ones((9, 9), np.uint8), borderType=cv2.BORDER_CONSTANT,
                      borderValue=0).astype(bool)
    assert np.abs(back - image)[inner].max() < 0.01


def test_identity_restorer_gives_the_background(photo, bicubic):
    background = bicubic.upscale_array(photo)
    out = enhancer(nn.Identity(), bicubic).upscale_array(photo)
    assert out.dtype == np.uint8 and out.shape == background.shape
    assert np.abs(out.astype(int) - background).max() <= 1


def test_changing_restorer_changes_only_the_faces(photo, bicubic):
    background = bicubic.upscale_array(photo)
    out = enhancer(Recolor(), bicubic).upscale_array(photo)
    inside = crop_regions(background.shape[:2], FACES, 2.0)
    assert np.array_equal(out[~inside], background[~inside])
    changed = np.abs(out.astype(int) - background).max(-1)
    assert changed.max() > 40
    for face in FACES:
        assert near(changed, face, 2.0).max() > 10


def test_strength_blends(photo, bicubic):
    background = bicubic.upscale_array(photo)
    outs = {s: enhancer(Recolor(), bicubic, strength=s).upscale_array(photo).astype(int) for s in (0, 0.5, 1)}
    assert np.array_equal(outs[0], background)
    full, half = outs[1], outs[0.5]
    assert np.abs(full - background).max() > 40
    unclipped = (full > 0) & (full < 255)
    assert np.abs(half - (full + background) / 2)[unclipped].max() <= 1  # halfway, up to rounding
    assert np.abs(full - background).mean() > 1.9 * np.abs(half - background).mean()


def test_no_visible_crop_edge(photo, bicubic):
    """A restorer that brightens its whole crop by 64 levels: the paste-back ramps it in smoothly."""
    dark = (photo * 0.6).astype(np.uint8)  # so that nothing saturates: the change is the mask times 64
    background = bicubic.upscale_array(dark).astype(int)
    out = enhancer(Offset(), bicubic, faces=FACES[:1], color="none").upscale_array(dark).astype(int)
    change = (out - background).mean(-1)
    assert change.max() > 50
    steps = max(np.abs(np.diff(change, axis=0)).max(), np.abs(np.diff(change, axis=1)).max())
    assert steps < 12  # a hard crop edge would be a step of ~64


def test_colour_stays_with_the_surroundings(photo, bicubic):
    """``keep`` drops the restorer's tint and brightness change (its low frequencies) and keeps its detail."""
    background = bicubic.upscale_array(photo).astype(np.float32)
    face = [face_at(64, 64, 44)]
    mask = warp(feather_mask(512), invert(face_transform(face[0].scaled(2).landmarks)), 256, 256) > 0.99
    outs = {c: enhancer(Recolor(), bicubic, faces=face, color=c).upscale_array(photo).astype(np.float32)
            for c in ("keep", "none")}
    shift = {c: (out - background)[mask].mean(0) for c, out in outs.items()}
    assert np.abs(shift["none"]).max() > 15  # the tint, in levels
    assert np.abs(shift["keep"]).max() < 2
    detail = {c: np.abs(np.diff(out - background, axis=1))[mask[:, 1:]].mean() for c, out in outs.items()}
    assert detail["none"] > 3
    assert detail["keep"] > 0.6 * detail["none"]  # the stripes survive (a quarter of them is low frequency)


@pytest.mark.parametrize("layout", ["gray", "gray_alpha", "rgba", "uint16", "float32"])
def test_layouts(photo, bicubic, layout):
    """Gray, RGBA (alpha through the background path), 16-bit and float images keep their layout, and
    an identity restorer still gives the background."""
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    alpha = np.linspace(0, 255, 128 * 128).reshape(128, 128).astype(np.uint8)
    image = {"gray": gray, "gray_alpha": np.dstack([gray, alpha]), "rgba": np.dstack([photo, alpha]),
             "uint16": photo.astype(np.uint16) * 257, "float32": photo.astype(np.float32) / 255}[layout]
    background = bicubic.upscale_array(image)
    same = enhancer(nn.Identity(), bicubic).upscale_array(image)
    assert same.dtype == image.dtype and same.shape == background.shape
    peak = {np.uint8: 255, np.uint16: 65535}.get(image.dtype.type, 1.0)
    assert np.abs(same.astype(np.float64) - background).max() <= peak / 255
    changed = enhancer(Recolor(), bicubic).upscale_array(image)
    assert np.abs(changed.astype(np.float64) - background).max() > 0.1 * peak
    if layout in ("gray_alpha", "rgba"):
        assert np.array_equal(changed[..., -1], background[..., -1])


def test_tiny_image_and_no_faces(bicubic):
    """A 1x1 image goes through detection (nothing found) and the background model."""
    image = np.full((1, 1, 3), 128, np.uint8)
    restorer = FaceRestorer(face_model(Recolor()))
    assert restorer.detect(image) == []
    out = FaceEnhancer(face_model(Recolor()), bicubic).upscale_array(image)
    assert np.array_equal(out, bicubic.upscale_array(image))


def test_face_larger_than_the_image(photo, bicubic):
    big = [face_at(64, 64, 400)]  # its crop covers far more than the image
    background = bicubic.upscale_array(photo)
    assert np.abs(enhancer(nn.Identity(), bicubic, faces=big).upscale_array(photo).astype(int) - background).max() <= 1
    out = enhancer(Recolor(), bicubic, faces=big).upscale_array(photo)
    assert np.abs(out.astype(int) - background).mean() > 10


def test_thirty_faces(bicubic):
    """30 faces in a 6 x 5 grid, restored in batches (by a 256-pixel stand-in, for speed): each one changes,
    nothing between them does."""
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (150, 180, 3), dtype=np.uint8), (0, 0), 2)
    faces = [face_at(15 + 30 * i, 15 + 30 * j, 12) for i in range(6) for j in range(5)]
    background = bicubic.upscale_array(image)
    restorer = FaceRestorer(face_model(Recolor(), 256), FaceOptions(min_size=0), detector=lambda image: list(faces))
    out = restorer.paste(image, background, faces)
    changed = np.abs(out.astype(int) - background).max(-1)
    for face in faces:
        assert near(changed, face, 2.0).max() > 10
    inside = crop_regions(background.shape[:2], faces, 2.0, 256)
    assert np.array_equal(out[~inside], background[~inside])


def test_small_faces_are_left_to_the_background(photo, bicubic):
    small = [face_at(64, 64, 20)]  # a box of 20 pixels
    restorer = FaceRestorer(face_model(Recolor()), FaceOptions(min_size=32), detector=lambda image: list(small))
    assert restorer.detect(photo) == []
    restorer = FaceRestorer(face_model(Recolor()), FaceOptions(min_size=16), detector=lambda image: list(small))
    assert len(restorer.detect(photo)) == 1


def test_bad_options_and_models(bicubic):
    with pytest.raises(FaceError, match="strength must be between 0 and 1"):
        FaceOptions(strength=1.5)
    with pytest.raises(FaceError, match="color must be one of"):
        FaceOptions(color="lab")
    with pytest.raises(FaceError, match="is a sr network, not a face restorer"):
        FaceRestorer(load_model("bicubic", scale=2))
    wrong = ModelDescriptor(module=nn.Identity(), arch="Up", kwargs={},
                            facts=ModelFacts(purpose="face", scale=2, in_channels=3, out_channels=3))
    with pytest.raises(FaceError, match="must map S x S RGB crops"):
        FaceRestorer(wrong)


def test_missing_detector_weights_are_one_clear_line(monkeypatch):
    import superres.faces.detect as detect
    import superres.packages

    monkeypatch.setattr(superres.packages.importlib.util, "find_spec", lambda name: None)
    detect.load_mtcnn.cache_clear()
    try:
        with pytest.raises(FaceError, match=r"pip install 'facenet-pytorch>=2.5.3,!=2.6.0'"):
            detect.FaceDetector()
    finally:
        detect.load_mtcnn.cache_clear()


def test_tracker_steadies_a_still_face_and_follows_a_moving_one():
    rng = np.random.default_rng(1)
    still = face_at(100, 100, 60)
    raw, smooth = [], []
    tracker = FaceTracker()
    for _ in range(30):
        jitter = rng.normal(0, 1.0, (5, 2)).astype(np.float32)
        face = Face(still.box + rng.normal(0, 1.0, 4).astype(np.float32), still.landmarks + jitter, 0.9)
        raw.append(face.landmarks)
        smooth.append(tracker.update([face])[0].landmarks)
    step = lambda marks: np.abs(np.diff(np.array(marks[10:]), axis=0)).mean()  # noqa: E731
    assert step(smooth) < 0.5 * step(raw)
    tracker = FaceTracker()
    for t in range(30):  # moving right at 4 pixels per frame: followed with little lag
        out = tracker.update([face_at(100 + 4 * t, 100, 60)])[0]
    assert abs(out.landmarks[2, 0] - face_at(100 + 4 * 29, 100, 60).landmarks[2, 0]) < 4


def test_tracker_keeps_faces_apart_and_holds_missed_ones():
    a, b = face_at(50, 50, 40), face_at(200, 60, 40)
    tracker = FaceTracker(hold=2)
    assert len(tracker.update([a, b])) == 2
    out = tracker.update([b])  # a missed for a frame: held at its place
    assert len(out) == 2 and any(np.allclose(f.landmarks, a.landmarks) for f in out)
    tracker.update([b])
    assert len(tracker.update([b])) == 1  # dropped after ``hold`` frames


# --- the commands ---------------------------------------------------------------------------------


@pytest.fixture
def fake_face_checkpoint(monkeypatch, tmp_path) -> Path:
    """A path that load_model reads as the Recolor stand-in (no face architecture is needed here)."""
    import superres.zoo

    path = tmp_path / "face.pth"
    path.write_bytes(b"stand-in")
    real = superres.zoo.load_model

    def load(model, *args, **kwargs):
        return face_model(Recolor()) if str(model) == str(path) else real(model, *args, **kwargs)

    monkeypatch.setattr(superres.zoo, "load_model", load)
    return path


@pytest.fixture
def face_photo(tmp_path, photos) -> Path:
    from superres.io import write_image

    folder = tmp_path / "in"
    folder.mkdir()
    image = cv2.resize(photos["astronaut"], (256, 256), interpolation=cv2.INTER_AREA)
    write_image(folder / "astronaut.png", image)
    return folder


def test_upscale_command_with_a_face_model(face_photo, fake_face_checkpoint, tmp_path, capsys):
    from superres.cli import main
    from superres.io import read_image

    common = [str(face_photo), "-m", "bicubic", "-s", "2", "-q"]
    assert main(["upscale", *common, "-o", str(tmp_path / "plain")]) == 0
    assert main(["upscale", *common, "-o", str(tmp_path / "faces"), "--face-model", str(fake_face_checkpoint),
                 "--face-strength", "0.8"]) == 0
    plain = read_image(tmp_path / "plain" / "astronaut.png")[0]
    faces = read_image(tmp_path / "faces" / "astronaut.png")[0]
    assert plain.shape == faces.shape == (512, 512, 3)
    assert np.abs(faces - plain).max() > 0.1  # the face was found and restored
    assert (np.abs(faces - plain).max(-1) > 0).mean() < 0.3  # ...and only the face
    assert main(["upscale", *common, "-o", str(tmp_path / "x"), "--face-model", "bicubic"]) == 1
    assert "not a face restorer" in capsys.readouterr().err
    junk = tmp_path / "junk.pth"
    junk.write_text("junk\n")  # bytes the unpickler fails on with a KeyError
    assert main(["upscale", *common, "-o", str(tmp_path / "x"), "--face-model", str(junk)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"superres: error: {junk}: not a PyTorch checkpoint")
    assert main(["upscale", *common, "-o", str(tmp_path / "x"), "--face-model", str(fake_face_checkpoint),
                 "--face-strength", "2"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == ["superres: error: face strength must be between 0 and 1, "
                                                            "got 2.0"]


def test_faces_command(face_photo, fake_face_checkpoint, tmp_path):
    from superres.cli import main
    from superres.io import read_image

    out = tmp_path / "faces"
    assert main(["faces", str(face_photo), "-o", str(out), "-q", "--size", "128"]) == 0
    doc = json.loads((out / "astronaut.json").read_text())
    assert len(doc["faces"]) == 1 and doc["crop_size"] == 128 and not doc["restored"]
    face = doc["faces"][0]
    assert len(face["landmarks"]) == 5 and len(face["box"]) == 4 and face["score"] > 0.9
    crop = read_image(out / face["crop"])[0]
    assert crop.shape == (128, 128, 3)
    # the landmarks land on the template in the crop
    matrix = np.array(face["matrix"])
    np.testing.assert_allclose(np.c_[face["landmarks"], np.ones(5)] @ matrix.T, FFHQ_TEMPLATE_512 / 4, atol=6)
    assert main(["faces", str(face_photo), "-o", str(out), "-q", "--face-model", str(fake_face_checkpoint),
                 "--overwrite"]) == 0
    doc = json.loads((out / "astronaut.json").read_text())
    assert doc["restored"] and read_image(out / doc["faces"][0]["crop"])[0].shape == (512, 512, 3)


def test_video_command_with_a_face_model(face_photo, fake_face_checkpoint, tmp_path):
    from superres.cli import main
    from superres.io import read_image, write_image

    frames = tmp_path / "frames"
    frames.mkdir()
    still = read_image(face_photo / "astronaut.png")[0]
    for i in range(2):
        write_image(frames / f"{i:03d}.png", still)
    args = ["video", str(frames), "-m", "bicubic", "-s", "2", "-q"]
    assert main([*args, "-o", str(tmp_path / "plain")]) == 0
    assert main([*args, "-o", str(tmp_path / "faces"), "--face-model", str(fake_face_checkpoint)]) == 0
    for i in range(2):
        plain = read_image(tmp_path / "plain" / f"{i:03d}.png")[0]
        faces = read_image(tmp_path / "faces" / f"{i:03d}.png")[0]
        assert np.abs(faces - plain).max() > 0.1
