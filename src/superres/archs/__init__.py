"""Network architectures, one paper per file; names and arguments follow the official code."""

from superres.archs.basicvsr import BasicVSR, IconVSR
from superres.archs.discriminators import UNetDiscriminatorSN, VGGStyleDiscriminator
from superres.archs.edsr import EDSR
from superres.archs.edvr import EDVR
from superres.archs.espcn import ESPCN
from superres.archs.fsrcnn import FSRCNN
from superres.archs.rrdbnet import RRDBNet
from superres.archs.spynet import SpyNet
from superres.archs.srcnn import SRCNN
from superres.archs.srresnet import MSRResNet, SRResNet
from superres.archs.srvgg import SRVGGNetCompact
from superres.archs.tan import TemporalAdaptiveNet
from superres.archs.vsrt import VSRTransformer

ARCHITECTURES = {cls.__name__: cls for cls in (
    SRCNN, FSRCNN, ESPCN, SRResNet, MSRResNet, EDSR, RRDBNet, SRVGGNetCompact,
    VGGStyleDiscriminator, UNetDiscriminatorSN, SpyNet, BasicVSR, IconVSR, EDVR,
    TemporalAdaptiveNet, VSRTransformer,
)}

__all__ = ["ARCHITECTURES", *ARCHITECTURES]
