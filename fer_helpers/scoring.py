"""Classification metrics and the tables built from them (notebooks 04, 05 and 06), on arrays and data frames.

Metrics come from scikit-learn; a face a classifier could not answer (a landmark model with no landmarks,
prediction -1) counts as wrong in every metric and is reported in ``no_answer``. Condition keys are
``"<restorer>|<condition>"``. The scoring itself, and the files it writes into the run folder, is
:mod:`fer_helpers.stages.classification`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .data import CLASSES

METRIC_COLUMNS = ["classifier", "family", "restorer", "condition", "faces", "accuracy", "macro_precision", "macro_recall",
                  "macro_f1", "kappa", "no_answer"] + [f"acc_{c}" for c in CLASSES]
KEY_SEP = "|"  # condition keys are "<restorer>|<condition>", e.g. "none|jpeg_20", "unet|seed003_high", "none|clean"


def metrics_for(y_true: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1, Cohen's kappa, per-class accuracy (recall) and the confusion matrix."""
    from sklearn.metrics import (
        accuracy_score,
        cohen_kappa_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    labels = list(range(len(CLASSES)))
    p, r, f, _ = precision_recall_fscore_support(y_true, pred, labels=labels, average="macro", zero_division=0)
    per_class = precision_recall_fscore_support(y_true, pred, labels=labels, average=None, zero_division=0)[1]
    out = {"faces": len(y_true), "accuracy": accuracy_score(y_true, pred), "macro_precision": p, "macro_recall": r, "macro_f1": f,
           "kappa": cohen_kappa_score(y_true, pred), "no_answer": int((pred < 0).sum())}
    out.update({f"acc_{c}": v for c, v in zip(CLASSES, per_class)})
    out["confusion"] = confusion_matrix(y_true, pred, labels=labels).tolist()  # no-answer faces fall outside the matrix
    return out


def by_condition(metrics: pd.DataFrame, classifier: str, value: str = "accuracy") -> pd.DataFrame:
    """condition x restorer table of one metric for one classifier (``none`` = unrestored)."""
    m = metrics[metrics["classifier"] == classifier]
    t = m.pivot(index="condition", columns="restorer", values=value)
    order = ["clean"] + [c for c in m["condition"].unique() if c != "clean"]
    cols = ["none"] + [r for r in m["restorer"].unique() if r != "none"]
    return t.reindex(index=order, columns=cols)


#: a classifier whose clean accuracy is less than this far above the majority-class rate is marked weak
WEAK_MARGIN = 0.10
WEAK_MARK = "weak: near chance"


def majority_rate(labels: np.ndarray) -> float:
    """The accuracy of always answering the most frequent class of these faces."""
    labels = np.asarray(labels)
    return float(np.bincount(labels, minlength=len(CLASSES)).max() / len(labels)) if len(labels) else float("nan")


def weak_classifiers(metrics: pd.DataFrame, labels: np.ndarray) -> set[str]:
    """Classifiers whose clean accuracy is within :data:`WEAK_MARGIN` of the majority-class rate of ``labels``:
    what they do under degradation or restoration says little about models people use."""
    floor = majority_rate(labels) + WEAK_MARGIN
    clean = metrics[(metrics["condition"] == "clean") & (metrics["restorer"] == "none")]
    return set(clean.loc[clean["accuracy"] < floor, "classifier"])


def shown(classifier: str, weak: set[str]) -> str:
    """The classifier's name as figures show it: with the weak mark where it applies."""
    return f"{classifier} ({WEAK_MARK})" if classifier in weak else classifier


def headline(metrics: pd.DataFrame, labels: np.ndarray | None = None) -> pd.DataFrame:
    """Per classifier: accuracy / macro-F1 / kappa on clean faces, mean accuracy over the degraded presets
    unrestored, and the restorer with the largest mean gain (the same restorer for every preset) with its
    mean accuracy and the unrestored mean over the same presets (a run may restore fewer presets than it
    scores unrestored: means over different presets would not compare).
    With the clean faces' ``labels``, also the majority-class rate and the weak mark."""
    weak = weak_classifiers(metrics, labels) if labels is not None else set()
    rows = []
    for clf, m in metrics.groupby("classifier", sort=False):
        clean = m[(m["condition"] == "clean") & (m["restorer"] == "none")].iloc[0]
        deg = m[m["condition"] != "clean"]
        unrestored = deg[deg["restorer"] == "none"].set_index("condition")["accuracy"]
        gains = {r: (g.set_index("condition")["accuracy"] - unrestored).dropna()
                 for r, g in deg[deg["restorer"] != "none"].groupby("restorer")}
        gains = {r: g for r, g in gains.items() if len(g)}
        best = max(gains, key=lambda r: gains[r].mean()) if gains else ""
        same = gains[best].index if best else []
        rows.append({
            "classifier": clf, "family": m["family"].iloc[0], "faces": int(clean["faces"]),
            "clean accuracy": clean["accuracy"], "clean macro-F1": clean["macro_f1"], "clean kappa": clean["kappa"],
            "degraded accuracy (mean over presets)": unrestored.mean() if len(unrestored) else np.nan,
            "best restorer on average": best,
            "restored presets": len(same),
            "degraded accuracy on those presets": unrestored.loc[same].mean() if best else np.nan,
            "restored accuracy on those presets": (unrestored.loc[same] + gains[best]).mean() if best else np.nan,
            "faces without an answer (clean)": int(clean["no_answer"]),
            **({"majority-class rate": majority_rate(labels), "note": WEAK_MARK if clf in weak else ""}
               if labels is not None else {}),
        })
    return pd.DataFrame(rows)


def per_class_conditions(metrics: pd.DataFrame, showcase: str) -> list[str]:
    """The conditions of the per-class figure: clean, the showcase preset and the seeds' presets the run scored."""
    wanted = ["clean", showcase, "seed000_chain", "seed003_high", "jpeg_10"]
    have = set(metrics["condition"])
    return [c for c in dict.fromkeys(wanted) if c in have]


def showcase_keys(metrics: pd.DataFrame, classifier: str, condition: str = "seed000_chain") -> list[str]:
    """Condition keys to show side by side: clean, ``condition`` unrestored, and restored by the classifier's best restorer."""
    head = headline(metrics[metrics["classifier"] == classifier])
    best = head["best restorer on average"].iloc[0] if len(head) else ""
    have = set(metrics["restorer"] + KEY_SEP + metrics["condition"])
    keys = [f"none{KEY_SEP}clean", f"none{KEY_SEP}{condition}"] + ([f"{best}{KEY_SEP}{condition}"] if best else [])
    return [k for k in keys if k in have]


def per_class(metrics: pd.DataFrame, conditions: Sequence[str], restorer: str = "none") -> pd.DataFrame:
    """Long table (classifier, condition, class, accuracy) of per-class accuracy for some conditions."""
    m = metrics[(metrics["restorer"] == restorer) & metrics["condition"].isin(conditions)]
    cols = [f"acc_{c}" for c in CLASSES]
    long = m[["classifier", "condition", *cols]].melt(id_vars=["classifier", "condition"], value_vars=cols, var_name="class", value_name="accuracy")
    long["class"] = long["class"].str.removeprefix("acc_")
    return long


# ---- per-face outcomes, for paired comparisons (notebook 06) -------------------------------------


@dataclass
class Outcomes:
    """One classifier's per-face results: labels, and for each condition key its probabilities and predictions."""

    classifier: str
    labels: np.ndarray
    proba: dict[str, np.ndarray]
    pred: dict[str, np.ndarray]

    def correct(self, key: str) -> np.ndarray:
        return self.pred[key] == self.labels


