"""Image (and, later, video) files in and out."""

from superres.io.files import IMAGE_EXTENSIONS, atomic_write, list_images, require_images
from superres.io.image import (
    ImageInfo,
    check_image,
    encode_image,
    file_samples,
    probe_image,
    read_image,
    read_rgb8,
    read_samples,
    to_integer,
    write_image,
)

__all__ = ["IMAGE_EXTENSIONS", "ImageInfo", "atomic_write", "check_image", "encode_image", "file_samples",
           "list_images", "probe_image", "read_image", "read_rgb8", "read_samples",
           "require_images", "to_integer", "write_image"]
