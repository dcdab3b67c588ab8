"""Restorers: one registry (``name -> factory``), one batched interface, and the classical filters.

``create(name, ctx)`` builds one (notebook 03's cached stage is :mod:`fer_helpers.stages.restoration`).
Every restorer takes a stack of 48x48 grey ``uint8`` faces, shape ``(N, 48, 48)``, and returns the same
shape and dtype. Adding one is a class (or a module) and a ``@register("name")`` line.

A restorer that cannot run here (missing weights, package or GPU) raises :class:`RestorerUnavailable`
from its factory with the reason and the fix; the study lists it as unavailable and goes on.

Restorers see only the degraded image: none is told which preset made it. ``auto`` picks a classical
filter per image from the quality check's own measurements, and ``<name>+gate`` applies ``<name>`` only
to the faces the quality check flags (with the run's thresholds), leaving the others untouched.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from scipy import ndimage

if TYPE_CHECKING:  # pandas is imported where a table is built, not at import time
    import pandas as pd

from . import registry
from .compute import for_inference
from .images import as_stack
from .paths import MODELS_DIR
from .registry import RestorerUnavailable, doc_line, loading, registrar


@dataclass
class RestoreContext:
    """What every factory may need: where to run, batch size, weight files, quality thresholds, and each
    restorer's own keyword options (``restoration.options``)."""

    device: str = "cpu"
    batch_size: int = 64
    weights: dict[str, str] = field(default_factory=dict)  # restorer name -> weights file (overrides the default)
    allow_download: bool = True  # face-prior weights may be fetched once from their official release URL
    cache_dir: Path = Path.home() / ".cache" / "fer-study"
    thresholds: Any = None  # QualityThresholds, for auto and the gate
    face_priors_on_cpu: bool = True  # the study's parameters default to False: seconds per face on a CPU
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # restorer -> keyword arguments of its factory


class Restorer(ABC):
    name: str = ""
    family: str = ""  # identity | classical | learned | face prior
    whole_stack: bool = False  # True: takes a whole condition at once (CPU filters that split it over worker processes)

    @abstractmethod
    def restore(self, images: np.ndarray) -> np.ndarray:
        """Restore a batch: uint8 (N, 48, 48) in, the same out."""

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = as_stack(images)
        if len(images) == 0:
            return images.copy()
        out = self.restore(images)
        if out.shape != images.shape or out.dtype != np.uint8:
            raise RuntimeError(f"restorer {self.name} returned {out.dtype} {out.shape} for {images.shape}")
        return out

    def restore_reusing(self, images: np.ndarray, done: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, float]]:
        """``self(images)``, taking what other restorers already made of these same faces from ``done``
        (name -> output) where this restorer would compute exactly that; returns the output and, per reused
        restorer, the share of the faces taken from it. The default reuses nothing."""
        return self(images), {}

    def describe(self) -> str:
        return doc_line(type(self))


REGISTRY: dict[str, Callable[[RestoreContext], Restorer]] = {}
GATE_SUFFIX = "+gate"


register = registrar(REGISTRY)  # @register("median", "classical") adds a restorer built as cls(ctx, **options)


def create(name: str, ctx: RestoreContext) -> Restorer:
    """Build a restorer by name with its options from ``ctx.options[name]`` (``x+gate`` gives the gated ``x``,
    with ``x``'s options); raises :class:`RestorerUnavailable`, or ValueError for an option it does not take."""
    if name.endswith(GATE_SUFFIX):
        return Gated(create(name[: -len(GATE_SUFFIX)], ctx), ctx.thresholds)
    if not is_known(name):
        raise KeyError(f"unknown restorer {name!r}; known: {', '.join(available_names())}")
    options = ctx.options.get(name, {})
    check_options(name, options)
    return REGISTRY[name](ctx, **options)


