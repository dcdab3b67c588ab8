"""Image degradations: batched, deterministic, and paired with their clean images.

Every operation takes a stack of grayscale faces, ``uint8`` of shape ``(N, H, W)``, and returns the
same shape and dtype. Arithmetic happens in float and is clipped to [0, 255] once, at the end of
each step (seed 000 cast its noise to ``uint8`` before adding it, so negative noise wrapped round
to bright pixels).

Randomness is never global: the random numbers for one image come from a generator seeded by
``(seed, preset name, image id, step index)`` through :class:`numpy.random.SeedSequence`, using a
stable hash of the strings. A degraded image is therefore a fixed function of its clean image, its
id, the preset and the seed: every notebook, every rerun and every batch size sees the same pairs.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from .images import as_stack, stable_hash

if TYPE_CHECKING:  # pandas is imported where a table is built, not at import time
    import pandas as pd

# --------------------------------------------------------------------------------------------
# Deterministic per-image random generators
# --------------------------------------------------------------------------------------------


def image_rng(seed: int, preset: str, image_id: str, step: int = 0) -> np.random.Generator:
    """The random generator for one (seed, preset, image, step)."""
    return _rng(seed, stable_hash(preset), image_id, step)


def _rng(seed: int, preset_hash: int, image_id: str, step: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, preset_hash, stable_hash(image_id), step]))


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Operations. Signature: op(images, rngs, **params) -> images. ``rngs`` holds one generator per
# image (None for the operations not in RANDOM_OPS, which ignore it).
# --------------------------------------------------------------------------------------------


def gaussian_noise(images: np.ndarray, rngs: Sequence[np.random.Generator], sigma: float) -> np.ndarray:
    """Additive white Gaussian noise, ``sigma`` in grey levels (0-255), added in float, then clipped."""
    images = as_stack(images)
    noisy = np.empty(images.shape)
    for row, rng in zip(noisy, rngs):
        rng.standard_normal(out=row)
    noisy *= sigma  # in place: sigma * noise + image, the same arithmetic without temporaries
    noisy += images
    return _to_uint8(noisy)


def gaussian_blur(images: np.ndarray, rngs: Sequence[np.random.Generator], sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` pixels (PIL's ``GaussianBlur(radius)`` is this sigma).

    Borders are mirrored; the kernel is truncated at 4 sigma (scipy's default).
    """
    images = as_stack(images)
    return _to_uint8(ndimage.gaussian_filter(images.astype(np.float64), sigma=(0, sigma, sigma), mode="mirror"))


def jpeg(images: np.ndarray, rngs: Sequence[np.random.Generator], quality: int) -> np.ndarray:
    """JPEG compression at ``quality`` (1-95) with Pillow's encoder (baseline, grayscale).

    Faces whose sides are multiples of 8 go through one JPEG as tiles of a mosaic: baseline grayscale
    JPEG codes every 8x8 block on its own (no chroma subsampling, no smoothing across blocks), so each
    tile comes back exactly as its own file would (a test checks it), for one encoder call instead of
    one per face."""
    images = as_stack(images)
    n, h, w = images.shape
    if n > 1 and h % 8 == 0 and w % 8 == 0:
        return _jpeg_mosaic(images, int(quality))
    out = np.empty_like(images)
    for i, img in enumerate(images):
        out[i] = _jpeg_roundtrip(img, int(quality))
    return out


def _jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf, formats=["JPEG"]) as decoded:
        return np.asarray(decoded.convert("L"))


#: tiles per mosaic row; rows are added up to JPEG's largest side, then a new mosaic starts
_MOSAIC_COLUMNS, _JPEG_MAX_SIDE = 64, 65_535


