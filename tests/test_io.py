import io
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from superres.errors import ImageError
from superres.io import list_images, read_image, write_image
from superres.io.image import ImageInfo


@pytest.fixture
def photo(photos):
    return photos["chelsea"][:64, :80]


@pytest.mark.parametrize("ext", [".png", ".tif", ".bmp"])
def test_lossless_8bit_round_trip(tmp_path, photo, ext):
    path = tmp_path / f"a{ext}"
    write_image(path, photo)
    back, info = read_image(path)
    assert back.dtype == np.float32 and back.shape == photo.shape
    assert info.bit_depth == 8 and not info.gray and not info.alpha
    assert np.abs(back - photo).max() <= 0.5 / 255 + 1e-7


@pytest.mark.parametrize("ext", [".jpg", ".jpeg", ".webp"])
def test_lossy_formats(tmp_path, photo, ext):
    path = tmp_path / f"a{ext}"
    write_image(path, photo, quality=95)
    back, info = read_image(path)
    assert back.shape == photo.shape and info.format in ("JPEG", "WEBP")
    assert np.abs(back - photo).mean() < 0.02


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_stays_16bit(tmp_path, ext):
    rng = np.random.default_rng(1)
    img16 = rng.integers(0, 65536, (20, 30, 3), dtype=np.uint16)
    path = tmp_path / f"a{ext}"
    write_image(path, img16)
    back, info = read_image(path)
    assert info.bit_depth == 16
    assert np.array_equal(np.rint(back * 65535).astype(np.uint16), img16)
    out = tmp_path / f"b{ext}"
    write_image(out, back, info)  # float in, info says 16 bit: written back as 16 bit
    assert cv2.imread(str(out), cv2.IMREAD_UNCHANGED).dtype == np.uint16