def option_defaults(name: str) -> dict[str, Any]:
    """The keyword options restorer ``name`` takes (its factory's arguments after ``ctx``) and their defaults."""
    import inspect

    if not is_known(name):
        raise KeyError(f"unknown restorer {name!r}; known: {', '.join(available_names())}")
    params = list(inspect.signature(REGISTRY[name]).parameters.values())[1:]  # the first is ctx
    return {p.name: p.default for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_options(name: str, options: dict[str, Any]) -> None:
    """ValueError naming the options ``name`` does not take, and those it does."""
    accepted = list(option_defaults(name))
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = f"it takes {', '.join(accepted)}" if accepted else "it takes none"
        raise ValueError(f"restoration.options.{name}: unknown option(s) {', '.join(unknown)}; {takes}")


def _load_plugins() -> None:
    """Import the modules that register the heavier restorers (only when a restorer is built)."""
    from . import face_priors  # noqa: F401  (GFPGAN, CodeFormer)


def is_known(name: str) -> bool:
    """A built-in restorer, an installed plug-in (entry point ``fer_study.restorers``) or ``package.module:Class``."""
    _load_plugins()
    return registry.known(REGISTRY, name, registry.RESTORER_PLUGINS, Restorer)


def available_names() -> list[str]:
    _load_plugins()
    return registry.names(REGISTRY, registry.RESTORER_PLUGINS, Restorer)


def _float(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float64) / 255.0


def _uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


# ---- identity and classical ---------------------------------------------------------------------


@register("none", "identity")
class Identity(Restorer):
    """No restoration: the degraded face itself (the baseline every comparison is paired against)."""

    whole_stack = True

    def __init__(self, ctx: RestoreContext | None = None):
        pass

    def restore(self, images: np.ndarray) -> np.ndarray:
        return images.copy()


@register("median", "classical")
class Median(Restorer):
    """3x3 median filter (for salt-and-pepper), batched."""

    whole_stack = True

    def __init__(self, ctx: RestoreContext | None = None, size: int = 3):
        self.size = size

    def restore(self, images: np.ndarray) -> np.ndarray:
        return ndimage.median_filter(images, size=(1, self.size, self.size), mode="mirror")


@register("nlm", "classical")
class NonLocalMeans(Restorer):
    """Non-local means (scikit-image), strength set per image from its estimated noise sigma."""

    whole_stack = True

    def __init__(self, ctx: RestoreContext | None = None, h_factor: float = 0.7, patch_size: int = 5, patch_distance: int = 6):
        self.h_factor = h_factor  # h = h_factor * sigma_hat; defaults tuned on PublicTest (scripts/tune_classical.py)
        self.patch_size, self.patch_distance = patch_size, patch_distance

    def restore(self, images: np.ndarray) -> np.ndarray:
        from .compute import map_chunks

        return map_chunks(_nlm, images, min_chunk=64, h_factor=self.h_factor, patch_size=self.patch_size,
                          patch_distance=self.patch_distance)


def _nlm(images: np.ndarray, h_factor: float, patch_size: int, patch_distance: int) -> np.ndarray:
    """Non-local means of each face with its own estimated sigma (one process; see :class:`NonLocalMeans`)."""
    from skimage.restoration import denoise_nl_means

    from .quality import _noise_sigma

    sig = _noise_sigma(images) / 255.0
    x = _float(images)
    out = np.stack([
        denoise_nl_means(im, h=h_factor * s, sigma=s, patch_size=patch_size,
                         patch_distance=patch_distance, fast_mode=True, channel_axis=None) if s > 0 else im
        for im, s in zip(x, sig)
    ])
    return _uint8(out)


@register("unsharp", "classical")
class Unsharp(Restorer):
    """Unsharp masking (scikit-image) for blur: ``x + amount * (x - gaussian(x, radius))``, batched."""

    whole_stack = True

    def __init__(self, ctx: RestoreContext | None = None, radius: float = 0.5, amount: float = 2.0):
        self.radius, self.amount = radius, amount  # defaults tuned on PublicTest (scripts/tune_classical.py)

    def restore(self, images: np.ndarray) -> np.ndarray:
        from skimage.filters import unsharp_mask

        # channel_axis=0: each face is filtered on its own (the batch axis is never blurred across)
        return _uint8(unsharp_mask(_float(images), radius=self.radius, amount=self.amount, channel_axis=0))


@register("wiener", "classical")
class Wiener(Restorer):
    """Wiener deconvolution (scikit-image) with a Gaussian blur kernel of fixed sigma."""

    whole_stack = True

    def __init__(self, ctx: RestoreContext | None = None, psf_sigma: float = 0.7, balance: float = 0.01):
        self.balance = balance  # defaults tuned on PublicTest (scripts/tune_classical.py)
        r = int(np.ceil(3 * psf_sigma))
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        psf = np.exp(-(xx**2 + yy**2) / (2 * psf_sigma**2))
        self.psf = psf / psf.sum()

    def restore(self, images: np.ndarray) -> np.ndarray:
        from .compute import map_chunks

        return map_chunks(_wiener, images, psf=self.psf, balance=self.balance)


def _wiener(images: np.ndarray, psf: np.ndarray, balance: float) -> np.ndarray:
    from skimage.restoration import wiener

    # reflect-pad: the FFT-based deconvolution treats the image as periodic, which rings at the borders
    pad = 2 * psf.shape[0]
    x = np.pad(_float(images), ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    out = np.stack([wiener(im, psf, balance, clip=True) for im in x])
    return _uint8(out[:, pad:-pad, pad:-pad])


def impulses(images: np.ndarray, min_jump: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Isolated impulses: pixels that are 0 or 255 and differ from their 3x3 median by ``min_jump``; with that median."""
    x = as_stack(images)
    med = ndimage.median_filter(x, size=(1, 3, 3), mode="mirror")
    return ((x == 0) | (x == 255)) & (np.abs(x.astype(np.int16) - med) >= min_jump), med


def impulse_fraction(images: np.ndarray, min_jump: int = 60) -> np.ndarray:
    """Share of each face's pixels that are isolated impulses (see :func:`impulses`)."""
    imp = impulses(images, min_jump)[0]
    return imp.mean(axis=(1, 2))


IMPULSE_MIN = 0.01  # share of isolated 0/255 pixels that marks a salt-and-pepper candidate
IMPULSE_RESIDUAL_SIGMA_MAX = 12.0  # grey levels; see salt_and_pepper_faces


def salt_and_pepper_faces(images: np.ndarray, min_fraction: float = IMPULSE_MIN,
                          residual_sigma_max: float = IMPULSE_RESIDUAL_SIGMA_MAX) -> np.ndarray:
    """Which faces carry salt-and-pepper noise: at least ``min_fraction`` isolated 0/255 pixels, and little noise left
    once the switching median has replaced them.

    Heavy Gaussian noise clips to 0 and 255 too (noise_35: 43% of faces pass the impulse test), but stays noisy after
    the impulses go. On 2,000 Training faces (scripts/calibrate_unet_auto.py) the estimated sigma after the switching
    median is at most 7.0 (95th percentile) for every salt-and-pepper preset and at least 24.9 (5th) for the noise_35
    faces with impulses, hence 12.
    """
    x = as_stack(images)
    out = impulse_fraction(x) >= min_fraction
    if out.any():
        from .quality import noise_sigma

        out[out] = noise_sigma(SwitchingMedian()(x[out])) <= residual_sigma_max
    return out


@register("switching_median", "classical")
class SwitchingMedian(Restorer):
    """Switching median (for salt-and-pepper): only impulses change, each to the median of its 3x3 neighbours
    that are not impulses themselves; every other pixel keeps its value.

    An impulse is any 0 or 255 pixel (``min_jump=0``). Tuned on PublicTest seed003_sp: also requiring a jump
    of 20 or 60 grey levels from the 3x3 median gave 34.68 and 31.07 dB, against 34.88 dB without it.
    """

    whole_stack = True

    def __init__(self, ctx: RestoreContext | None = None, min_jump: int = 0):
        self.min_jump = min_jump

    def restore(self, images: np.ndarray) -> np.ndarray:
        x = as_stack(images)
        imp, med = impulses(x, self.min_jump)
        n, i, j = np.nonzero(imp)
        if not len(n):
            return x.copy()
        good = np.pad(np.where(imp, np.nan, x.astype(np.float32)), ((0, 0), (1, 1), (1, 1)), mode="reflect")
        neigh = np.stack([good[n, i + di, j + dj] for di in range(3) for dj in range(3)], axis=1)
        some = ~np.isnan(neigh).all(axis=1)  # all nine are 0/255 (inside a saturated patch): the plain 3x3 median
        val = med[n, i, j].astype(np.float32)
        val[some] = np.nanmedian(neigh[some], axis=1)
        out = x.copy()
        out[n, i, j] = np.rint(val).astype(np.uint8)
        return out


@register("auto", "classical")
class Auto(Restorer):
    """Picks a classical filter per face from the quality check: impulses -> switching median, noise -> NLM, blur -> unsharp."""

    whole_stack = True

    def __init__(self, ctx: RestoreContext):
        from . import quality

        self.thresholds = ctx.thresholds or quality.PROJECT_THRESHOLDS
        # built like the stand-alone filters (their restoration.options included), so that reusing their
        # outputs from ``done`` gives exactly what these would compute
        self.switching_median, self.nlm, self.unsharp = (create(n, ctx) for n in ("switching_median", "nlm", "unsharp"))

    def plan(self, images: np.ndarray) -> np.ndarray:
        """The filter chosen for each face: 'switching_median', 'nlm', 'unsharp', 'nlm+unsharp' or 'none'."""
        from . import quality

        v = quality.verdict(quality.measure(images), self.thresholds)
        impulse = salt_and_pepper_faces(images)
        noisy = v["flag_noise"].to_numpy() | v["flag_jpeg"].to_numpy()
        blur = v["flag_blur"].to_numpy()
        plan = np.full(len(images), "none", dtype=object)
        plan[blur] = "unsharp"
        plan[noisy] = "nlm"
        plan[noisy & blur] = "nlm+unsharp"
        plan[impulse] = "switching_median"
        return plan

    def restore(self, images: np.ndarray) -> np.ndarray:
        return self.restore_reusing(images, {})[0]

    def restore_reusing(self, images: np.ndarray, done: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, float]]:
        # the filters work face by face, so nlm(all)[idx] == nlm(all[idx]): a plan step's first filter
        # is taken from ``done`` when that filter already ran on these faces
        plan = self.plan(images)
        out, shares = images.copy(), {}
        for step_names in sorted(set(plan) - {"none"}):
            idx = np.flatnonzero(plan == step_names)
            first, *rest = step_names.split("+")
            if first in done:
                x = done[first][idx]
                shares[first] = shares.get(first, 0.0) + len(idx) / len(images)
            else:
                x = getattr(self, first)(images[idx])
            for step in rest:
                x = getattr(self, step)(x)
            out[idx] = x
        return out, shares


class Gated(Restorer):
    """Applies the inner restorer only to faces the quality check flags; the rest pass through."""

    family = "gated"

    def __init__(self, inner: Restorer, thresholds: Any):
        from . import quality

        self.inner = inner
        self.name = inner.name + GATE_SUFFIX
        self.whole_stack = inner.whole_stack
        self.thresholds = thresholds or quality.PROJECT_THRESHOLDS

    def flagged(self, images: np.ndarray) -> np.ndarray:
        from . import quality

        return quality.verdict(quality.measure(images), self.thresholds)["flagged"].to_numpy(dtype=bool)

    def restore(self, images: np.ndarray) -> np.ndarray:
        out = images.copy()
        f = self.flagged(images)
        if f.any():
            out[f] = self.inner(images[f])
        return out

    def restore_reusing(self, images: np.ndarray, done: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, float]]:
        if self.inner.name not in done:
            return self(images), {}
        out = images.copy()
        f = self.flagged(images)
        out[f] = done[self.inner.name][f]  # the inner restorer treats each face on its own
        return out, {self.inner.name: float(f.mean())}


# ---- learned: the project's Attention U-Net ------------------------------------------------------

UNET_WEIGHTS = MODELS_DIR / "unet_denoiser" / "blind.safetensors"


@register("unet", "learned")
class UNetDenoiser(Restorer):
    """The project's Attention U-Net (seed 003's architecture), one blind model for every preset."""

    def __init__(self, ctx: RestoreContext, tta: str = "none"):
        from . import unet

        self.tta = unet.check_tta(tta)  # none | flip: the mirror self-ensemble (each face and its mirror, averaged)
        path = Path(ctx.weights.get("unet", UNET_WEIGHTS))
        fix = "train it: see models/unet_denoiser/README.md"
        if not path.is_file():
            raise RestorerUnavailable("unet", f"weights file {path} not found", fix)
        with loading(RestorerUnavailable, "unet", path, "Attention U-Net weights file", fix):
            model, self.meta = unet.load_model(path, ctx.device)
        self.model = for_inference(model, ctx.device)
        self.device, self.batch_size = ctx.device, ctx.batch_size

    def restore(self, images: np.ndarray) -> np.ndarray:
        from . import unet

        return unet.denoise(self.model, images, self.device, self.batch_size, self.tta)


UNET_SPECIALISTS = {name: MODELS_DIR / "unet_denoiser" / f"{name}.safetensors" for name in ("seed003_low", "seed003_high", "seed003_sp")}


@register("unet_auto", "learned")
class UNetAuto(Restorer):
    """Per face, the U-Net fine-tune its quality measurements call for (impulses, low or high noise), else the blind U-Net."""

    # Noise-flagged faces go to a noise fine-tune only inside its band of estimated sigma (grey levels): each was
    # trained on one sigma and is worse than the blind model away from it. Edges from scripts/calibrate_unet_auto.py
    # (2,000 Training faces): seed003_low measures 5.6-9.0 (5th-95th percentile), noise_10 9.6-13.1, seed003_high
    # 13.9-17.8, noise_25 21.1-26.7.
    low_noise_max = 9.3
    high_noise_band = (13.5, 19.5)

    def __init__(self, ctx: RestoreContext, tta: str = "none"):
        from . import unet

        self.blind = UNetDenoiser(ctx, tta)
        self.models = {}
        for name, default in UNET_SPECIALISTS.items():
            path = Path(ctx.weights.get(f"unet_{name}", default))
            fix = "see models/unet_denoiser/README.md"
            if not path.is_file():
                raise RestorerUnavailable("unet_auto", f"weights file {path} (unet_{name}) not found", fix)
            with loading(RestorerUnavailable, "unet_auto", path, f"Attention U-Net weights file (unet_{name})", fix):
                self.models[name] = for_inference(unet.load_model(path, ctx.device)[0], ctx.device)
        self.thresholds = ctx.thresholds or Auto(ctx).thresholds
        self.device, self.batch_size, self.tta = ctx.device, ctx.batch_size, self.blind.tta

    def plan(self, images: np.ndarray) -> np.ndarray:
        from . import quality

        v = quality.verdict(quality.measure(images), self.thresholds)
        plan = np.full(len(images), "blind", dtype=object)
        noisy, sigma = v["flag_noise"].to_numpy(dtype=bool), v["noise_sigma"].to_numpy()
        lo, hi = self.high_noise_band
        plan[noisy & (sigma <= self.low_noise_max)] = "seed003_low"
        plan[noisy & (sigma >= lo) & (sigma <= hi)] = "seed003_high"
        plan[salt_and_pepper_faces(images)] = "seed003_sp"
        return plan

    def restore(self, images: np.ndarray) -> np.ndarray:
        from . import unet

        plan = self.plan(images)
        out = np.empty_like(images)
        for name, model in {"blind": self.blind.model, **self.models}.items():
            idx = np.flatnonzero(plan == name)
            if len(idx):
                out[idx] = unet.denoise(model, images[idx], self.device, self.batch_size, self.tta)
        return out


def run_restorer(restorer: Restorer, images: np.ndarray, batch_size: int, progress: bool = False, desc: str = "",
                 done: dict[str, tuple[np.ndarray, float]] | None = None) -> tuple[np.ndarray, float]:
    """Restore a whole stack in batches; returns the result and the seconds per image.

    ``done`` (restorer name -> (output on these same faces, its seconds per image)) lets a composite
    restorer (``auto``, a gate) reuse work; its seconds per image then include the reused restorer's
    time for the share of faces taken from it, so the figure is what it would cost on its own.
    """
    from tqdm.auto import tqdm

    done = done or {}
    out = np.empty_like(images)
    batch_size = max(len(images), 1) if restorer.whole_stack else batch_size  # batches are for GPU memory
    starts = range(0, len(images), batch_size)
    reused: dict[str, float] = {}
    t0 = time.perf_counter()
    for s in tqdm(starts, desc=desc or restorer.name, disable=not progress or len(starts) < 2, leave=False):
        batch = images[s : s + batch_size]
        out[s : s + batch_size], shares = restorer.restore_reusing(batch, {k: v[s : s + batch_size] for k, (v, _) in done.items()})
        for k, share in shares.items():
            reused[k] = reused.get(k, 0.0) + share * len(batch)
    seconds = time.perf_counter() - t0 + sum(faces * done[k][1] for k, faces in reused.items())
    return out, seconds / max(len(images), 1)


# ---- stage: restore every degraded preset with every restorer, score against the clean faces ------


def summary(metrics: "pd.DataFrame") -> "pd.DataFrame":
    """Per (condition, restorer): mean PSNR and SSIM against clean, the gain over the unrestored face, the share improved.

    Identical pairs (infinite PSNR, e.g. ``none`` on clean faces) are left out of the PSNR means and counted.
    """
    import pandas as pd

    m = metrics.copy()
    fin = np.isfinite(m["psnr"]) & np.isfinite(m["psnr_degraded"])
    m["psnr_f"] = m["psnr"].where(np.isfinite(m["psnr"]))
    m["gain"] = (m["psnr"] - m["psnr_degraded"]).where(fin)
    m["improved"] = m["psnr"] > m["psnr_degraded"]
    g = m.groupby(["condition", "restorer"], sort=False)
    out = pd.DataFrame({
        "faces": g.size(),
        "PSNR (dB)": g["psnr_f"].mean(),
        "SSIM": g["ssim"].mean(),
        "PSNR gain (dB)": g["gain"].mean(),
        "SSIM gain": g["ssim"].mean() - g["ssim_degraded"].mean(),
        "improved": g["improved"].mean(),
        "identical to clean": g["psnr"].apply(lambda s: int(np.isinf(s).sum())),
    })
    return out.reset_index()


