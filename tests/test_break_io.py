"""Issue 34's image and video input faults: animated images, the memory a decode needs, Pillow's own
pixel limit, files that are not regular files, and frames of one video in several sizes."""

from __future__ import annotations

import os
import threading
import tracemalloc

import cv2
import numpy as np
import pytest
from PIL import Image

from superres.errors import ImageError, SuperresError
from superres.io import check_image, file_samples, probe_image, read_image, read_rgb8, to_integer, write_image
from superres.io.image import read_samples

READERS = {"read_image": read_image, "read_samples": read_samples, "check_image": check_image,
           "probe_image": probe_image, "read_rgb8": read_rgb8}


def _frames(n: int = 5, size: tuple[int, int] = (48, 32)) -> list[Image.Image]:
    return [Image.fromarray(np.full((size[1], size[0], 3), 40 * i, np.uint8)) for i in range(n)]


def _one_line(message: str, path) -> None:
    assert str(path) in message and "\n" not in message


# --- item 4: animated images -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["anim.webp", "anim.png", "pages.tif", "anim.gif"])
@pytest.mark.parametrize("reader", ["read_image", "read_samples", "check_image", "probe_image"])
def test_animated_images_are_refused_at_the_header(tmp_path, name, reader):
    path = tmp_path / name
    first, *rest = _frames()
    first.save(path, save_all=True, append_images=rest, duration=100, loop=0)
    with pytest.raises(ImageError) as e:
        READERS[reader](path)
    message = str(e.value)
    _one_line(message, path)
    assert "5 frames" in message or "5 pages" in message
    assert "superres video" in message


def test_still_images_with_more_than_one_picture_are_read(tmp_path):
    import tifffile

    main = np.arange(24 * 32 * 3, dtype=np.uint8).reshape(24, 32, 3)
    with tifffile.TiffWriter(tmp_path / "thumb.tif") as tif:  # a reduced-resolution page, as scanners write
        tif.write(main, photometric="rgb")
        tif.write(main[::4, ::4], photometric="rgb", subfiletype=1)
    assert np.array_equal(read_samples(tmp_path / "thumb.tif")[0], main)

    first, second = _frames(2)  # a camera's MPO: the primary picture and another one
    first.save(tmp_path / "camera.jpg", format="MPO", save_all=True, append_images=[second])
    assert read_image(tmp_path / "camera.jpg")[1].format == "JPEG"

    _frames(1)[0].save(tmp_path / "one.webp", save_all=True, lossless=True)
    assert read_image(tmp_path / "one.webp")[0].shape == (32, 48, 3)


# --- item 9: the memory a decode needs -------------------------------------------------------------


@pytest.mark.parametrize("reader", ["read_image", "read_samples", "check_image", "probe_image", "read_rgb8"])
def test_decode_bounded_by_available_memory(tmp_path, monkeypatch, reader):
    import superres.io.image

    path = tmp_path / "a.png"
    write_image(path, np.zeros((200, 300, 3), np.uint8))
    monkeypatch.setattr(superres.io.image, "_MEMORY_CHECKED_FROM", 0)
    monkeypatch.setattr(superres.io.image, "available_memory", lambda: 100_000)
    with pytest.raises(ImageError) as e:
        READERS[reader](path)
    message = str(e.value)
    _one_line(message, path)
    assert "300x200" in message and "memory" in message and "available" in message
    monkeypatch.setattr(superres.io.image, "available_memory", lambda: 1 << 40)
    READERS[reader](path)


