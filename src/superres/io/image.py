"""Read and write image files: 8/16-bit, gray/RGB/RGBA, EXIF orientation, atomic writes.

Pixels are decoded by OpenCV (which keeps 16-bit samples and alpha); Pillow reads the header
first, so that the format, the size, the EXIF orientation, the ICC profile and the number of
frames or pages are known before any pixel is decoded. A file is refused there if it is animated
or holds several pages (a decode would give the first alone), if it is larger than ``max_pixels``
(the decompression-bomb guard: ours, not Pillow's process-wide one), or if its decode needs more
memory than the machine has available. Only regular files are read: not devices or FIFOs.
Arrays are always RGB order.

Float TIFFs (16, 32 or 64-bit samples, as scientific cameras and HDR tools write them) are read and
written by tifffile. Their values are used as they are when they lie in [0, 1]; otherwise the image is
mapped linearly from [min(0, lowest), max(1, highest)] to [0, 1] (with a warning) and a float TIFF
output is mapped back, so nothing is clipped. NaN or infinite samples are refused.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from superres.errors import ImageError
from superres.io.files import atomic_write
from superres.memory import available_memory

# Pillow format name -> file extensions we write it with.
FORMATS = {"PNG": (".png",), "JPEG": (".jpg", ".jpeg"), "WEBP": (".webp",), "TIFF": (".tif", ".tiff"),
           "BMP": (".bmp",)}
_EXT_TO_FORMAT = {ext: fmt for fmt, exts in FORMATS.items() for ext in exts}
_SIXTEEN_BIT_FORMATS = {"PNG", "TIFF"}
_ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}
_ICC_FORMATS = {"PNG", "JPEG", "WEBP", "TIFF"}
DEFAULT_MAX_PIXELS = 20000 * 20000
# Reads needing less are not checked against the memory available: they fit wherever Python runs, and the
# small images of a training set are read by the thousand.
_MEMORY_CHECKED_FROM = 256 << 20

_pillow_limit_lock = threading.Lock()
_BAND_BYTES = 4 << 20  # float samples converted at a time by to_integer
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


@contextlib.contextmanager
def _quiet_opencv():
    """OpenCV's decoder warnings (``[ WARN:0] ... PNG input buffer is incomplete``) off around a decode:
    our one-line errors say it, and the level is put back for the caller's own OpenCV use."""
    log = cv2.utils.logging
    old = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        log.setLogLevel(old)


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
    float_samples: bool = False  # a float TIFF: bit_depth is 16, 32 or 64 bits per float sample
    float_range: tuple[float, float] = (0.0, 1.0)  # the source values that [0, 1] stands for


def read_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               ) -> tuple[np.ndarray, ImageInfo]:
    """Read PNG/JPEG/WebP/TIFF/BMP into float32 HxWxC RGB(A) in [0, 1] plus its :class:`ImageInfo`.

    Gray images come back as 3 equal channels (``info.gray`` is set); EXIF orientation is applied.
    Raises :class:`ImageError` naming the file for anything that is not a readable image (animated
    images and multi-page TIFFs included), for images larger than ``max_pixels`` (``None`` allows any
    size) and for images whose decode needs more memory than the machine has available.
    """
    return _read(Path(path), max_pixels, floats=True)


def read_samples(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 ) -> tuple[np.ndarray, ImageInfo]:
    """The file's own samples and its :class:`ImageInfo`: uint8/uint16 HxWx3 RGB or HxWx4 RGBA (gray
    repeated, EXIF orientation applied), float32 in [0, 1] for a float TIFF. The same as
    ``file_samples(*read_image(path, max_pixels))`` without a float copy of the image on the way (4 bytes
    a sample: 2 GB for a 13000x13000 gray PNG, where the samples take 0.5 GB)."""
    return _read(Path(path), max_pixels, floats=False)


