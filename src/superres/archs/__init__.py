"""Network architectures, one paper per file; names and arguments follow the official code.

Each file ends with ``ARCHS``, its :class:`~superres.archs.spec.ArchSpec` entries (detection from a
state dict, other layouts' renames, the facts a runner needs); :data:`REGISTRY` collects them.
"""

from superres.archs import (
    animesr,
    basicvsr,
    codeformer,
    dat,
    discriminators,
    edsr,
    edvr,
    espcn,
    fsrcnn,
    gfpgan,
    hat,
    realcugan,
    restoreformer,
    rife,
    rrdbnet,
    span,
    spynet,
    srcnn,
    srresnet,
    srvgg,
    swinir,
    tan,
    vsrt,
    waifu2x,
)
from superres.archs.animesr import MSRSWVSR
from superres.archs.basicvsr import BasicVSR, IconVSR
from superres.archs.codeformer import CodeFormer
from superres.archs.dat import DAT
from superres.archs.discriminators import UNetDiscriminatorSN, VGGStyleDiscriminator
from superres.archs.edsr import EDSR
from superres.archs.edvr import EDVR
from superres.archs.espcn import ESPCN
from superres.archs.fsrcnn import FSRCNN
from superres.archs.gfpgan import GFPGANv1, GFPGANv1Clean
from superres.archs.hat import HAT
from superres.archs.realcugan import UpCunet2x, UpCunet3x, UpCunet4x
from superres.archs.restoreformer import RestoreFormer
from superres.archs.rife import RIFE31, RIFE35, RIFE38, RIFE40
from superres.archs.rrdbnet import RRDBNet
from superres.archs.span import SPAN
from superres.archs.spec import ArchSpec
from superres.archs.spynet import SpyNet
from superres.archs.srcnn import SRCNN
from superres.archs.srresnet import MSRResNet, SRResNet
from superres.archs.srvgg import SRVGGNetCompact
from superres.archs.swinir import SwinIR
from superres.archs.tan import TemporalAdaptiveNet
from superres.archs.vsrt import VSRTransformer
from superres.archs.waifu2x import CUNet, UpConv7

REGISTRY: dict[str, ArchSpec] = {spec.name: spec for module in (
    srcnn, fsrcnn, espcn, srresnet, edsr, rrdbnet, srvgg, swinir, dat, hat, span, realcugan, waifu2x, discriminators,
    spynet, basicvsr, edvr, tan, vsrt, animesr, gfpgan, restoreformer, codeformer, rife,
) for spec in module.ARCHS}

ARCHITECTURES = {name: spec.cls for name, spec in REGISTRY.items()}

__all__ = [
    "ARCHITECTURES",
    "DAT",
    "EDSR",
    "EDVR",
    "ESPCN",
    "FSRCNN",
    "HAT",
    "MSRSWVSR",
    "REGISTRY",
    "RIFE31",
    "RIFE35",
    "RIFE38",
    "RIFE40",
    "SPAN",
    "SRCNN",
    "BasicVSR",
    "CUNet",
    "CodeFormer",
    "GFPGANv1",
    "GFPGANv1Clean",
    "IconVSR",
    "MSRResNet",
    "RRDBNet",
    "RestoreFormer",
    "SRResNet",
    "SRVGGNetCompact",
    "SpyNet",
    "SwinIR",
    "TemporalAdaptiveNet",
    "UNetDiscriminatorSN",
    "UpConv7",
    "UpCunet2x",
    "UpCunet3x",
    "UpCunet4x",
    "VGGStyleDiscriminator",
    "VSRTransformer",
]
