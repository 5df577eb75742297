"""Read and write image files: 8/16-bit, gray/RGB/RGBA, EXIF orientation, atomic writes.

Pixels are decoded by OpenCV (which keeps 16-bit samples and alpha); Pillow reads the header
first, so that the format, the size (decompression-bomb guard), the EXIF orientation and the
ICC profile are known before any pixel is decoded. Arrays are always RGB order.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from superres.errors import ImageError
from superres.io.files import atomic_write

# Pillow format name -> file extensions we write it with.
FORMATS = {"PNG": (".png",), "JPEG": (".jpg", ".jpeg"), "WEBP": (".webp",), "TIFF": (".tif", ".tiff"),
           "BMP": (".bmp",)}
_EXT_TO_FORMAT = {ext: fmt for fmt, exts in FORMATS.items() for ext in exts}
_SIXTEEN_BIT_FORMATS = {"PNG", "TIFF"}
_ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}
_ICC_FORMATS = {"PNG", "JPEG", "WEBP", "TIFF"}
DEFAULT_MAX_PIXELS = 20000 * 20000

_pillow_limit_lock = threading.Lock()
if hasattr(cv2, "setLogLevel"):
    cv2.setLogLevel(0)  # decoder warnings would bypass our one-line errors


@dataclass(frozen=True)
class ImageInfo:
    """What is needed to write an image back the way it came in."""

    format: str = "PNG"
    bit_depth: int = 8
    gray: bool = False
    alpha: bool = False
    icc_profile: bytes | None = None
    orientation: int = 1  # the EXIF orientation that was applied when reading
    path: Path | None = None


def read_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               ) -> tuple[np.ndarray, ImageInfo]:
    """Read PNG/JPEG/WebP/TIFF/BMP into float32 HxWxC RGB(A) in [0, 1] plus its :class:`ImageInfo`.

    Gray images come back as 3 equal channels (``info.gray`` is set); EXIF orientation is applied.
    Raises :class:`ImageError` naming the file for anything that is not a readable image, and for
    images larger than ``max_pixels`` (``None`` allows any size).
    """
    path = Path(path)
    data = _read_bytes(path)
    fmt, (width, height), orientation, icc = _probe(path, data)
    _check_pixels(path, width, height, max_pixels)

    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ImageError(f"{path}: corrupt or truncated {fmt} file")
    if pixels.dtype == np.uint8:
        bit_depth, scale = 8, 1 / 255
    elif pixels.dtype == np.uint16:
        bit_depth, scale = 16, 1 / 65535
    else:
        raise ImageError(f"{path}: {pixels.dtype} samples are not supported (8 or 16-bit integers only)")

    if pixels.ndim == 2:
        pixels = pixels[..., None]
    channels = pixels.shape[2]
    if channels == 1:
        rgb = np.repeat(pixels, 3, axis=2)
    elif channels == 2:  # gray + alpha
        rgb = pixels[..., [0, 0, 0, 1]]
    elif channels == 3:
        rgb = pixels[..., ::-1]
    elif channels == 4:
        rgb = pixels[..., [2, 1, 0, 3]]
    else:
        raise ImageError(f"{path}: {channels}-channel images are not supported")
    rgb = apply_orientation(rgb, orientation)
    image = np.multiply(rgb, np.float32(scale), dtype=np.float32)
    info = ImageInfo(format=fmt, bit_depth=bit_depth, gray=channels in (1, 2), alpha=channels in (2, 4),
                     icc_profile=icc, orientation=orientation, path=path)
    return image, info


def check_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[str, int, int]:
    """(format, width, height) of an image file that :func:`read_image` would read, checked the same way
    (a readable file, a supported format, the size within ``max_pixels``, pixels that decode) without
    keeping its pixels: the whole file is decoded at 1/8 scale in gray, to find truncated data cheaply.
    For callers that must answer before the work starts (the web server)."""
    path = Path(path)
    data = _read_bytes(path)
    fmt, (width, height), _, _ = _probe(path, data)
    _check_pixels(path, width, height, max_pixels)
    if cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8) is None:
        raise ImageError(f"{path}: corrupt or truncated {fmt} file")
    return fmt, width, height


def _read_bytes(path: Path) -> bytes:
    with _file_errors(path):
        data = path.read_bytes()
    if not data:
        raise ImageError(f"{path}: empty file (0 bytes)")
    return data


@contextlib.contextmanager
def _file_errors(path: Path):
    """The system's errors on reading ``path`` as one line each, the same for every reader here."""
    try:
        yield
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder, not an image") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot read: {e.strerror or e}") from None


def probe_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[str, int, int]:
    """(format, width, height) from the file's header alone: the errors :func:`read_image` would
    give for a missing, empty, unreadable, unsupported or too large file, in a fraction of the time."""
    path = Path(path)
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image")
    with _file_errors(path):
        empty = path.stat().st_size == 0
    if empty:
        raise ImageError(f"{path}: empty file (0 bytes)")
    fmt, (width, height), _, _ = _probe(path, path)
    _check_pixels(path, width, height, max_pixels)
    return fmt, width, height


