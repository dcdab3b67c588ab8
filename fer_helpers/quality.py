"""The quality check: per-image blur, noise and JPEG measures, a verdict, and the check scored as a detector.

Measures (all on 0-255 grey levels):

- **Laplacian variance** (blur): variance of the 4-neighbour Laplacian (OpenCV's ``cv2.Laplacian``
  kernel, mirrored borders). Sharp faces score high; blur lowers it. Noise *raises* it, so it says
  nothing about noise.
- **Noise sigma** (noise): :func:`skimage.restoration.estimate_sigma`, the wavelet (MAD of the
  finest diagonal detail band) estimate of additive Gaussian noise, per image (computed for a whole
  stack at once, bit-identical to calling it face by face).
- **SNR (dB)**: ``10 log10(max(var(image) - sigma^2, eps) / sigma^2)``, the image's own contrast
  (signal variance) over the estimated noise variance. Seed 000 used mean/std, which measures
  brightness over contrast and does not change with noise in a useful way.
- **Blockiness** (JPEG): mean absolute step across 8x8 block boundaries divided by the mean step
  inside blocks; about 1 for images without block structure, above 1 for blocky JPEG.

The verdict flags an image when any enabled threshold is crossed; the flags say which.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Optional

import numpy as np
import pandas as pd

from .images import as_stack

#: measure -> (column, sign): sign * value grows with degradation (for ROC analysis)
MEASURES: dict[str, tuple[str, float]] = {
    "blur": ("laplacian_var", -1.0),
    "noise": ("noise_sigma", 1.0),
    "snr": ("snr_db", -1.0),
    "jpeg": ("blockiness", 1.0),
}


def laplacian_variance(images: np.ndarray) -> np.ndarray:
    """Per-image variance of the 4-neighbour Laplacian, borders mirrored (scipy.ndimage's "mirror").

    Computed in integers from shifted views: exact, so each face's value equals scipy's mirrored float
    correlation with the same kernel (a test checks it), at a fraction of its cost."""
    x = as_stack(images).astype(np.int32)
    if not len(x):
        return np.zeros(0)
    if x.shape[1] < 2 or x.shape[2] < 2:  # too small for a reflected pad: scipy's own correlation
        from scipy import ndimage

        kernel = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64)[None]
        return ndimage.correlate(x.astype(np.float64), kernel, mode="mirror").reshape(len(x), -1).var(axis=1)
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="reflect")  # numpy's "reflect" is scipy's "mirror"
    lap = p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:] - 4 * x
    return lap.reshape(len(x), -1).astype(np.float64).var(axis=1)


def noise_sigma(images: np.ndarray) -> np.ndarray:
    """Per-image Gaussian noise sigma in grey levels: scikit-image's wavelet estimator, batched."""
    return _noise_sigma(as_stack(images))


def _noise_sigma(images: np.ndarray) -> np.ndarray:
    """``skimage.restoration.estimate_sigma`` of each face (a test checks equality), for a whole stack at once.

    scikit-image takes one image per call (about 100 us each, most of it Python overhead); here one
    ``pywt.dwtn`` over the stack's image axes gives every face's diagonal detail band, and the median of
    each band's non-zero magnitudes (NaN-masked, as scikit-image drops exact zeros) over the normal
    distribution's 75th percentile is the same estimate. A face without non-zero detail (constant) has
    no noise: 0, where scikit-image returns NaN."""
    import pywt

    x = as_stack(images).astype(np.float64)
    if not len(x):
        return np.zeros(0)
    detail = np.abs(pywt.dwtn(x, "db2", axes=(1, 2))["dd"]).reshape(len(x), -1)
    detail[detail == 0] = np.nan  # scikit-image ignores exact zeros; NaN sorts last
    ranked = np.sort(detail, axis=1)
    kept = np.count_nonzero(~np.isnan(ranked), axis=1)
    rows = np.arange(len(x))
    low, high = ranked[rows, np.maximum(kept - 1, 0) // 2], ranked[rows, kept // 2]
    median = (low + high) / 2  # np.median's mean of the two middle values (the same value twice if odd)
    return np.where(kept > 0, median / _NORMAL_Q75, 0.0)


#: the standard normal's 75th percentile (scikit-image divides by scipy.stats.norm.ppf(0.75), the same
#: double; the standard library's inverse CDF avoids importing scipy.stats, 0.3 s, for one constant)
_NORMAL_Q75 = NormalDist().inv_cdf(0.75)


def snr_db(images: np.ndarray, sigma: np.ndarray, floor: float = 0.5) -> np.ndarray:
    """Signal-to-noise ratio in dB from the image variance and an estimated noise sigma (floored at ``floor``)."""
    x = as_stack(images).astype(np.float64)
    var = x.reshape(len(x), -1).var(axis=1)
    noise_var = np.maximum(np.asarray(sigma, dtype=np.float64), floor) ** 2
    return 10.0 * np.log10(np.maximum(var - noise_var, 1e-3) / noise_var)


def blockiness(images: np.ndarray, block: int = 8) -> np.ndarray:
    """Mean |step| across ``block``-pixel boundaries over mean |step| elsewhere, both directions, batched."""
    x = as_stack(images).astype(np.int32)
    dh = np.abs(np.diff(x, axis=2))  # (N, H, W-1); column j is the step between pixel j and j+1
    dv = np.abs(np.diff(x, axis=1))
    # integer sums are exact, so "elsewhere" is the total minus the boundary steps
    on = dh[:, :, block - 1 :: block].sum(axis=(1, 2)) + dv[:, block - 1 :: block, :].sum(axis=(1, 2))
    off = dh.sum(axis=(1, 2)) + dv.sum(axis=(1, 2)) - on
    n_on = dh[0, :, block - 1 :: block].size + dv[0, block - 1 :: block, :].size if len(x) else 1
    n_off = dh[0].size + dv[0].size - n_on if len(x) else 1
    return (on / n_on + 1e-6) / (off / n_off + 1e-6)


_MEMO: "OrderedDict[str, pd.DataFrame]" = OrderedDict()


def measure(images: np.ndarray) -> pd.DataFrame:
    """All quality measures of a stack, one row per image.

    The last few stacks' results are remembered (by pixel hash): the automatic restorers and the gates
    measure the same degraded faces in turn."""
    images = as_stack(images)
    key = hashlib.sha1(images.tobytes()).hexdigest() + str(images.shape)
    if key in _MEMO:
        _MEMO.move_to_end(key)
        return _MEMO[key].copy()
    from .compute import map_threads

    _MEMO[key] = map_threads(_measure, images)
    while len(_MEMO) > 64:
        _MEMO.popitem(last=False)
    return _MEMO[key].copy()


def _measure(images: np.ndarray) -> pd.DataFrame:
    sig = noise_sigma(images)
    return pd.DataFrame(
        {
            "laplacian_var": laplacian_variance(images),
            "noise_sigma": sig,
            "snr_db": snr_db(images, sig),
            "blockiness": blockiness(images),
        }
    )


#: Named quality-check thresholds. seed000's are the values seed 000 used; they were chosen there for
#: Laplacian variance and a mean/std "SNR" (which measures contrast, not noise). Here the 10 applies to
#: a real SNR in dB from the estimated noise level, so it is kept only to compare with that seed.
#: project's: each threshold flags 5% of clean FER2013 *Training* faces (400 per class, seed 0), so the
#: check's false-alarm rate is set without looking at the evaluation split
#: (``scripts/calibrate_quality.py`` reproduces the numbers: 776.2, 18.67, 1.190).
QUALITY_PRESETS: dict[str, dict[str, float | None]] = {
    "seed000": {"laplacian_var_min": 150.0, "snr_db_min": 10.0, "blockiness_max": None},
    "project": {"laplacian_var_min": 776.0, "snr_db_min": 18.7, "blockiness_max": 1.19},
}


@dataclass(frozen=True)
class Thresholds:
    """The three thresholds the verdict reads (the study's validated form is ``config.QualityThresholds``)."""

    laplacian_var_min: Optional[float] = None
    snr_db_min: Optional[float] = None
    blockiness_max: Optional[float] = None


#: the thresholds a restorer falls back to when the study passes none
PROJECT_THRESHOLDS = Thresholds(**QUALITY_PRESETS["project"])


def verdict(scores: pd.DataFrame, thresholds: Any) -> pd.DataFrame:
    """Add ``flag_blur``, ``flag_noise``, ``flag_jpeg``, ``flagged`` and a readable ``verdict`` to ``scores``.

    ``thresholds`` has ``laplacian_var_min``, ``snr_db_min`` and ``blockiness_max`` (``None`` disables one).
    """
    out = scores.copy()
    t = thresholds
    out["flag_blur"] = out["laplacian_var"] < t.laplacian_var_min if t.laplacian_var_min is not None else False
    out["flag_noise"] = out["snr_db"] < t.snr_db_min if t.snr_db_min is not None else False
    out["flag_jpeg"] = out["blockiness"] > t.blockiness_max if t.blockiness_max is not None else False
    flags = out[["flag_blur", "flag_noise", "flag_jpeg"]].to_numpy(dtype=bool)
    out["flagged"] = flags.any(axis=1)
    names = np.array(["blur", "noise", "jpeg"])
    out["verdict"] = ["+".join(names[f]) if f.any() else "ok" for f in flags]
    return out


def detector_table(scores: pd.DataFrame, clean_condition: str = "clean") -> pd.DataFrame:
    """The check as a detector: for each degraded condition vs the clean images (the same ids),
    the ROC AUC of each measure and of the verdict, and the verdict's hit and false-alarm rates."""
    from sklearn.metrics import roc_auc_score  # here, not at the top: measuring must not pay sklearn's import

    clean = scores[scores["condition"] == clean_condition].set_index("id")
    rows = []
    for cond, deg in scores[scores["condition"] != clean_condition].groupby("condition", sort=False):
        deg = deg.set_index("id").loc[clean.index]  # paired: same images, same order
        y = np.r_[np.zeros(len(clean)), np.ones(len(deg))]
        row: dict[str, Any] = {"condition": cond, "n_pairs": len(deg)}
        for name, (col, sign) in MEASURES.items():
            row[f"auc_{name}"] = roc_auc_score(y, sign * np.r_[clean[col], deg[col]])
        row["auc_verdict"] = roc_auc_score(y, np.r_[clean["flagged"], deg["flagged"]].astype(float))
        row["hit_rate"] = float(deg["flagged"].mean())
        row["false_alarm_rate"] = float(clean["flagged"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def roc_points(scores: pd.DataFrame, condition: str, measure_name: str, clean_condition: str = "clean") -> pd.DataFrame:
    """ROC curve points (scikit-learn) of one measure for one degraded condition against clean."""
    from sklearn.metrics import roc_curve

    col, sign = MEASURES[measure_name]
    clean = scores[scores["condition"] == clean_condition].set_index("id")
    deg = scores[scores["condition"] == condition].set_index("id").loc[clean.index]
    y = np.r_[np.zeros(len(clean)), np.ones(len(deg))]
    fpr, tpr, thr = roc_curve(y, sign * np.r_[clean[col], deg[col]])
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": sign * thr})


# ---- stage: score every clean and degraded image, evaluate the check ---------------------------


def calibrate_thresholds(clean_images: np.ndarray, false_alarm: float = 0.05) -> dict[str, float]:
    """Thresholds that flag a fraction ``false_alarm`` of ``clean_images`` per measure.

    Run on clean *training* faces, never on the evaluation split. The ``project`` preset in
    :mod:`fer_helpers.config` is this function on 400 FER2013 Training faces per class (seed 0, blank
    faces excluded) at 5%, rounded; ``scripts/calibrate_quality.py`` reproduces it.
    """
    m = measure(clean_images)
    q = 100 * false_alarm
    return {
        "laplacian_var_min": float(np.percentile(m["laplacian_var"], q)),
        "snr_db_min": float(np.percentile(m["snr_db"], q)),
        "blockiness_max": float(np.percentile(m["blockiness"], 100 - q)),
    }