def _read(path: Path, max_pixels: int | None, floats: bool) -> tuple[np.ndarray, ImageInfo]:
    data = _read_bytes(path)
    header = _probe(path, data)
    _check_pixels(path, header, max_pixels)
    _verify(path, data, header.format)
    _check_memory(path, header, floats)
    if header.mode == "float":
        return _read_float_tiff(path, data, header)
    if header.format == "TIFF" and header.mode == "LA":  # OpenCV drops a TIFF's alpha when the colour is gray
        pixels = _decode_tiff(data)
    else:
        with _quiet_opencv():
            pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ImageError(f"{path}: corrupt or truncated {header.format} file")
    if pixels.dtype == np.uint8:
        bit_depth, scale = 8, 1 / 255
    elif pixels.dtype == np.uint16:
        bit_depth, scale = 16, 1 / 65535
    elif pixels.dtype.kind == "f":  # a float TIFF that Pillow reads as mode F
        return _read_float_tiff(path, data, header)
    else:
        raise ImageError(f"{path}: {pixels.dtype} samples are not supported (8 or 16-bit integers, or floats)")
    del data  # the file's bytes: as large as the pixels for a BMP or an uncompressed TIFF

    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if channels not in (1, 2, 3, 4):
        raise ImageError(f"{path}: {channels}-channel images are not supported")
    rgb = apply_orientation(_rgb_order(pixels), header.orientation)
    # OpenCV decodes gray + alpha as 4 channels: Pillow's mode says what the file holds
    gray = channels in (1, 2) or (header.mode in _GRAY_MODES and channels != 3)
    info = ImageInfo(format=header.format, bit_depth=bit_depth, gray=gray, alpha=channels in (2, 4),
                     icc_profile=header.icc, orientation=header.orientation, path=path)
    if not floats:
        return rgb, info
    return np.multiply(rgb, np.float32(scale), dtype=np.float32), info


def _rgb_order(pixels: np.ndarray) -> np.ndarray:
    """OpenCV's gray, gray + alpha, BGR or BGRA samples as RGB or RGBA; colour images are turned around in
    place (no copy of a large image)."""
    if pixels.ndim == 2:
        return np.repeat(pixels[..., None], 3, axis=2)
    channels = pixels.shape[2]
    if channels == 1:
        return np.repeat(pixels, 3, axis=2)
    if channels == 2:
        return pixels[..., [0, 0, 0, 1]]
    code = cv2.COLOR_BGR2RGB if channels == 3 else cv2.COLOR_BGRA2RGBA
    return cv2.cvtColor(pixels, code, dst=pixels if pixels.flags.writeable else None)


def _decode_tiff(data: bytes) -> np.ndarray | None:
    """A TIFF's first image in RGB(A) order: by tifffile (any sample type, gray + alpha), else by Pillow or
    OpenCV for the compressions tifffile needs the imagecodecs package for (LZW, JPEG); None if none can."""
    import tifffile

    try:
        return tifffile.imread(io.BytesIO(data), key=0)
    except Exception:  # damage or a codec tifffile lacks: Pillow or OpenCV may still read it
        pass
    try:
        with _pillow_open(io.BytesIO(data), load=True) as im:
            if im.mode in ("L", "LA", "RGB", "RGBA", "F"):
                return np.asarray(im)
    except Exception:  # Pillow reads no float RGB: OpenCV does
        pass
    with _quiet_opencv():
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is not None and pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        pixels = pixels[..., [2, 1, 0, 3][:pixels.shape[2]]]
    return pixels


def _verify(path: Path, data: bytes, fmt: str) -> None:
    """A truncated or damaged PNG found by its chunks' lengths and CRCs (Pillow, no decoding), before
    libpng inside OpenCV prints its own ``libpng error:`` line on the way to failing."""
    if fmt != "PNG":
        return
    try:
        with _pillow_open(io.BytesIO(data)) as im:
            im.verify()
    except Exception:  # Pillow reports damage in several exception types
        raise ImageError(f"{path}: corrupt or truncated PNG file") from None


