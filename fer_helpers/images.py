"""Face images as every stage holds them: 48x48 ``uint8`` grey stacks, the rule that turns any picture into
one, and the name-derived seeds that make each image's randomness the same in every process. The bottom of
the package: it imports nothing from ``fer_helpers``."""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

FACE_SIZE = 48


def as_stack(images: np.ndarray) -> np.ndarray:
    """``images`` as a uint8 stack of shape (N, H, W), or ValueError naming what it got."""
    images = np.asarray(images)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected a uint8 stack of shape (N, H, W), got {images.dtype} {images.shape}")
    return images


def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that is the same in every process (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def high_bit_depth_to_grey(img: Image.Image) -> tuple[Image.Image, int | None]:
    """A 16-bit or 32-bit grey image (PNG ``I;16``, ``I``, ``F``) as 8-bit grey, scaled by the smallest bit
    depth (8 to 16) that holds its largest value, so a 10- or 12-bit face keeps its contrast instead of being
    clipped to white by ``convert("L")``. Returns (image, bits used) or (image, None) for ordinary modes."""
    if not (img.mode.startswith("I") or img.mode == "F"):
        return img, None
    arr = np.asarray(img, dtype=np.float64)
    if arr.ndim != 2 or not np.isfinite(arr).all() or arr.min() < 0:
        raise ValueError(f"{img.mode} image with negative or non-finite values: not a grey face")
    bits = int(min(16, max(8, np.ceil(np.log2(arr.max() + 1)))))
    grey = np.round(np.clip(arr, 0, 2**bits - 1) * 255 / (2**bits - 1)).astype(np.uint8)
    return Image.fromarray(grey, mode="L"), bits


def to_face48(img: Image.Image) -> np.ndarray:
    """The project's face rule: luma grey, centred square crop, Lanczos resize to 48x48, ``uint8``.
    High-bit-depth grey images are scaled by their bit depth first (:func:`high_bit_depth_to_grey`)."""
    img = high_bit_depth_to_grey(img)[0].convert("L")
    w, h = img.size
    if (w, h) != (FACE_SIZE, FACE_SIZE):
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s)).resize((FACE_SIZE, FACE_SIZE), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)
