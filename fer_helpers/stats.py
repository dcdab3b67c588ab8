"""Statistics for the study's answer (notebook 06): paired tests on the same faces, bootstrap intervals,
calibration, and findings sentences generated from the numbers.

Library functions are used wherever a library has them: McNemar (statsmodels), Holm's correction
(statsmodels), Wilcoxon and the paired t-test (SciPy), correlations (SciPy), ROC AUC and calibration
curves (scikit-learn). The bootstrap resamples faces with a seeded generator and applies the same
scikit-learn metric to each resample.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .data import CLASSES


def bootstrap_ci(y_true: np.ndarray, y_pred: np.ndarray, metric: Callable[[np.ndarray, np.ndarray], float],
                 n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(estimate, low, high): the metric and its percentile bootstrap interval, resampling faces (seeded)."""
    rng = np.random.default_rng(seed)
    n = len(y_true)
    est = float(metric(y_true, y_pred))
    if n == 0:
        return est, np.nan, np.nan
    idx = rng.integers(0, n, size=(n_boot, n))
    boots = np.array([metric(y_true[i], y_pred[i]) for i in idx])
    a = (1 - level) / 2
    return est, float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))


def bootstrap_accuracy_f1(y_true: np.ndarray, y_pred: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                          n_classes: int = len(CLASSES)) -> dict[str, float]:
    """Percentile bootstrap intervals of accuracy and macro-F1 in one vectorised pass (faces resampled, seeded).

    The estimates are scikit-learn's; each resample's accuracy and macro-F1 come from its confusion counts
    (the same definitions as ``accuracy_score`` and ``f1_score(average="macro", labels=range(7),
    zero_division=0)``, checked against them in the tests). A prediction of -1 (no answer) is wrong.
    """
    from sklearn.metrics import accuracy_score, f1_score

    y, p = np.asarray(y_true), np.asarray(y_pred)
    n = len(y)
    out = {"accuracy": accuracy_score(y, p), "macro_f1": f1_score(y, p, labels=range(n_classes), average="macro", zero_division=0)}
    if n == 0:
        return out | {"accuracy_lo": np.nan, "accuracy_hi": np.nan, "macro_f1_lo": np.nan, "macro_f1_hi": np.nan}
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    yb, pb = y[idx], p[idx]
    acc = (yb == pb).mean(axis=1)
    tp = np.stack([((yb == k) & (pb == k)).sum(1) for k in range(n_classes)], 1)
    support = np.stack([(yb == k).sum(1) for k in range(n_classes)], 1)
    predicted = np.stack([(pb == k).sum(1) for k in range(n_classes)], 1)
    denom = support + predicted
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0).mean(axis=1)
    a = (1 - level) / 2
    return out | {"accuracy_lo": float(np.quantile(acc, a)), "accuracy_hi": float(np.quantile(acc, 1 - a)),
                  "macro_f1_lo": float(np.quantile(f1, a)), "macro_f1_hi": float(np.quantile(f1, 1 - a)),
                  "_replicates": (acc, f1)}


def mcnemar_test(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """McNemar's test on paired right/wrong outcomes of the same faces (exact binomial when discordant pairs < 25)."""
    from statsmodels.stats.contingency_tables import mcnemar

    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    table = np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]])
    discordant = table[0, 1] + table[1, 0]
    res = mcnemar(table, exact=discordant < 25, correction=True)
    return {"only_a_right": int(table[0, 1]), "only_b_right": int(table[1, 0]), "statistic": float(res.statistic),
            "p": float(res.pvalue) if discordant else 1.0}


def paired_difference_ci(correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int = 1000, seed: int = 0,
                         level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of accuracy(a) - accuracy(b) on the same faces (faces resampled, seeded).

    Each face contributes +1 (only a right), -1 (only b right) or 0, so resampling n faces is drawing the
    three counts from a multinomial: the same distribution as resampling indices, at no cost per face.
    """
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    n = len(a)
    if n == 0:
        return np.nan, np.nan
    share = np.array([np.sum(a & ~b), np.sum(~a & b), 0]) / n
    share[2] = 1.0 - share[0] - share[1]
    counts = np.random.default_rng(seed).multinomial(n, share, size=n_boot)
    diffs = (counts[:, 0] - counts[:, 1]) / n
    q = (1 - level) / 2
    return float(np.quantile(diffs, q)), float(np.quantile(diffs, 1 - q))


def holm(pvalues: Sequence[float], alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down correction (statsmodels): (reject, adjusted p)."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=float)
    if len(p) == 0:
        return np.zeros(0, bool), np.zeros(0)
    reject, adj, _, _ = multipletests(p, alpha=alpha, method="holm")
    return reject, adj


def paired_over_runs(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Wilcoxon signed-rank and paired t-test (SciPy) over matched runs (seeds or folds) of two conditions."""
    from scipy.stats import ttest_rel, wilcoxon

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2:
        return {"runs": len(a), "wilcoxon_p": np.nan, "ttest_p": np.nan}
    w = wilcoxon(a, b, zero_method="zsplit") if np.any(a != b) else None
    return {"runs": len(a), "wilcoxon_p": float(w.pvalue) if w is not None else 1.0, "ttest_p": float(ttest_rel(a, b).pvalue)}


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> float:
    """ECE of the top-class confidence: sum over equal-width bins of |accuracy - confidence| x bin share."""
    conf = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y_true
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for k in range(n_bins):
        m = bins == k
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def reliability(y_true: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Reliability diagram points of the top-class confidence (scikit-learn's calibration_curve)."""
    from sklearn.calibration import calibration_curve

    correct = (proba.argmax(axis=1) == y_true).astype(int)
    frac, mean_conf = calibration_curve(correct, proba.max(axis=1), n_bins=n_bins, strategy="uniform")
    return pd.DataFrame({"confidence": mean_conf, "accuracy": frac})


def ovr_auc(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """One-vs-rest ROC AUC per class and macro (scikit-learn); classes absent from ``y_true`` are NaN."""
    from sklearn.metrics import roc_auc_score

    out = {}
    for k, c in enumerate(CLASSES):
        pos = y_true == k
        out[c] = float(roc_auc_score(pos, proba[:, k])) if 0 < pos.sum() < len(pos) else np.nan
    vals = [v for v in out.values() if not np.isnan(v)]
    out["macro"] = float(np.mean(vals)) if vals else np.nan
    return out


def correlation(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Pearson and Spearman correlation (SciPy) with their p-values."""
    from scipy.stats import pearsonr, spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:  # too few points, or a constant: undefined
        return {"n": int(ok.sum()), "pearson_r": np.nan, "pearson_p": np.nan, "spearman_rho": np.nan, "spearman_p": np.nan}
    pr, sr = pearsonr(x[ok], y[ok]), spearmanr(x[ok], y[ok])
    return {"n": int(ok.sum()), "pearson_r": float(pr.statistic), "pearson_p": float(pr.pvalue),
            "spearman_rho": float(sr.statistic), "spearman_p": float(sr.pvalue)}


def format_p(p: float) -> str:
    if np.isnan(p):
        return "p n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