def _read_float_tiff(path: Path, data: bytes, header: _Header) -> tuple[np.ndarray, ImageInfo]:
    """A TIFF with float samples as float32 in [0, 1] (see the module's note on the range)."""
    pixels = _decode_tiff(data)
    if pixels is None:
        raise ImageError(f"{path}: corrupt or unsupported float TIFF")
    if pixels.dtype.kind != "f":
        raise ImageError(f"{path}: {pixels.dtype} samples are not supported (8 or 16-bit integers, or floats)")
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
        raise ImageError(f"{path}: float TIFF of shape {pixels.shape} is not supported (gray, gray + alpha, "
                         "RGB or RGBA)")
    if not np.isfinite(pixels).all():
        raise ImageError(f"{path}: the image holds NaN or infinite samples")
    channels = pixels.shape[2]
    bit_depth = pixels.dtype.itemsize * 8
    # a copy unless the decoder's array is float32 and ours to change (Pillow's is read-only)
    values = pixels.astype(np.float32, copy=not pixels.flags.writeable)
    del pixels
    lowest, highest = float(values.min()), float(values.max())
    low, high = min(0.0, lowest), max(1.0, highest)
    if (low, high) != (0.0, 1.0):
        warnings.warn(f"{path}: float samples span [{lowest:g}, {highest:g}]; mapped linearly from "
                      f"[{low:g}, {high:g}] to [0, 1] for the network (a float TIFF output is mapped back)",
                      stacklevel=3)
        values -= np.float32(low)
        values /= np.float32(high - low)
    rgb = values[..., [0, 0, 0] + ([1] if channels == 2 else [])] if channels <= 2 else values
    rgb = apply_orientation(rgb, header.orientation)
    info = ImageInfo(format="TIFF", bit_depth=bit_depth, gray=channels <= 2, alpha=channels in (2, 4),
                     icc_profile=header.icc, orientation=header.orientation, path=path, float_samples=True,
                     float_range=(low, high))
    return rgb, info


def check_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[str, int, int]:
    """(format, width, height) of an image file that :func:`read_image` would read (the size the right way
    up, as read: EXIF orientations 5-8 swap width and height), checked the same way
    (a readable file, a supported single image, the size within ``max_pixels`` and the memory available,
    pixels that decode) without keeping its pixels: the whole file is decoded at 1/8 scale in gray, to
    find truncated data cheaply. For callers that must answer before the work starts (the web server)."""
    path = Path(path)
    data = _read_bytes(path)
    header = _probe(path, data)
    fmt, width, height = header.format, header.width, header.height
    upright = (fmt, *_upright_size(header))
    _check_pixels(path, header, max_pixels)
    _verify(path, data, fmt)
    _check_memory(path, header, floats=True)
    if header.mode == "float":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the range warning comes when the image is read for the work
            _read_float_tiff(path, data, header)
        return upright
    # OpenCV's reduced decode cannot shrink images of a few pixels (a failed assertion): those decode whole
    flag = cv2.IMREAD_REDUCED_GRAYSCALE_8 if min(width, height) >= 16 else cv2.IMREAD_UNCHANGED
    try:
        with _quiet_opencv():
            small = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    except cv2.error:
        small = None
    if small is None:
        raise ImageError(f"{path}: corrupt or truncated {fmt} file")
    return upright


def _upright_size(header: _Header) -> tuple[int, int]:
    """(width, height) once the EXIF orientation is applied: 5 to 8 turn the image a quarter turn."""
    if header.orientation in (5, 6, 7, 8):
        return header.height, header.width
    return header.width, header.height


def _read_bytes(path: Path) -> bytes:
    with _open_regular(path) as f, _file_errors(path):
        data = f.read()
    if not data:
        raise ImageError(f"{path}: empty file (0 bytes)")
    return data


