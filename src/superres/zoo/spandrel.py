"""The architectures superres does not implement, loaded by spandrel (chaiNNer's model loader) and run on
superres's engine.

:func:`superres.zoo.load_model` asks spandrel only when none of superres's own detectors matches a state
dict (or the one that matched cannot build the file's network): our implementation wins where both read a
file. spandrel gets the state dict that superres read itself (``torch.load(weights_only=True)`` behind the
pickle opcode check, or safetensors), never a path. Its descriptor becomes a
:class:`~superres.zoo.descriptor.ModelDescriptor`: purpose, scale, channels, size requirements and the
precisions it computes in are facts like any architecture's, and the network runs through the runner
(padding, precision policy and fp32 fallback, measured-context tiles, video, the web app, ONNX export).

spandrel_extra_arches (architectures under restrictive licences, e.g. CodeFormer's S-Lab non-commercial
terms) is used only when it is installed (``superres[extra-arches]``) and the user opts in by setting
``SUPERRES_EXTRA_ARCHES=1``: an installed package is not consent to its licences (the ``dev`` extra installs
it for the tests). spandrel is imported on first use only.
"""

from __future__ import annotations

import contextlib
import os
from functools import cache
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from superres.archs.spec import ModelFacts
from superres.zoo.checkpoint import CheckpointError
from superres.zoo.descriptor import ModelDescriptor

if TYPE_CHECKING:
    from spandrel import ArchRegistry
    from spandrel import ModelDescriptor as SpandrelDescriptor

EXTRA_ENV = "SUPERRES_EXTRA_ARCHES"
SPANDREL = "spandrel"
EXTRA = "spandrel_extra_arches"

# spandrel's purposes as superres's: restorers (denoise, deblur, JPEG, dehaze, low light) run at scale 1.
PURPOSES = {"SR": "sr", "Restoration": "restoration", "FaceSR": "face", "Inpainting": "inpainting"}

# The licence of each architecture's code, from the LICENSE file in its ``__arch/`` folder of spandrel 0.4.2
# and spandrel_extra_arches 0.2.0 (the wheels leave those files out). Sorted as spandrel lists them.
LICENCES = {
    "ATD": "Apache-2.0", "AuraSR": "CC-BY-SA-4.0", "CRAFT": "Apache-2.0", "Compact": "BSD-3-Clause",
    "DAT": "Apache-2.0", "DCTLSA": "Apache-2.0", "DITN": "Apache-2.0", "DRCT": "MIT", "DRUNet": "MIT",
    "DnCNN": "MIT", "ESRGAN": "Apache-2.0", "FBCNN": "Apache-2.0", "FDAT": "MIT", "FFTformer": "MIT",
    "GFPGAN": "Apache-2.0", "GRL": "MIT", "HAT": "MIT", "HVICIDNet": "MIT", "IPT": "Apache-2.0", "KBNet": "MIT",
    "LaMa": "Apache-2.0", "MMRealSR": "BSD-3-Clause", "MixDehazeNet": "MIT", "MoESR": "MIT", "MoSR": "MIT",
    "NAFNet": "MIT", "OmniSR": "Apache-2.0", "PLKSR": "MIT", "RCAN": "MIT", "RGT": "Apache-2.0",
    "RealCUGAN": "MIT", "RestoreFormer": "Apache-2.0", "RetinexFormer": "MIT", "SAFMN": "Apache-2.0",
    "SAFMNBCIE": "Apache-2.0", "SCUNet": "Apache-2.0", "SPAN": "Apache-2.0", "SeemoRe": "Apache-2.0",
    "SwiftSRGAN": "CC0-1.0", "Swin2SR": "Apache-2.0", "SwinIR": "Apache-2.0", "Uformer": "MIT",
    # spandrel_extra_arches: not for commercial use
    "AdaCode": "CC-BY-NC-SA-4.0", "CodeFormer": "S-Lab-1.0 (non-commercial)",
    "DDColor": "non-commercial (Alibaba, academic use only)", "FeMaSR": "CC-BY-NC-SA-4.0",
    "M3SNet": "Academic Public License (non-commercial)", "MAT": "CC-BY-NC-4.0",
    "MIRNet2": "Academic Public License (non-commercial)", "MPRNet": "Academic Public License (non-commercial)",
    "Restormer": "Academic Public License (non-commercial)", "SRFormer": "CC-BY-NC-4.0",
}