def test_to_integer_needs_no_float_copy_of_the_image():
    image = np.random.default_rng(0).random((1024, 1024, 3), dtype=np.float32)
    tracemalloc.start()
    try:
        out = to_integer(image, 8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(out, np.rint(image * 255).astype(np.uint8))
    assert peak < out.nbytes + image.nbytes // 2, peak  # before: two float copies (2 x 12 MB)


@pytest.mark.parametrize("case", ["rgb8", "gray16", "rgba8", "gray_alpha8", "float_tif"])
def test_read_samples_are_the_file_samples(tmp_path, case):
    rng = np.random.default_rng(2)
    if case == "float_tif":
        import tifffile

        path = tmp_path / "f.tif"
        tifffile.imwrite(path, rng.random((20, 30, 3), dtype=np.float32), photometric="rgb")
    else:
        shape, dtype = {"rgb8": ((20, 30, 3), np.uint8), "gray16": ((20, 30), np.uint16),
                        "rgba8": ((20, 30, 4), np.uint8), "gray_alpha8": ((20, 30, 2), np.uint8)}[case]
        pixels = rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
        path = tmp_path / f"{case}.png"
        if case == "gray_alpha8":
            Image.fromarray(pixels, "LA").save(path)
        else:
            cv2.imwrite(str(path), pixels)
    samples, info = read_samples(path)
    image, info_float = read_image(path)
    assert info == info_float
    expected = file_samples(image, info)
    assert samples.dtype == expected.dtype and np.array_equal(samples, expected)


def test_read_samples_keeps_no_float_copy(tmp_path):
    path = tmp_path / "gray.png"
    cv2.imwrite(str(path), np.zeros((500, 600), np.uint8))
    tracemalloc.start()
    try:
        samples, _ = read_samples(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert samples.shape == (500, 600, 3) and samples.dtype == np.uint8
    assert peak < 2 * samples.nbytes, peak


def test_upscale_of_a_path_runs_the_file_samples(tmp_path):
    from superres.infer.image import upscale

    gray16 = np.random.default_rng(5).integers(0, 65536, (12, 16), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "g.png"), gray16)
    out = upscale(tmp_path / "g.png", "bicubic", outscale=2)
    assert out.dtype == np.uint16 and np.array_equal(out, upscale(gray16, "bicubic", outscale=2))


# --- item 14: our max_pixels is the only pixel limit -----------------------------------------------


@pytest.mark.parametrize("name", ["a.png", "la_lzw.tif"])
def test_pillow_limit_is_not_applied(tmp_path, monkeypatch, name):
    path = tmp_path / name
    pixels = np.random.default_rng(3).integers(0, 256, (30, 40, 2), dtype=np.uint8)
    if name.endswith(".png"):
        Image.fromarray(pixels[..., 0]).save(path)
    else:  # gray + alpha LZW: decoded by Pillow here (tifffile needs imagecodecs for LZW)
        Image.fromarray(pixels, "LA").save(path, compression="tiff_lzw")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1200 pixels: over twice Pillow's limit
    for reader in READERS.values():
        reader(path)
    _, info = read_image(path)
    assert info.alpha == name.endswith(".tif")
    assert Image.MAX_IMAGE_PIXELS == 100  # put back
    with pytest.raises(ImageError, match="over the limit of 1000 pixels"):
        read_image(path, max_pixels=1000)


def test_truncated_png_still_reads_as_truncated(tmp_path, monkeypatch):
    path = tmp_path / "cut.png"
    write_image(path, np.random.default_rng(4).integers(0, 256, (60, 80, 3), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-400])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    for reader in (read_image, check_image):
        with pytest.raises(ImageError, match="corrupt or truncated PNG"):
            reader(path)


# --- item 17: non-regular files, frames of several sizes -------------------------------------------


@pytest.mark.parametrize("reader", ["read_image", "read_samples", "check_image", "probe_image"])
def test_fifo_refused_without_waiting(tmp_path, reader):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            READERS[reader](fifo)
            outcome.append(None)
        except BaseException as e:  # handed to the test's thread
            outcome.append(e)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(5)
    if thread.is_alive():  # a writer that closes at once lets the blocked reader go on
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail(f"{reader} waited on a FIFO")
    assert isinstance(outcome[0], ImageError), outcome
    _one_line(str(outcome[0]), fifo)
    assert "not a regular file" in str(outcome[0])


@pytest.mark.parametrize("reader", ["read_image", "check_image", "probe_image"])
def test_device_file_refused(reader):
    # /dev/null stands for /dev/zero, which was read until memory ran out (checked by hand)
    with pytest.raises(ImageError, match="/dev/null: not a regular file"):
        READERS[reader]("/dev/null")


def test_frame_of_another_size_named(tmp_path):
    write_image(tmp_path / "0001.png", np.zeros((24, 32, 3), np.uint8))
    write_image(tmp_path / "0002.png", np.zeros((24, 30, 3), np.uint8))
    assert read_rgb8(tmp_path / "0001.png", size=(32, 24)).shape == (24, 32, 3)
    with pytest.raises(ImageError) as e:
        read_rgb8(tmp_path / "0002.png", size=(32, 24))
    _one_line(str(e.value), tmp_path / "0002.png")
    assert "30x24" in str(e.value) and "32x24" in str(e.value)


def test_video_of_frames_in_several_sizes_refused(tmp_path):
    from superres.infer.video import upscale_video

    frames = tmp_path / "frames"
    frames.mkdir()
    for i, width in enumerate((32, 32, 30, 32)):
        write_image(frames / f"{i:04d}.png", np.full((24, width, 3), 60 * i, np.uint8))
    with pytest.raises(SuperresError) as e:
        upscale_video(frames, tmp_path / "clip.mp4", model="bicubic", outscale=1, codec="libx264")
    assert "0002.png" in str(e.value) and "30x24" in str(e.value) and "32x24" in str(e.value)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "clip.mp4").exists()