@contextlib.contextmanager
def _open_regular(path: Path) -> Iterator[BinaryIO]:
    """``path`` open for reading if it is a regular file. Anything else is refused: reading a device such
    as /dev/zero never ends, and opening a FIFO waits for a writer (it is opened without waiting, then
    looked at)."""
    with _file_errors(path):
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ImageError(f"{path}: is a folder, not an image")
        if not stat.S_ISREG(mode):
            raise ImageError(f"{path}: not a regular file (a device, FIFO or socket)")
        f = os.fdopen(fd, "rb")  # O_NONBLOCK changes nothing for a regular file
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


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
        if e.errno == errno.ENXIO:  # what opening a socket gives
            raise ImageError(f"{path}: not a regular file (a device, FIFO or socket)") from None
        raise ImageError(f"{path}: cannot read: {e.strerror or e}") from None


def probe_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[str, int, int]:
    """(format, width, height) from the file's header alone (the size the right way up, as read): the
    errors :func:`read_image` would give for a missing, empty, unreadable, unsupported, animated or too
    large file, in a fraction of the time."""
    path = Path(path)
    with _open_regular(path) as f:
        with _file_errors(path):
            empty = os.fstat(f.fileno()).st_size == 0
        if empty:
            raise ImageError(f"{path}: empty file (0 bytes)")
        header = _probe(path, f)
    _check_pixels(path, header, max_pixels)
    _check_memory(path, header, floats=True)
    return (header.format, *_upright_size(header))


def _check_pixels(path: Path, header: _Header, max_pixels: int | None) -> None:
    if max_pixels and header.width * header.height > max_pixels:
        raise ImageError(f"{path}: image is {header.width}x{header.height}, over the limit of {max_pixels} pixels "
                         "(a possible decompression bomb; --max-pixels raises it)")


def _check_memory(path: Path, header: _Header, floats: bool) -> None:
    """Refuse a read that needs more memory than is available (checked after a PNG's chunks are verified:
    a damaged file that claims a huge size is called damaged)."""
    width, height = header.width, header.height
    need = _decode_bytes(header, floats)
    if need < _MEMORY_CHECKED_FROM:
        return
    available = available_memory()
    if available is not None and need > available:
        raise ImageError(f"{path}: image is {width}x{height}; reading it needs about {_amount(need)} of memory, "
                         f"and {_amount(available)} is available")


def _decode_bytes(header: _Header, floats: bool) -> int:
    """The memory a read holds at its peak: the decoder's array and the samples in RGB(A) order (the
    file's sample size, gray repeated), and the float32 image (``floats``: what :func:`read_image` returns,
    and what a network's input is made of anyway). A float TIFF: its samples and two float32 copies."""
    pixels, channels = header.width * header.height, header.channels
    if header.mode == "float":
        return pixels * channels * (header.sample_bytes + 2 * 4)
    return pixels * channels * (2 * header.sample_bytes + (4 if floats else 0))