# What each architecture is for, as ``superres models --archs`` lists it: ``sr`` networks are restorers
# (purpose ``restoration``) when built at scale 1, as spandrel decides per file.
KINDS = {
    "ATD": "sr", "AuraSR": "sr (a GAN, seeded each pass)", "CRAFT": "sr", "Compact": "sr", "DAT": "sr", "DCTLSA": "sr",
    "DITN": "sr", "DRCT": "sr", "DRUNet": "restoration (denoise)", "DnCNN": "restoration (denoise)",
    "ESRGAN": "sr", "FBCNN": "restoration (JPEG)", "FDAT": "sr", "FFTformer": "restoration (deblur)",
    "GFPGAN": "face", "GRL": "sr", "HAT": "sr", "HVICIDNet": "restoration (low light)", "IPT": "sr",
    "KBNet": "restoration (denoise, deblur)", "LaMa": "inpainting (needs a mask: refused)", "MMRealSR": "sr",
    "MixDehazeNet": "restoration (dehaze)", "MoESR": "sr", "MoSR": "sr", "NAFNet": "restoration (denoise, deblur)",
    "OmniSR": "sr", "PLKSR": "sr", "RCAN": "sr", "RGT": "sr", "RealCUGAN": "sr", "RestoreFormer": "face",
    "RetinexFormer": "restoration (low light)", "SAFMN": "sr", "SAFMNBCIE": "restoration (compression)",
    "SCUNet": "restoration (denoise)", "SPAN": "sr", "SeemoRe": "sr", "SwiftSRGAN": "sr", "Swin2SR": "sr",
    "SwinIR": "sr", "Uformer": "restoration (denoise, deblur)",
    "AdaCode": "sr", "CodeFormer": "face", "DDColor": "restoration (colorization)", "FeMaSR": "sr",
    "M3SNet": "restoration (denoise, deblur)", "MAT": "inpainting (needs a mask: refused)",
    "MIRNet2": "restoration (denoise, low light)", "MPRNet": "restoration (denoise, deblur)",
    "Restormer": "restoration (denoise, deblur)", "SRFormer": "sr",
}

# spandrel architectures that superres implements too: superres's detectors run first, so these files run on
# its code; spandrel's loads only the variants superres's code does not build (e.g. ESRGAN+, old-layout
# ESRGAN at x1/x2, Real-CUGAN's 2x fast network).
OURS_TOO = {
    "Compact": ("SRVGGNetCompact",), "DAT": ("DAT",), "ESRGAN": ("RRDBNet",), "GFPGAN": ("GFPGANv1Clean",),
    "HAT": ("HAT",), "RealCUGAN": ("UpCunet2x", "UpCunet3x", "UpCunet4x"), "RestoreFormer": ("RestoreFormer",),
    "SPAN": ("SPAN",), "SwinIR": ("SwinIR",), "CodeFormer": ("CodeFormer",),
}


# Networks that draw random numbers in each pass (AuraSR, a GAN: its style vector and input noise): superres
# draws them from seed 0 each pass, as spandrel's call does after torch.manual_seed(0) (AuraSR's, declared to
# the tiles, from a generator of their own: superres.zoo.whole_maps).
RANDOM_PER_PASS = {"AuraSR"}
# Networks whose code views activations as NCHW (IPT's patch folding): run without channels-last weights.
NCHW_ONLY = {"IPT"}
# Networks that cut their input into patches themselves (IPT: patches of ``patch_size``, a quarter of a patch
# apart from the image's corner, and strips along its borders), by the attribute naming the patch size.
SELF_PATCHING = {"IPT": "patch_size"}
# Networks whose shifted windows wrap around the image without an attention mask (torch.roll, then windows
# that mix the far border with the near one): their tiles take the wrapped rows from the whole image
# (superres.infer.statistics). Swin-style networks with the mask (SwinIR, HAT...) need no such thing.
WRAPPING = {"DCTLSA"}
# Networks with parts whose output at a pixel depends on the whole image, declared to the tiles, which compute them
# on the whole image's map (superres.zoo.whole_maps): OmniSR's grid attention and ESA's pooled branch, RGT's
# recursive generalization, AuraSR's noise and attention.
WHOLE_MAPS = {"AuraSR", "OmniSR", "RGT"}