def _jpeg_mosaic(images: np.ndarray, quality: int) -> np.ndarray:
    n, h, w = images.shape
    per_mosaic = _MOSAIC_COLUMNS * max(_JPEG_MAX_SIDE // h, 1)
    out = np.empty_like(images)
    for start in range(0, n, per_mosaic):
        chunk = images[start : start + per_mosaic]
        rows = -(-len(chunk) // _MOSAIC_COLUMNS)
        tiles = np.zeros((rows * _MOSAIC_COLUMNS, h, w), np.uint8)
        tiles[: len(chunk)] = chunk
        mosaic = tiles.reshape(rows, _MOSAIC_COLUMNS, h, w).transpose(0, 2, 1, 3).reshape(rows * h, _MOSAIC_COLUMNS * w)
        back = _jpeg_roundtrip(np.ascontiguousarray(mosaic), quality)
        out[start : start + len(chunk)] = back.reshape(rows, h, _MOSAIC_COLUMNS, w).transpose(0, 2, 1, 3).reshape(-1, h, w)[: len(chunk)]
    return out


def low_resolution(images: np.ndarray, rngs: Sequence[np.random.Generator], factor: float) -> np.ndarray:
    """Anti-aliased downscale by ``factor``, then bicubic upscale back to the original size.

    Downscaling uses an anti-aliasing (area-scaled bicubic) filter, so fine detail is removed rather
    than aliased (seed 001 used nearest-neighbour); upscaling is plain bicubic, what a camera
    pipeline or a naive viewer would do. Both steps run on the whole batch at once (torch).
    """
    import torch
    import torch.nn.functional as F

    images = as_stack(images)
    n, h, w = images.shape
    small = (max(1, round(h / factor)), max(1, round(w / factor)))
    x = torch.from_numpy(images.astype(np.float32)).unsqueeze(1)
    x = F.interpolate(x, size=small, mode="bicubic", antialias=True, align_corners=False)
    x = F.interpolate(x, size=(h, w), mode="bicubic", antialias=False, align_corners=False)
    return _to_uint8(x.squeeze(1).numpy())


def salt_and_pepper(images: np.ndarray, rngs: Sequence[np.random.Generator], amount: float) -> np.ndarray:
    """Set a fraction ``amount`` of pixels to 0 or 255 (half each on average), independently per pixel."""
    images = as_stack(images)
    out = images.copy()
    for i, rng in enumerate(rngs):
        u = rng.random(images.shape[1:])
        out[i][u < amount / 2] = 0
        out[i][(u >= amount / 2) & (u < amount)] = 255
    return out


#: op name -> (function, its one severity parameter, allowed range of that parameter)
OPS: dict[str, tuple[Callable[..., np.ndarray], str, tuple[float, float]]] = {
    "gaussian_noise": (gaussian_noise, "sigma", (0.0, 255.0)),
    "gaussian_blur": (gaussian_blur, "sigma", (0.0, 24.0)),
    "jpeg": (jpeg, "quality", (1, 95)),
    "low_resolution": (low_resolution, "factor", (1.0, 48.0)),
    "salt_and_pepper": (salt_and_pepper, "amount", (0.0, 1.0)),
}
#: the operations that draw from their per-image generators
RANDOM_OPS = frozenset({"gaussian_noise", "salt_and_pepper"})


# --------------------------------------------------------------------------------------------
# Presets: named chains of steps with a family and a severity (for robustness curves)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    op: str
    value: float

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown degradation op {self.op!r}; allowed: {sorted(OPS)}")
        lo, hi = OPS[self.op][2]
        if not lo <= self.value <= hi:
            raise ValueError(f"{self.op}.{OPS[self.op][1]} = {self.value} is outside [{lo}, {hi}]")

    def describe(self) -> str:
        return f"{self.op}({OPS[self.op][1]}={self.value:g})"


@dataclass(frozen=True)
class Preset:
    """A named degradation: ``steps`` applied in order. ``family``/``severity`` place it on a robustness curve."""

    name: str
    steps: tuple[Step, ...]
    family: str
    severity: float
    note: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        return " -> ".join(s.describe() for s in self.steps)


def _single(op: str, value: float, name: str, note: str = "", tags: tuple[str, ...] = ()) -> Preset:
    return Preset(name=name, steps=(Step(op, value),), family=op, severity=value, note=note, tags=tags)


def _builtin_presets() -> dict[str, Preset]:
    p: list[Preset] = []
    # Severity ladders, one family per op (the robustness curves run along these).
    for s in (5, 10, 15, 25, 35):
        p.append(_single("gaussian_noise", s, f"noise_{s}", "Gaussian noise, sigma in grey levels"))
    for s in (0.5, 1.0, 1.5, 2.0, 3.0):
        p.append(_single("gaussian_blur", s, f"blur_{s:g}", "Gaussian blur, sigma in pixels"))
    for q in (50, 30, 20, 10, 5):
        p.append(_single("jpeg", q, f"jpeg_{q}", "JPEG at this quality"))
    for f in (2, 4, 8):
        p.append(_single("low_resolution", f, f"lowres_x{f}", "anti-aliased downscale, bicubic upscale", ("seed001",)))
    for a in (0.02, 0.05, 0.10, 0.20):
        p.append(_single("salt_and_pepper", a, f"sp_{a:.2f}", "salt-and-pepper, fraction of pixels"))
    # The seeds' settings, reproduced (with their bugs fixed).
    p.append(
        Preset(
            "seed000_chain",
            (Step("gaussian_noise", 15), Step("gaussian_blur", 1.5), Step("jpeg", 20)),
            family="seed000_chain",
            severity=1,
            note="seed 000: noise sigma 15 (added in float), blur radius 1.5, JPEG quality 20",
            tags=("seed000",),
        )
    )
    p.append(_single("gaussian_noise", 5.1, "seed003_low", "seed 003 low Gaussian: sigma 0.02 of [0,1]", ("seed003",)))
    p.append(_single("gaussian_noise", 15.3, "seed003_high", "seed 003 high Gaussian: sigma 0.06 of [0,1]", ("seed003",)))
    p.append(_single("salt_and_pepper", 0.10, "seed003_sp", "seed 003 salt-and-pepper: 10% of pixels", ("seed003",)))
    return {x.name: x for x in p}


PRESETS: dict[str, Preset] = _builtin_presets()

#: readable names of the preset families, for sentences
FAMILY_NAMES = {"gaussian_noise": "Gaussian noise", "gaussian_blur": "Blur", "jpeg": "JPEG", "low_resolution": "Low resolution",
                "salt_and_pepper": "Salt-and-pepper noise", "seed000_chain": "Seed 000's noise+blur+JPEG chain"}

#: Named groups of presets that a parameter file can list instead of single names.
PRESET_GROUPS: dict[str, tuple[str, ...]] = {
    "seeds": ("seed000_chain", "seed003_low", "seed003_high", "seed003_sp", "lowres_x2", "lowres_x4", "lowres_x8"),
    "noise_sweep": tuple(n for n in PRESETS if n.startswith("noise_")),
    "blur_sweep": tuple(n for n in PRESETS if n.startswith("blur_")),
    "jpeg_sweep": tuple(n for n in PRESETS if n.startswith("jpeg_")),
    "lowres_sweep": tuple(n for n in PRESETS if n.startswith("lowres_")),
    "sp_sweep": tuple(n for n in PRESETS if n.startswith("sp_")),
}


def training_ranges() -> dict[str, tuple[str, float, float]]:
    """The severity range of each single-op family among the built-in presets: ``family -> (op, lo, hi)``.
    Degradation as training augmentation draws from these, so a robust model sees what the study tests."""
    out: dict[str, tuple[str, float, float]] = {}
    for p in PRESETS.values():
        if len(p.steps) == 1:
            op, v = p.steps[0].op, p.steps[0].value
            lo, hi = out.get(op, (op, v, v))[1:]
            out[op] = (op, min(lo, v), max(hi, v))
    return out


#: what :func:`random_degradations` draws from: the single-op families and seed 000's chain
AUGMENT_FAMILIES: tuple[str, ...] = ("gaussian_noise", "gaussian_blur", "jpeg", "low_resolution", "salt_and_pepper", "seed000_chain")


def random_degradations(images: np.ndarray, rng: np.random.Generator, p: float,
                        families: Sequence[str] = AUGMENT_FAMILIES) -> tuple[np.ndarray, list[str]]:
    """Degrade each face of a batch with probability ``p`` by one family drawn uniformly from ``families``, at a
    severity drawn uniformly from that family's preset range (:func:`training_ranges`; JPEG quality as an
    integer; the chain as seed 000's preset). Returns the batch and one description per face ("" if left
    clean). Everything comes from ``rng``: the same generator state gives the same faces."""
    images = as_stack(images)
    unknown = [f for f in families if f not in AUGMENT_FAMILIES]
    if unknown:
        raise ValueError(f"unknown degradation families {unknown}; allowed: {list(AUGMENT_FAMILIES)}")
    ranges = training_ranges()
    out, applied = images.copy(), [""] * len(images)
    chosen = rng.random(len(images)) < p
    picks = rng.integers(0, len(families), len(images))
    for i in np.flatnonzero(chosen):
        family = families[picks[i]]
        face_rng = np.random.default_rng(rng.integers(0, 2**63))
        if family == "seed000_chain":
            steps = PRESETS["seed000_chain"].steps
        else:
            op, lo, hi = ranges[family]
            value = face_rng.uniform(lo, hi)
            steps = (Step(op, float(round(value)) if op == "jpeg" else float(value)),)
        face = out[i : i + 1]
        for step in steps:
            fn, pname, _ = OPS[step.op]
            face = fn(face, [face_rng], **{pname: step.value})
        out[i] = face[0]
        applied[i] = " -> ".join(step.describe() for step in steps)
    return out, applied


def make_preset(name: str, steps: Iterable[dict[str, Any]], family: str | None = None, severity: float = 1.0) -> Preset:
    """Build a custom preset from ``[{"op": "jpeg", "value": 30}, ...]`` (as written in a parameter file)."""
    built = tuple(Step(s["op"], float(s["value"])) for s in steps)
    if not built:
        raise ValueError(f"preset {name!r} has no steps")
    return Preset(name=name, steps=built, family=family or (built[0].op if len(built) == 1 else name), severity=severity)


def expand_preset_names(names: Iterable[str]) -> list[str]:
    """Expand group names (``noise_sweep`` ...) into preset names, keeping order and dropping repeats."""
    out: list[str] = []
    for n in names:
        for m in PRESET_GROUPS.get(n, (n,)):
            if m not in out:
                out.append(m)
    return out


def apply_preset(
    images: np.ndarray,
    ids: Sequence[str],
    preset: Preset,
    seed: int,
) -> np.ndarray:
    """Degrade a batch. Result for each image depends only on (its pixels, its id, preset name, seed), so
    the batch is split between threads (``compute.map_threads``) with the same result."""
    from .compute import map_threads

    images = as_stack(images)
    if len(ids) != len(images):
        raise ValueError(f"{len(ids)} ids for {len(images)} images")
    return map_threads(_apply_steps, images, np.asarray(ids, dtype=str), preset=preset, seed=seed)


def _apply_steps(images: np.ndarray, ids: np.ndarray, preset: Preset, seed: int) -> np.ndarray:
    out = images
    preset_hash = stable_hash(preset.name)
    for k, step in enumerate(preset.steps):
        fn, pname, _ = OPS[step.op]
        # deterministic operations ignore their generators: only the random ones pay for seeding
        rngs = [_rng(seed, preset_hash, str(i), k) for i in ids] if step.op in RANDOM_OPS else [None] * len(ids)
        out = fn(out, rngs, **{pname: step.value})
    return out


def degrade_all(
    images: np.ndarray,
    ids: Sequence[str],
    preset: Preset,
    seed: int,
    batch_size: int = 512,
    progress: bool = True,
) -> np.ndarray:
    """:func:`apply_preset` over a whole data set in batches, with a progress bar."""
    from tqdm.auto import tqdm

    out = np.empty_like(images)
    starts = range(0, len(images), batch_size)
    for s in tqdm(starts, desc=f"degrade {preset.name}", disable=not progress or len(starts) < 2, leave=False):
        out[s : s + batch_size] = apply_preset(images[s : s + batch_size], ids[s : s + batch_size], preset, seed)
    return out


# --------------------------------------------------------------------------------------------
# Stage: degrade the run's clean images with every preset, score the pairs
# --------------------------------------------------------------------------------------------


def pair_metrics(clean: np.ndarray, degraded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image PSNR (dB) and SSIM (scikit-image, ``data_range=255``) of ``degraded`` against ``clean``.

    Identical pairs have infinite PSNR; they are kept as ``inf`` (summaries report medians).
    """
    from .compute import map_chunks

    return map_chunks(_pair_metrics, np.asarray(clean), np.asarray(degraded))


def _pair_metrics(clean: np.ndarray, degraded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    psnr = np.empty(len(clean))
    ssim = np.empty(len(clean))
    with np.errstate(divide="ignore"):
        for i, (a, b) in enumerate(zip(clean, degraded)):
            psnr[i] = peak_signal_noise_ratio(a, b, data_range=255)
            ssim[i] = structural_similarity(a, b, data_range=255)
    return psnr, ssim


def preset_table(presets: Sequence[Preset]) -> "pd.DataFrame":
    import pandas as pd

    return pd.DataFrame(
        [{"preset": p.name, "family": p.family, "severity": p.severity, "steps": p.describe(), "note": p.note} for p in presets]
    )


def summary_table(metrics: "pd.DataFrame", presets: Sequence[Preset]) -> "pd.DataFrame":
    """Median and mean PSNR/SSIM per preset (finite PSNR only in the mean), in preset order."""
    import pandas as pd

    rows = []
    for p in presets:
        m = metrics[metrics["preset"] == p.name]
        finite = m["psnr"][np.isfinite(m["psnr"])]
        rows.append({"preset": p.name, "steps": p.describe(), "images": len(m),
                     "PSNR median (dB)": float(np.median(m["psnr"])), "PSNR mean (dB)": float(finite.mean()) if len(finite) else float("inf"),
                     "SSIM median": float(m["ssim"].median()), "SSIM mean": float(m["ssim"].mean())})
    return pd.DataFrame(rows)


