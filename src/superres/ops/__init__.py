"""Image operations shared by data preparation, inference and metrics."""

from superres.ops.blur_downsample import blur_downsample, modcrop
from superres.ops.color import rgb2ycbcr, ycbcr2rgb
from superres.ops.imresize import imresize

__all__ = ["blur_downsample", "imresize", "modcrop", "rgb2ycbcr", "ycbcr2rgb"]