def test_gray_and_rgba(tmp_path, photo):
    gray = np.rint(photo[..., 1] * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    img, info = read_image(tmp_path / "g.png")
    assert info.gray and img.shape == (*gray.shape, 3)
    assert np.array_equal(np.rint(img[..., 0] * 255), gray) and np.array_equal(img[..., 0], img[..., 2])
    write_image(tmp_path / "g2.png", img, info)
    assert cv2.imread(str(tmp_path / "g2.png"), cv2.IMREAD_UNCHANGED).ndim == 2  # stays gray

    rgba = np.concatenate([photo, np.linspace(0, 1, photo.shape[1])[None, :, None].repeat(photo.shape[0], 0)], 2)
    write_image(tmp_path / "a.png", rgba)
    back, info = read_image(tmp_path / "a.png")
    assert info.alpha and back.shape[2] == 4
    assert np.abs(back - rgba).max() <= 0.5 / 255 + 1e-7
    pil = np.asarray(Image.open(tmp_path / "a.png"))  # channel order on disk is RGBA
    assert np.array_equal(pil, np.rint(np.clip(rgba, 0, 1) * 255).astype(np.uint8))
    write_image(tmp_path / "a.jpg", back, info)  # JPEG cannot store alpha: dropped
    assert read_image(tmp_path / "a.jpg")[0].shape[2] == 3


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, photo, orientation):
    u8 = np.rint(photo * 255).astype(np.uint8)
    im = Image.fromarray(u8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    im.save(path, exif=exif)
    img, info = read_image(path)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert info.orientation == orientation
    assert np.array_equal(np.rint(img * 255).astype(np.uint8), expected)


def test_icc_profile_kept(tmp_path, photo):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    u8 = np.rint(photo * 255).astype(np.uint8)
    Image.fromarray(u8).save(tmp_path / "c.png", icc_profile=icc)
    img, info = read_image(tmp_path / "c.png")
    assert info.icc_profile == icc
    for ext in (".png", ".jpg", ".webp"):
        write_image(tmp_path / f"d{ext}", img, info)
        assert Image.open(tmp_path / f"d{ext}").info.get("icc_profile") == icc


def _encoded(photo, ext):
    _, buf = cv2.imencode(ext, np.rint(photo * 255).astype(np.uint8))
    return buf.tobytes()


@pytest.mark.parametrize("make, message", [
    (lambda p: b"", "empty file"),
    (lambda p: b"this is not an image at all", "not an image"),
    (lambda p: _encoded(p, ".png")[: len(_encoded(p, ".png")) // 2], "corrupt or truncated"),
    (lambda p: _encoded(p, ".jpg")[:300], "corrupt or truncated"),
    (lambda p: _encoded(p, ".jpg")[:-100], "corrupt or truncated"),
    (lambda p: _encoded(p, ".webp")[:200], "corrupt"),
])
def test_bad_files_give_one_clear_line(tmp_path, photo, make, message):
    path = tmp_path / "bad.png"
    path.write_bytes(make(photo))
    with pytest.raises(ImageError, match=message) as e:
        read_image(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_missing_folder_and_unsupported_format(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="is a folder"):
        read_image(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "x.gif")
    with pytest.raises(ImageError, match="GIF images are not supported"):
        read_image(tmp_path / "x.gif")
    with pytest.raises(ImageError, match="unsupported output extension"):
        write_image(tmp_path / "x.xyz", np.zeros((4, 4, 3)))


def test_decompression_bomb_refused(tmp_path, monkeypatch):
    # A PNG whose header claims 30000x30000 pixels: refused before any pixel is decoded.
    import superres.io.image

    monkeypatch.setattr(superres.io.image, "available_memory", lambda: 1 << 40)  # the 15 GB it claims to need
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", 30000, 30000)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    (tmp_path / "bomb.png").write_bytes(bytes(data))
    with pytest.raises(ImageError, match="over the limit"):
        read_image(tmp_path / "bomb.png")
    with pytest.raises(ImageError, match="corrupt"):  # allowed through, then found truncated
        read_image(tmp_path / "bomb.png", max_pixels=None)


def test_writes_are_atomic(tmp_path, photo, monkeypatch):
    path = tmp_path / "out.png"
    write_image(path, photo)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(ImageError, match="No space left"):
        write_image(path, photo * 0.5)
    assert path.read_bytes() == before  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temp file left


def test_list_images(tmp_path):
    for name in ["b.png", "a.JPG", ".hidden.png", "notes.txt", "sub/c.webp"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png"]
    assert [p.name for p in list_images(tmp_path, recursive=True)] == ["a.JPG", "b.png", "c.webp"]


def test_info_defaults_write_8bit(tmp_path, photo):
    write_image(tmp_path / "x.png", photo, ImageInfo())
    assert cv2.imread(str(tmp_path / "x.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint8
    assert Path(tmp_path / "x.png").stat().st_size > 0


def test_run_pipelined_overlaps_reading_with_compute_and_keeps_going():
    """The next file is read while the network computes; a failing read, compute or write costs one item."""
    import threading

    from superres.io.pipeline import run_pipelined

    computing = threading.Event()
    read_during_compute = []

    def read(i: int) -> int:
        read_during_compute.append(computing.is_set())
        if i == 2:
            raise ValueError("unreadable")
        return i

    def compute(i: int, loaded: int) -> int:
        computing.set()
        threading.Event().wait(0.05)  # long enough for the reader thread to start the next file
        computing.clear()
        if i == 4:
            raise OSError("network failed")
        return loaded * 10

    written: list[int] = []

    def write(i: int, result: int) -> None:
        if i == 5:
            raise OSError("disk full")
        written.append(result)

    failures: list[tuple[int, str]] = []
    done, failed = run_pipelined(range(8), read, compute, write, lambda i, e: failures.append((i, str(e))),
                                 (ValueError, OSError))
    assert (done, failed) == (5, 3)
    assert written == [0, 10, 30, 60, 70]  # in order
    assert sorted(failures) == [(2, "unreadable"), (4, "network failed"), (5, "disk full")]
    assert any(read_during_compute)


def test_run_pipelined_finishes_started_writes_when_interrupted():
    from superres.io.pipeline import run_pipelined

    written: list[int] = []

    def compute(i: int, loaded: int) -> int:
        if i == 3:
            raise KeyboardInterrupt
        return loaded

    with pytest.raises(KeyboardInterrupt):
        run_pipelined(range(6), lambda i: i, compute, lambda i, r: written.append(r), lambda i, e: None, (OSError,))
    assert written == [0, 1, 2]
