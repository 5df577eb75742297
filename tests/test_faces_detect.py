"""MTCNN face detection on real photos, against facenet-pytorch's MTCNN (the reference, a dev dependency),
and the stability of tracked faces in a still clip. Photos from ../shared/data (skipped when absent) and
the bundled samples."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from superres.faces import FaceDetector, FaceTracker
from superres.io import read_rgb8

# BSD200 training images with people (11 faces of 45-163 pixels), and T91 images with none
PEOPLE = ["113044", "189003", "246053", "285036", "376001"]
NO_PEOPLE = ["t1", "t10", "t12", "t2", "t20", "tt1", "tt10"]


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


@pytest.fixture(scope="module")
def reference():
    facenet = pytest.importorskip("facenet_pytorch")
    return facenet.MTCNN(keep_all=True, device="cpu")


def reference_faces(reference, image: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    boxes, _, points = reference.detect(image, landmarks=True)
    if boxes is None:
        return []
    return [(np.asarray(b, np.float64), np.asarray(p, np.float64)) for b, p in zip(boxes, points, strict=True)]


def landmark_error(ours: np.ndarray, ref: np.ndarray) -> float:
    """The largest landmark distance, in inter-ocular distances of the reference."""
    return float(np.linalg.norm(ours - ref, axis=1).max() / np.linalg.norm(ref[1] - ref[0]))


def assert_matches_reference(faces, refs, name: str) -> float:
    """Every reference face over 32 pixels is found, its five landmarks within 5% of the eye distance."""
    worst = 0.0
    for box, points in refs:
        if max(box[2] - box[0], box[3] - box[1]) <= 32:
            continue
        errors = [landmark_error(f.landmarks, points) for f in faces]
        assert errors and min(errors) <= 0.05, f"{name}: face at {np.round(box)} not found (errors {errors})"
        worst = max(worst, min(errors))
    return worst


def test_photos_with_faces_match_the_reference(shared_data, detector, reference):
    images = {"woman": shared_data / "Set5" / "HR" / "woman.png"}
    images |= {name: shared_data / "BSD200" / f"{name}.png" for name in PEOPLE}
    total = 0
    for name, path in images.items():
        image = read_rgb8(path)
        faces, refs = detector(image), reference_faces(reference, image)
        assert refs, f"{name}: the reference finds no face"
        assert_matches_reference(faces, refs, name)
        total += len(refs)
    assert total >= 12


def test_face_larger_than_the_image(shared_data, detector, reference):
    """Set5 head: the face runs off the image. facenet-pytorch squeezes the part of a box inside the image
    into its crops (the paper's code pads with black), which puts its eye on the cheek, far from where it
    puts it when the image is padded with black; ours takes the padded crops directly. On the padded image
    the two implementations agree."""
    image = read_rgb8(shared_data / "Set5" / "HR" / "head.png")
    pad = 200
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    faces = detector(image)
    assert len(faces) == 1 and faces[0].box[3] > image.shape[0]  # the box runs past the bottom edge
    refs = reference_faces(reference, padded)
    assert_matches_reference(detector(padded), refs, "head (padded)")
    ref_points = refs[0][1] - pad
    squeezed = reference_faces(reference, image)[0][1]
    ours = landmark_error(faces[0].landmarks, ref_points)
    assert ours < 0.3 < landmark_error(squeezed, ref_points)
    eyes = faces[0].landmarks[:2]
    assert (eyes > 0).all() and (eyes < image.shape[1::-1]).all()


def test_no_faces_without_people(shared_data, detector):
    for name in NO_PEOPLE:
        image = read_rgb8(shared_data / "T91" / f"{name}.png")
        assert detector(image) == [], name


def test_bundled_photo_and_thirty_faces(photos, detector, reference):
    """The astronaut sample (no shared data needed): one face, as the reference; then 30 copies of it in a
    6 x 5 grid: all 30 found."""
    photo = np.rint(photos["astronaut"] * 255).astype(np.uint8)
    photo = cv2.resize(photo, (256, 256), interpolation=cv2.INTER_AREA)
    faces = detector(photo)
    assert len(faces) == 1
    assert_matches_reference(faces, reference_faces(reference, photo), "astronaut")
    x1, y1, x2, y2 = (faces[0].box + np.array([-12, -12, 12, 12])).astype(int)
    head = cv2.resize(photo[max(y1, 0):y2, max(x1, 0):x2], (64, 72), interpolation=cv2.INTER_AREA)
    grid = np.concatenate([np.concatenate([head] * 6, 1)] * 5, 0)
    found = detector(grid)
    assert len(found) == 30
    centres = np.array([(f.box[:2] + f.box[2:]) / 2 for f in found])
    cells = {(int(x // 64), int(y // 72)) for x, y in centres}
    assert len(cells) == 30  # one in each cell


def test_tracked_face_is_steady_in_a_still_clip(shared_data, detector):
    """A static clip from a still photo with fresh noise in every frame: the tracked box centre moves less
    than a pixel per frame (and less than the raw detections')."""
    still = read_rgb8(shared_data / "Set5" / "HR" / "woman.png").astype(np.float32)
    rng = np.random.default_rng(0)
    tracker = FaceTracker()
    raw, tracked = [], []
    for _ in range(8):
        frame = np.clip(still + rng.normal(0, 3, still.shape), 0, 255).astype(np.uint8)
        faces = detector(frame)
        assert len(faces) == 1
        raw.append((faces[0].box[:2] + faces[0].box[2:]) / 2)
        smooth = tracker.update(faces)
        tracked.append((smooth[0].box[:2] + smooth[0].box[2:]) / 2)
    moves = np.linalg.norm(np.diff(np.array(tracked), axis=0), axis=1)
    raw_moves = np.linalg.norm(np.diff(np.array(raw), axis=0), axis=1)
    assert moves.max() < 1.0
    assert moves.mean() <= raw_moves.mean()


def test_large_images_are_searched_at_a_reduced_size(photos, detector, monkeypatch):
    """Where P-Net's first pyramid level would be too large, a smaller copy is searched and the faces
    scaled back (here forced on a 256-pixel photo)."""
    import superres.faces.detect as detect

    photo = cv2.resize(np.rint(photos["astronaut"] * 255).astype(np.uint8), (256, 256), interpolation=cv2.INTER_AREA)
    [full] = detector(photo)
    monkeypatch.setattr(detect, "MAX_LEVEL_PIXELS", 30_000)
    [reduced] = detector(photo)
    assert np.abs(reduced.landmarks - full.landmarks).max() < 0.1 * full.size
