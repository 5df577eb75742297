"""Faces: detection with five landmarks (MTCNN), alignment to the FFHQ template, restoration by a face
network and seamless paste-back into an upscaled image; smoothing over time for video.

No module here names an architecture: a face network is any model descriptor whose purpose is ``face``.
"""

from superres.faces.align import FFHQ_TEMPLATE_512, face_transform
from superres.faces.detect import Face, FaceDetector, FaceError
from superres.faces.restore import (
    FaceOptions,
    FaceRestorer,
    FaceStream,
    crop_faces,
    load_face_model,
)
from superres.faces.track import FaceTracker

__all__ = ["FFHQ_TEMPLATE_512", "Face", "FaceDetector", "FaceError", "FaceOptions", "FaceRestorer",
           "FaceStream", "FaceTracker", "crop_faces", "face_transform", "load_face_model"]