class CannotBuildError(CheckpointError):
    """spandrel recognises an architecture in the state dict but cannot build it from it (its detectors may
    take foreign layouts for theirs: their rule is no false negatives)."""

    def __init__(self, source: str, arch: str, code: str, what: str):
        super().__init__(f"{source}: looks like {arch} ({code}), which cannot build it: {what}")
        self.arch, self.what = arch, what


def extra_arches_opted_in() -> bool:
    """Whether the user asked for spandrel_extra_arches' architectures (``SUPERRES_EXTRA_ARCHES=1``)."""
    return os.environ.get(EXTRA_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@cache
def main_registry() -> ArchRegistry:
    """spandrel's own architectures (permissive licences), whatever else was installed into its main registry."""
    from spandrel import MAIN_REGISTRY, ArchRegistry

    registry = ArchRegistry()
    registry.add(*(s for s in MAIN_REGISTRY if code_of(s.architecture) == SPANDREL))
    return registry


def extra_registry() -> ArchRegistry | None:
    """spandrel_extra_arches' registry, or None when it is not installed."""
    try:
        from spandrel_extra_arches import EXTRA_REGISTRY
    except ImportError:
        return None
    return EXTRA_REGISTRY


def code_of(architecture) -> str:
    """Which package's code an architecture object is: ``spandrel`` or ``spandrel_extra_arches``."""
    return type(architecture).__module__.split(".", 1)[0]


@cache
def version(package: str) -> str:
    """The installed version of ``package``."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(package)
    except PackageNotFoundError:
        return "not installed"


class SpandrelNet(nn.Module):
    """A spandrel network as the runner calls networks: N x C x H x W in [0, 1] in, the image out.

    It applies the architecture's own call function (FBCNN returns its quality estimate too, DRUNet appends a
    noise-level plane, IPT chops internally...) one image at a time, as spandrel's API takes batches of one,
    and pads to a square where the architecture needs one (Uformer): the runner pads only to the minimum size
    and the multiple, the facts every architecture has.
    """

    def __init__(self, model: nn.Module, call, scale: int, square: bool, seed: int | None = None,
                 nchw: bool = False, patch: int | None = None, wraps: bool = False):
        super().__init__()
        self.model = model
        self.call = call
        self.scale, self.square, self.seed, self.nchw = scale, square, seed, nchw
        self.tile_wraps = wraps  # its rolls wrap around the image unmasked (see WRAPPING)
        if patch:  # a network that patches its input itself: tiles start on its patches' stride (the same
            # phase) and get a whole patch of context (its patches reach that far; measured, its context looks
            # shorter inside the image than at a border strip)
            self.tile_grid, self.tile_context = max(1, patch // 4), patch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 1:
            return torch.cat([self(x[i:i + 1]) for i in range(x.shape[0])])
        x = x.contiguous()  # spandrel's code is written for NCHW input (AuraSR's noise follows x's layout)
        if self.nchw:  # and some for NCHW activations too: the runner's channels-last weights would make them so
            for p in self.model.parameters():
                if p.dim() == 4 and not p.is_contiguous():
                    p.data = p.data.contiguous()
        h, w = x.shape[-2:]
        if self.square and h != w:
            x = pad_like_spandrel(x, max(h, w) - w, max(h, w) - h)
        if self.seed is None:
            out = self.call(self.model, x)
        else:  # the same random draws each pass, from a generator of its own: runs repeat and tiles agree
            with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
                torch.manual_seed(self.seed)
                out = self.call(self.model, x)
        return out[..., : h * self.scale, : w * self.scale]


def pad_like_spandrel(x: torch.Tensor, pad_w: int, pad_h: int) -> torch.Tensor:
    """Pad right and bottom as spandrel does: reflect (at most size - 1 pixels), then replicate the rest."""
    h, w = x.shape[-2:]
    reflect_w, reflect_h = min(pad_w, w - 1), min(pad_h, h - 1)
    x = F.pad(x, (0, reflect_w, 0, reflect_h), mode="reflect")
    return F.pad(x, (0, pad_w - reflect_w, 0, pad_h - reflect_h), mode="replicate")


def _json_friendly(value):
    if isinstance(value, bool | int | float | str | type(None)):
        return value
    if isinstance(value, list | tuple):
        return [_json_friendly(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_friendly(v) for k, v in value.items()}
    return getattr(value, "__name__", type(value).__name__)


def precisions(supports_half: bool, supports_bfloat16: bool) -> tuple[str, ...]:
    """spandrel's precision facts as superres's (fp32 always; the runner still falls back to it on non-finite
    output)."""
    return ("fp32", *(("bf16",) if supports_bfloat16 else ()), *(("fp16",) if supports_half else ()))


def descriptor(found: SpandrelDescriptor, code: str = SPANDREL) -> ModelDescriptor:
    """superres's descriptor of a loaded spandrel descriptor ``found``."""
    arch = found.architecture.id
    req = found.size_requirements
    facts = ModelFacts(PURPOSES[found.purpose], found.scale, found.input_channels, found.output_channels,
                       size_multiple=req.multiple_of, min_size=max(1, req.minimum),
                       precisions=precisions(found.supports_half, found.supports_bfloat16))
    model = found.model.eval()
    if arch in WHOLE_MAPS:
        from superres.zoo.whole_maps import declare

        declare(model)
    call = getattr(found, "_call_fn", None) or (lambda net, image: net(image))
    kwargs = _json_friendly(dict(getattr(model, "hyperparameters", {})))
    patch = getattr(model, SELF_PATCHING[arch], None) if arch in SELF_PATCHING else None
    network = SpandrelNet(model, call, found.scale, req.square, seed=0 if arch in RANDOM_PER_PASS else None,
                          nchw=arch in NCHW_ONLY, patch=int(patch) if patch else None, wraps=arch in WRAPPING)
    return ModelDescriptor(module=network, arch=arch, kwargs=kwargs,
                           facts=facts, code=code, licence=LICENCES.get(arch, "see spandrel"),
                           network=type(model).__name__, tiling=found.tiling.name.lower())


