"""Network architectures, one paper per file; names and arguments follow the official code.

Each file ends with ``ARCHS``, its :class:`~superres.archs.spec.ArchSpec` entries (detection from a
state dict, other layouts' renames, the facts a runner needs); :data:`REGISTRY` collects them.
"""

from superres.archs import (
    animesr,
    basicvsr,
    discriminators,
    edsr,
    edvr,
    espcn,
    fsrcnn,
    hat,
    realcugan,
    rrdbnet,
    span,
    spynet,
    srcnn,
    srresnet,
    srvgg,
    tan,
    vsrt,
    waifu2x,
)
from superres.archs.animesr import MSRSWVSR
from superres.archs.basicvsr import BasicVSR, IconVSR
from superres.archs.discriminators import UNetDiscriminatorSN, VGGStyleDiscriminator
from superres.archs.edsr import EDSR
from superres.archs.edvr import EDVR
from superres.archs.espcn import ESPCN
from superres.archs.fsrcnn import FSRCNN
from superres.archs.hat import HAT
from superres.archs.realcugan import UpCunet2x, UpCunet3x, UpCunet4x
from superres.archs.rrdbnet import RRDBNet
from superres.archs.span import SPAN
from superres.archs.spec import ArchSpec
from superres.archs.spynet import SpyNet
from superres.archs.srcnn import SRCNN
from superres.archs.srresnet import MSRResNet, SRResNet
from superres.archs.srvgg import SRVGGNetCompact
from superres.archs.tan import TemporalAdaptiveNet
from superres.archs.vsrt import VSRTransformer
from superres.archs.waifu2x import CUNet, UpConv7

REGISTRY: dict[str, ArchSpec] = {spec.name: spec for module in (
    srcnn, fsrcnn, espcn, srresnet, edsr, rrdbnet, srvgg, realcugan, span, hat, waifu2x, discriminators, spynet,
    basicvsr, edvr, tan, vsrt, animesr,
) for spec in module.ARCHS}

ARCHITECTURES = {name: spec.cls for name, spec in REGISTRY.items()}

__all__ = [
    "ARCHITECTURES", "EDSR", "EDVR", "ESPCN", "FSRCNN", "HAT", "MSRSWVSR", "REGISTRY", "SPAN", "SRCNN", "BasicVSR",
    "CUNet", "IconVSR", "MSRResNet", "RRDBNet", "SRResNet", "SRVGGNetCompact", "SpyNet", "TemporalAdaptiveNet",
    "UNetDiscriminatorSN", "UpConv7", "UpCunet2x", "UpCunet3x", "UpCunet4x", "VGGStyleDiscriminator", "VSRTransformer",
]
