"""Which video encoder writes the output: a hardware one when the machine really has one.

``--codec auto`` (the default) and the generic ``h264`` / ``hevc`` ask for a format, not an
encoder: NVIDIA's NVENC (``h264_nvenc`` / ``hevc_nvenc``) is used when FFmpeg has it *and* a
one-frame test encode succeeds on this machine (data-centre GPUs such as the H100 have no NVENC
engine, and FFmpeg lists the encoders regardless), otherwise x264 / x265. A named encoder
(``libx264``, ``h264_nvenc``, ``libvpx-vp9``, ...) is used as given.

The same quality intent on both: x264/x265's ``crf`` becomes NVENC's constant-quality ``cq``
with the same number (``rc=vbr``, ``b=0``: no bitrate cap). The two scales are close but not
identical (NVENC at a given ``cq`` makes files of about the quality of x264 at that ``crf``,
somewhat larger); x264's speed presets map to NVENC's ``p1`` (fastest) .. ``p7`` (slowest).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection

GENERIC = {"auto": "h264", "h264": "h264", "hevc": "hevc", "h265": "hevc"}
SOFTWARE = {"h264": "libx264", "hevc": "libx265"}
HARDWARE = {"h264": "h264_nvenc", "hevc": "hevc_nvenc"}
NVENC_PRESETS = {"ultrafast": "p1", "superfast": "p2", "veryfast": "p3", "faster": "p3", "fast": "p4",
                 "medium": "p5", "slow": "p6", "slower": "p7", "veryslow": "p7"}


def pick_encoder(codec: str, available: Collection[str] | None = None,
                 works: Callable[[str], bool] | None = None) -> str:
    """The encoder for ``codec``: a named encoder as it is; ``auto``/``h264``/``hevc`` -> NVENC if
    ``available`` lists it and ``works`` (a test encode) says it runs here, else x264/x265."""
    family = GENERIC.get(codec.lower())
    if family is None:
        return codec
    if available is None:
        import av

        available = av.codecs_available
    works = works or nvenc_works
    hardware = HARDWARE[family]
    if hardware in available and works(hardware):
        return hardware
    return SOFTWARE[family]


@functools.cache
def nvenc_works(encoder: str) -> bool:
    """Whether ``encoder`` can encode a frame on this machine (tried once per process)."""
    import av

    try:
        import torch

        if not torch.cuda.is_available():  # no NVIDIA driver: nothing to try (and no FFmpeg error lines)
            return False
    except ImportError:
        return False
    try:
        ctx = av.CodecContext.create(encoder, "w")
        ctx.width, ctx.height, ctx.pix_fmt = 256, 256, "yuv420p"
        ctx.time_base = ctx.framerate = 25
        ctx.open()
        import numpy as np

        frame = av.VideoFrame.from_ndarray(np.zeros((256, 256, 3), np.uint8), format="rgb24").reformat(
            format="yuv420p")
        packets = list(ctx.encode(frame)) + list(ctx.encode(None))
        return len(packets) > 0
    except Exception:  # no engine, no driver, too old a driver: FFmpeg raises several kinds
        return False


def encoder_options(encoder: str, crf: int | None, preset: str | None) -> dict[str, str]:
    """FFmpeg options for the quality intent ``crf`` and speed ``preset`` (x264's names)."""
    if encoder.endswith("_nvenc"):
        options = {"rc": "vbr", "b": "0", "preset": NVENC_PRESETS.get(preset or "medium", "p5")}
        if crf is not None:
            options["cq"] = str(crf)
        return options
    options = {}
    if crf is not None and encoder in ("libx264", "libx265", "libvpx-vp9", "libsvtav1", "libaom-av1"):
        options = {"crf": str(crf), **({"b": "0"} if encoder == "libvpx-vp9" else {})}
    if preset and encoder in ("libx264", "libx265"):
        options["preset"] = preset
    return options