def _amount(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


@dataclass(frozen=True)
class _Header:
    """What a file's header says, before any pixel is decoded."""

    format: str
    width: int
    height: int
    orientation: int  # EXIF, 1-8
    icc: bytes | None
    mode: str  # Pillow's, or ``float`` for TIFFs with float samples
    channels: int  # of the array a read gives: 3 (RGB, gray repeated) or 4 (with alpha)
    sample_bytes: int  # per sample in the file: 1 or 2; 2, 4 or 8 for float TIFFs


@contextlib.contextmanager
def _pillow_open(source: BinaryIO, load: bool = False) -> Iterator[Image.Image]:
    """``Image.open`` (and ``load``: the decode) without Pillow's own decompression-bomb limit (about 179
    million pixels, where it raises): ours is ``max_pixels``, checked from the size. Pillow's limit is a
    setting of the whole process, so it is lifted only while the header is read (or the pixels decoded, as
    a TIFF's decoder checks it again), under a lock, and put back."""
    with _pillow_limit_lock:
        old_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            im = Image.open(source)
            if load:
                try:
                    im.load()
                except BaseException:
                    im.close()
                    raise
        finally:
            Image.MAX_IMAGE_PIXELS = old_limit
    with im:
        yield im


def _probe(path: Path, data: bytes | BinaryIO) -> _Header:
    """Format, size, EXIF orientation, ICC profile, Pillow's mode and the samples from the header (of the
    file's bytes, or of the open file), without decoding pixels. TIFFs with float samples, which Pillow
    reads only in part, are probed by tifffile and have the mode ``float``. Animated images and TIFFs of
    several pages are refused: a read would give their first picture alone."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # corrupt-EXIF chatter
        try:
            with _pillow_open(source) as im:
                fmt = "JPEG" if im.format == "MPO" else im.format
                (width, height), mode = im.size, im.mode
                try:
                    orientation = int(im.getexif().get(0x0112, 1))
                except Exception:  # a broken EXIF block must not make the pixels unreadable
                    orientation = 1
                icc = im.info.get("icc_profile") or None
                alpha = "A" in im.getbands() or "transparency" in im.info
                raw = im.tile[0].args if im.tile else None
                raw = raw[0] if isinstance(raw, tuple) and raw else raw
                sixteen = ";16" in str(raw) or mode.startswith("I;16")
                pictures = _pictures(im)
        except UnidentifiedImageError:
            source.seek(0)
            if source.read(4) in _TIFF_MAGIC:
                source.seek(0)
                return _probe_tiff(path, source)
            raise ImageError(f"{path}: not an image file, or a format superres cannot read") from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageError(f"{path}: corrupt or truncated image ({e})") from None
    if pictures > 1:
        raise _several_pictures(path, fmt, pictures)
    if fmt not in FORMATS:
        raise ImageError(f"{path}: {fmt} images are not supported (use PNG, JPEG, WebP, TIFF or BMP)")
    if fmt == "TIFF" and mode == "F":
        return _Header(fmt, width, height, orientation if 1 <= orientation <= 8 else 1, icc, "float", 3, 4)
    return _Header(fmt, width, height, orientation if 1 <= orientation <= 8 else 1, icc, mode, 4 if alpha else 3,
                   2 if sixteen else 1)


def _pictures(im: Image.Image) -> int:
    """The pictures in a file that a read would leave out but the first: an animation's frames, a TIFF's
    pages. A TIFF's reduced-resolution pages (NewSubfileType bit 0: previews, pyramid levels) and a
    camera's MPO extras (previews, depth maps) belong to its one picture."""
    frames = getattr(im, "n_frames", 1)
    if frames == 1 or im.format == "MPO":
        return 1
    if im.format != "TIFF":
        return frames
    full = 0
    for page in range(frames):
        im.seek(page)
        full += not int(im.tag_v2.get(254, 0)) & 1
    im.seek(0)
    return full


def _several_pictures(path: Path, fmt: str, count: int) -> ImageError:
    name = {"WEBP": "WebP"}.get(fmt, fmt)
    what = f"a TIFF of {count} pages" if fmt == "TIFF" else f"an animated {name} of {count} frames"
    if fmt in ("PNG", "GIF"):  # FFmpeg decodes APNG and GIF animations (and not animated WebP)
        how = f"`superres video {path} -o OUT.mp4` upscales every frame"
    elif fmt == "TIFF":
        how = ("save its pages as images in a folder and run `superres upscale FOLDER -o OUT` (or "
               "`superres video FOLDER -o OUT.mp4` for the frames of a video)")
    else:
        how = "save its frames as images in a folder and run `superres video FOLDER -o OUT.mp4`"
    return ImageError(f"{path}: {what}; superres reads single images: {how}")


def _probe_tiff(path: Path, source: BinaryIO) -> _Header:
    """:func:`_probe` for the TIFFs Pillow cannot open: float RGB(A), float16; others are unsupported."""
    import tifffile

    try:
        with tifffile.TiffFile(source) as tif:
            page = tif.pages[0]
            dtype, width, height, samples = page.dtype, page.imagewidth, page.imagelength, page.samplesperpixel
            orientation = int(page.tags[274].value) if 274 in page.tags else 1
            icc = bytes(page.tags[34675].value) if 34675 in page.tags else None
            pictures = sum(not getattr(p, "subfiletype", 0) & 1 for p in tif.pages)
    except Exception as e:  # tifffile reports damage in many exception types
        raise ImageError(f"{path}: corrupt or unsupported TIFF ({str(e).splitlines()[0][:120]})") from None
    if pictures > 1:
        raise _several_pictures(path, "TIFF", pictures)
    orientation = orientation if 1 <= orientation <= 8 else 1
    channels = 4 if samples in (2, 4) else 3
    if dtype is not None and dtype.kind == "f":
        return _Header("TIFF", width, height, orientation, icc, "float", channels, dtype.itemsize)
    if dtype in (np.uint8, np.uint16):  # e.g. 16-bit gray + alpha: OpenCV decodes it, as 4 channels
        return _Header("TIFF", width, height, orientation, icc, {1: "L", 2: "LA"}.get(samples, "RGB"), channels,
                       dtype.itemsize)
    raise ImageError(f"{path}: TIFF with {dtype} samples is not supported (8 or 16-bit integers, or floats)")


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
    to 8 for formats without 16-bit samples. A float TIFF source (``info.float_samples``) gives a float
    TIFF of its own sample size and value range, or 16 bits in PNG. A gray source (``info.gray``) is
    written gray, with its alpha where the format stores gray + alpha (PNG at 8 bits, TIFF); alpha is
    dropped for formats that cannot store it (JPEG, BMP). The ICC profile is kept at every bit depth.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an HxW or HxWxC image with 1, 3 or 4 channels, got shape {image.shape}")
    floats = info is not None and info.float_samples and image.dtype.kind == "f"
    if image.dtype == np.uint8:
        bit_depth = 8
    elif image.dtype == np.uint16:
        bit_depth = 16
    elif floats:
        bit_depth = 16
    else:
        bit_depth = info.bit_depth if info else 8
    if fmt not in _SIXTEEN_BIT_FORMATS:
        bit_depth = 8
    if floats and fmt == "TIFF":
        low, high = info.float_range
        pixels = np.clip(image, 0, 1).astype(np.float32) * np.float32(high - low) + np.float32(low)
        pixels = pixels.astype(f"float{info.bit_depth}")
    else:
        pixels = to_integer(image, bit_depth)

    color, alpha = pixels[..., :3], pixels[..., 3:]
    if fmt not in _ALPHA_FORMATS:
        alpha = alpha[..., :0]
    if color.shape[2] == 3 and info is not None and info.gray:
        gray = cv2.cvtColor(np.ascontiguousarray(color, np.float32 if color.dtype.kind == "f" else None),
                            cv2.COLOR_RGB2GRAY)
        color = gray.astype(color.dtype)[..., None]
    # no copy of a big output for what is already in one piece (a 8000x8000 16-bit RGB image is 384 MB)
    pixels = np.ascontiguousarray(np.concatenate([color, alpha], axis=2) if alpha.shape[2] else color)
    icc = info.icc_profile if info and fmt in _ICC_FORMATS else None

    if fmt == "TIFF" and (icc or pixels.shape[2] == 2 or pixels.dtype.kind == "f"):
        return _encode_tifffile(pixels, icc)  # what OpenCV's TIFF writer cannot store
    if pixels.shape[2] == 2:
        if bit_depth == 8 and fmt == "PNG":
            return _encode_pillow(pixels, fmt, icc, quality)
        pixels = pixels[..., [0, 0, 0, 1]]  # 16-bit PNG (Pillow: no 16-bit gray + alpha) or WebP: RGBA
    if icc and bit_depth == 8:
        return _encode_pillow(pixels, fmt, icc, quality)
    if pixels.shape[2] >= 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR if pixels.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    params = {"JPEG": [cv2.IMWRITE_JPEG_QUALITY, quality], "WEBP": [cv2.IMWRITE_WEBP_QUALITY, quality]}
    ext = FORMATS[fmt][0]
    if icc and hasattr(cv2, "imencodeWithMetadata"):  # 16-bit PNG with its profile (OpenCV 5)
        ok, buf = cv2.imencodeWithMetadata(ext, pixels, [cv2.IMAGE_METADATA_ICCP],
                                           [np.frombuffer(icc, np.uint8)], params.get(fmt, []))
    else:
        if icc:
            warnings.warn(f"this OpenCV ({cv2.__version__}) cannot store the ICC profile in a 16-bit {fmt}: "
                          "it is dropped (OpenCV 5 keeps it)", stacklevel=3)
        ok, buf = cv2.imencode(ext, pixels, params.get(fmt, []))
    if not ok:
        raise ImageError(f"OpenCV could not encode a {pixels.shape} {pixels.dtype} image as {fmt}")
    return buf.tobytes()


def _encode_pillow(pixels: np.ndarray, fmt: str, icc: bytes | None, quality: int) -> bytes:
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[pixels.shape[2]]
    im = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode=mode)
    buf = io.BytesIO()
    kwargs = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    if icc:
        kwargs["icc_profile"] = icc
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _encode_tifffile(pixels: np.ndarray, icc: bytes | None) -> bytes:
    """A TIFF (deflate) of any sample type, with gray + alpha and the ICC profile (tag 34675)."""
    import tifffile

    channels = pixels.shape[2]
    buf = io.BytesIO()
    tifffile.imwrite(buf, pixels[..., 0] if channels == 1 else pixels, compression="zlib",
                     photometric="rgb" if channels >= 3 else "minisblack", planarconfig="contig",
                     extrasamples=("unassalpha",) if channels in (2, 4) else None,
                     extratags=[(34675, "B", len(icc), icc, True)] if icc else None)
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
    if image.ndim == 0:
        return np.rint(np.clip(image, 0.0, 1.0) * peak).astype(dtype)
    # in bands of rows: a float copy of one band at a time, not two of the whole image (2 GB each for a
    # 13000x13000 RGB float32 image)
    out = np.empty(image.shape, dtype)
    rows = max(1, _BAND_BYTES // max(1, image[:1].nbytes))
    band = np.empty((min(rows, image.shape[0]), *image.shape[1:]), np.result_type(image.dtype, 0.0))
    for top in range(0, image.shape[0], rows):
        part = band[:len(image[top:top + rows])]
        np.clip(image[top:top + rows], 0.0, 1.0, out=part)
        part *= peak
        out[top:top + rows] = np.rint(part, out=part)
    return out


def file_samples(image: np.ndarray, info: ImageInfo) -> np.ndarray:
    """A :func:`read_image` array as the file's own samples: uint8/uint16 of its bit depth, float32 in
    [0, 1] for a float TIFF (what the runner takes, and :func:`write_image` writes back the same way)."""
    return image if info.float_samples else to_integer(image, info.bit_depth)


def read_rgb8(path: str | os.PathLike, max_pixels: int | None = None, *,
              size: tuple[int, int] | None = None) -> np.ndarray:
    """An image as uint8 RGB (alpha dropped, gray repeated, 16-bit rounded to 8): what 8-bit
    pipelines (training data, video frames) work on. ``max_pixels``: None for the default limit.
    ``size``: the (width, height) it must have, the first frame's for the frames of a video (another size
    is refused rather than stretched to fit)."""
    img, _ = read_samples(path, max_pixels or DEFAULT_MAX_PIXELS)
    if size is not None and (img.shape[1], img.shape[0]) != tuple(size):
        raise ImageError(f"{path}: this frame is {img.shape[1]}x{img.shape[0]}, but the first frame is "
                         f"{size[0]}x{size[1]}: the frames of a video must all have one size")
    return np.ascontiguousarray(to_integer(img[..., :3], 8))


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
