"""Faces in photos, knowing no method: find them (``detect``), bring each into a model's training crop
(``align``) and put the model's output back into the photo (``paste``).

A face is a plain dict, the same one the manifest and ``codes.npz`` store:
``{"box": [x0, y0, x1, y1], "score": float, "landmarks": [[x, y] * 5]}`` in the photo's pixels; landmarks are
left eye, right eye, nose tip, left and right mouth corners, "left" as seen in the image.
"""

from .align import FaceGeometry, align_face, geometry_of
from .detect import DetectorUnavailable, FaceDetector, default_detector
from .paste import paste_faces

__all__ = ["DetectorUnavailable", "FaceDetector", "FaceGeometry", "align_face", "default_detector", "geometry_of", "paste_faces"]