def _detected(registry: ArchRegistry, state: dict):
    return next((s for s in registry.architectures("detection") if s.detect(state)), None)


def load(state: dict, source: str, bound: contextlib.AbstractContextManager) -> ModelDescriptor | None:
    """The state dict ``state`` (read by superres) as a model of spandrel's, or None if no spandrel
    architecture (nor, when opted in, an extra one) recognises it. ``bound``: a context manager that stops a
    construction with far more parts than the file has tensors (the architecture's arguments come from key
    indices, which a hostile file chooses)."""
    from spandrel import canonicalize_state_dict

    state = canonicalize_state_dict(dict(state))
    support, code = _detected(main_registry(), state), SPANDREL
    if support is None:
        extras = extra_registry()
        support, code = (_detected(extras, state), EXTRA) if extras is not None else (None, EXTRA)
        if support is None:
            return None
        arch = support.architecture.id
        if not extra_arches_opted_in():
            raise CheckpointError(f"{source}: a {arch} network: spandrel_extra_arches has its code, under "
                                  f"{LICENCES.get(arch, 'a restrictive licence')}; set {EXTRA_ENV}=1 to accept "
                                  "that licence and load it")
    arch = support.architecture.id
    try:
        with bound:
            found = support.architecture.load(state)
    except CheckpointError:
        raise
    except Exception as e:  # spandrel's loaders fail on a foreign variant with many exception types
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        what = type(e).__name__ + (": " + " ".join(lines[:2])[:240] if lines else "")
        raise CannotBuildError(source, arch, code, what) from None
    return descriptor(found, code)


def extra_hint() -> str:
    """What the no-match error adds about the extra architectures, when they might have read the file."""
    if extra_registry() is None:
        return (" (architectures under non-commercial licences, e.g. Restormer and SRFormer, load with "
                f'pip install "superres[extra-arches]" and {EXTRA_ENV}=1)')
    return ""


def architectures() -> list[tuple[str, str, str, str, str]]:
    """(architecture, code, what it is for, licence, note) of every architecture spandrel loads here; the
    extra ones when installed, noted as needing the opt-in unless it is given."""
    rows = []
    extras = extra_registry()
    for support in [*main_registry(), *(extras or ())]:
        arch, code = support.architecture.id, code_of(support.architecture)
        notes = [f"superres's {', '.join(OURS_TOO[arch])} first"] if arch in OURS_TOO else []
        if code == EXTRA and not extra_arches_opted_in():
            notes.append(f"needs {EXTRA_ENV}=1")
        rows.append((arch, f"{code} {version(code)}", KINDS.get(arch, "?"), LICENCES.get(arch, "?"), "; ".join(notes)))
    return rows