def _check_pixels(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels and width * height > max_pixels:
        raise ImageError(f"{path}: image is {width}x{height}, over the limit of {max_pixels} pixels "
                         "(a possible decompression bomb); --max-pixels raises the limit")


def _probe(path: Path, data: bytes | Path) -> tuple[str, tuple[int, int], int, bytes | None]:
    """Format, size, EXIF orientation and ICC profile from the header (of the file's bytes, or of the
    file itself), without decoding pixels."""
    with _pillow_limit_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's own bomb warning and corrupt-EXIF chatter
        old_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # we apply our own limit
        try:
            with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
                fmt = "JPEG" if im.format == "MPO" else im.format
                size = im.size
                try:
                    orientation = int(im.getexif().get(0x0112, 1))
                except Exception:  # a broken EXIF block must not make the pixels unreadable
                    orientation = 1
                icc = im.info.get("icc_profile") or None
        except UnidentifiedImageError:
            raise ImageError(f"{path}: not an image file, or a format superres cannot read") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageError(f"{path}: corrupt or truncated image ({e})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = old_limit
    if fmt not in FORMATS:
        raise ImageError(f"{path}: {fmt} images are not supported (use PNG, JPEG, WebP, TIFF or BMP)")
    return fmt, size, orientation if 1 <= orientation <= 8 else 1, icc


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an HxWxC array stored with EXIF ``orientation`` (1-8) the right way up."""
    transforms = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(transforms[orientation](image))


def image_format(path: str | os.PathLike) -> str:
    """The format a file name asks for, from its extension."""
    ext = Path(path).suffix.lower()
    if ext not in _EXT_TO_FORMAT:
        raise ImageError(f"{path}: unsupported output extension {ext!r} "
                         f"(use one of {', '.join(sorted(_EXT_TO_FORMAT))})")
    return _EXT_TO_FORMAT[ext]


def encode_image(image: np.ndarray, fmt: str, info: ImageInfo | None = None, quality: int = 95) -> bytes:
    """Encode an RGB(A) array (float in [0, 1], uint8 or uint16; HxW or HxWxC) as ``fmt`` bytes.

    The bit depth is the array's for integer arrays, else ``info.bit_depth`` (8 by default), lowered
    to 8 for formats without 16-bit samples. A gray source (``info.gray``) is written gray; alpha is
    dropped for formats that cannot store it (JPEG, BMP). The ICC profile is kept for 8-bit output.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an HxW or HxWxC image with 1, 3 or 4 channels, got shape {image.shape}")
    if image.dtype == np.uint8:
        bit_depth = 8
    elif image.dtype == np.uint16:
        bit_depth = 16
    else:
        bit_depth = info.bit_depth if info else 8
    if fmt not in _SIXTEEN_BIT_FORMATS:
        bit_depth = 8
    pixels = to_integer(image, bit_depth)

    color, alpha = pixels[..., :3], pixels[..., 3:]
    if fmt not in _ALPHA_FORMATS:
        alpha = alpha[..., :0]
    if color.shape[2] == 3 and info is not None and info.gray and alpha.shape[2] == 0:
        color = cv2.cvtColor(np.ascontiguousarray(color), cv2.COLOR_RGB2GRAY)[..., None]
    if alpha.shape[2] and color.shape[2] == 1:
        color = np.repeat(color, 3, axis=2)  # OpenCV cannot write gray + alpha

    icc = info.icc_profile if info else None
    if icc and bit_depth == 8 and fmt in _ICC_FORMATS:
        return _encode_pillow(np.concatenate([color, alpha], axis=2), fmt, icc, quality)
    bgr = color[..., ::-1] if color.shape[2] == 3 else color
    out = np.ascontiguousarray(np.concatenate([bgr, alpha], axis=2))
    params = {"JPEG": [cv2.IMWRITE_JPEG_QUALITY, quality], "WEBP": [cv2.IMWRITE_WEBP_QUALITY, quality]}
    ok, buf = cv2.imencode(FORMATS[fmt][0], out, params.get(fmt, []))
    if not ok:
        raise ImageError(f"OpenCV could not encode a {out.shape} {out.dtype} image as {fmt}")
    return buf.tobytes()


def _encode_pillow(pixels: np.ndarray, fmt: str, icc: bytes, quality: int) -> bytes:
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[pixels.shape[2]]
    im = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode=mode)
    buf = io.BytesIO()
    kwargs = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    im.save(buf, format=fmt, icc_profile=icc, **kwargs)
    return buf.getvalue()


def to_integer(image: np.ndarray, bit_depth: int = 8) -> np.ndarray:
    """Float [0, 1] -> uint8/uint16 by rounding to nearest (integer arrays are converted by shifting)."""
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    if image.dtype == dtype:
        return image
    if image.dtype == np.uint16:
        return (image.astype(np.uint32) * 255 + 32767) // 65535  # exact rounding 16 -> 8 bit
    if image.dtype == np.uint8:
        return image.astype(np.uint16) * 257
    peak = 255.0 if bit_depth == 8 else 65535.0
    return np.rint(np.clip(image, 0.0, 1.0) * peak).astype(dtype)


def read_rgb8(path: str | os.PathLike) -> np.ndarray:
    """An image as uint8 RGB (alpha dropped, gray repeated, 16-bit rounded to 8): what 8-bit
    pipelines (training data, video frames) work on."""
    img, _ = read_image(path)
    return to_integer(img[..., :3], 8)


def write_image(path: str | os.PathLike, image: np.ndarray, info: ImageInfo | None = None,
                quality: int = 95) -> None:
    """Write an image atomically (temp file + rename); the format comes from the extension.

    ``image`` is RGB(A), float in [0, 1] or uint8/uint16; ``info`` (from :func:`read_image`) keeps
    the source's bit depth, grayness and ICC profile.
    """
    path = Path(path)
    data = encode_image(image, image_format(path), info, quality)
    try:
        atomic_write(path, data)
    except Exception as e:
        raise ImageError(str(e)) from None
