"""Faces in ordinary photographs: detection (facenet-pytorch's MTCNN, which ships its weights), alignment
(eyes level) and the crop to the 48x48 grey face the project's models expect.

The crop is a square centred on the detected box, of side ``CROP_SCALE`` times the box's longer side:
MTCNN's box runs from the brows to below the chin, a little taller than FER2013's framing, which
``tests/test_faces.py`` checks by recovering FER2013 faces pasted into a larger picture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from .images import FACE_SIZE, high_bit_depth_to_grey, to_face48

#: side of the square crop / longer side of MTCNN's box: the median over the bundled sample's FER2013 faces
#: pasted into a larger picture (10th-90th percentile 0.80-1.15: FER2013's own framing varies)
CROP_SCALE = 0.95
#: faces detected with less confidence are ignored
MIN_CONFIDENCE = 0.9


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the (EXIF-rotated) image
    confidence: float
    eyes: tuple[tuple[float, float], tuple[float, float]] | None  # (left, right) eye centres, as MTCNN names them


def open_photo(path) -> Image.Image:
    """An image file as RGB with its EXIF orientation applied (what a viewer shows); 16-bit grey scaled."""

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        im = high_bit_depth_to_grey(im)[0]
        return im.convert("RGB")


_DETECTOR: dict[str, object] = {}


def detector(device: str = "cpu"):
    """MTCNN (facenet-pytorch), built once per device; its weights ship with the package (no download)."""
    if device not in _DETECTOR:
        from facenet_pytorch import MTCNN

        _DETECTOR[device] = MTCNN(keep_all=True, device=device)
    return _DETECTOR[device]


def detect(image: Image.Image, device: str = "cpu", min_confidence: float = MIN_CONFIDENCE) -> list[Face]:
    """The faces MTCNN finds in an RGB image, most confident first."""
    boxes, probs, points = detector(device).detect(image, landmarks=True)
    if boxes is None:
        return []
    faces = [Face(tuple(float(v) for v in b), float(p), ((float(l[0][0]), float(l[0][1])), (float(l[1][0]), float(l[1][1]))))
             for b, p, l in zip(boxes, probs, points) if p is not None and p >= min_confidence]
    return sorted(faces, key=lambda f: -f.confidence)


def crop48(image: Image.Image, face: Face, align: bool = True) -> np.ndarray:
    """The face as a 48x48 grey ``uint8`` array: rotated about its centre so the eyes are level (``align``),
    then a square of ``CROP_SCALE`` x the box's longer side around the box centre (borders padded by edge
    replication through PIL's crop of the rotated image)."""
    x0, y0, x1, y1 = face.box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = CROP_SCALE * max(x1 - x0, y1 - y0)
    img = image
    if align and face.eyes is not None:
        (lx, ly), (rx, ry) = face.eyes
        angle = math.degrees(math.atan2(ry - ly, rx - lx))
        img = image.rotate(angle, resample=Image.Resampling.BICUBIC, center=(cx, cy))
    half = side / 2
    crop = img.crop((round(cx - half), round(cy - half), round(cx + half), round(cy + half)))
    return to_face48(crop)


def face_from_photo(image: Image.Image, device: str = "cpu") -> np.ndarray | None:
    """A data set's photograph as the study's face: the most confident face MTCNN finds, aligned and cropped to
    48x48 grey (EXIF orientation applied); None when it finds none (the data loader then skips the file)."""

    rgb = high_bit_depth_to_grey(ImageOps.exif_transpose(image))[0].convert("RGB")
    found = detect(rgb, device)
    return crop48(rgb, found[0]) if found else None


def faces_in(image: Image.Image, device: str = "cpu", cropped: bool = False) -> tuple[list[Face], np.ndarray]:
    """(faces, their 48x48 crops). ``cropped``: the image already is one face (no detection; whole image)."""
    if cropped:
        w, h = image.size
        return [Face((0.0, 0.0, float(w), float(h)), 1.0, None)], to_face48(image)[None]
    found = detect(image, device)
    crops = np.stack([crop48(image, f) for f in found]) if found else np.zeros((0, FACE_SIZE, FACE_SIZE), np.uint8)
    return found, crops
