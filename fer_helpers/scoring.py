"""Scoring classifiers on clean, degraded and restored copies of the same faces (notebooks 04 and 05).

For every classifier and every (restorer, condition) the run holds, the per-face probabilities are
written to ``classification/<classifier>.npz`` (ids, true labels, the condition keys, probabilities of
shape (conditions, faces, 7) in the canonical class order), so notebook 06 can compare any two
conditions on the same faces. Metrics (scikit-learn) go to ``classification/metrics.csv`` and the
confusion matrices to ``classification/confusion.json``. A face a classifier could not answer (a
landmark model with no landmarks) counts as wrong in every metric and is reported in ``no_answer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .data import CLASSES
from .registry import doc_line

METRIC_COLUMNS = ["classifier", "family", "restorer", "condition", "faces", "accuracy", "macro_precision", "macro_recall",
                  "macro_f1", "kappa", "no_answer"] + [f"acc_{c}" for c in CLASSES]
KEY_SEP = "|"  # condition keys are "<restorer>|<condition>", e.g. "none|jpeg_20", "unet|seed003_high", "none|clean"


def metrics_for(y_true: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1, Cohen's kappa, per-class accuracy (recall) and the confusion matrix."""
    from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, precision_recall_fscore_support

    labels = list(range(len(CLASSES)))
    p, r, f, _ = precision_recall_fscore_support(y_true, pred, labels=labels, average="macro", zero_division=0)
    per_class = precision_recall_fscore_support(y_true, pred, labels=labels, average=None, zero_division=0)[1]
    out = {"faces": len(y_true), "accuracy": accuracy_score(y_true, pred), "macro_precision": p, "macro_recall": r, "macro_f1": f,
           "kappa": cohen_kappa_score(y_true, pred), "no_answer": int((pred < 0).sum())}
    out.update({f"acc_{c}": v for c, v in zip(CLASSES, per_class)})
    out["confusion"] = confusion_matrix(y_true, pred, labels=labels).tolist()  # no-answer faces fall outside the matrix
    return out


def condition_keys(run, restorers: Sequence[str] | None = None, presets: Sequence[str] | None = None,
                   restored_presets: Sequence[str] | None = None) -> list[str]:
    """The (restorer, condition) pairs notebook 03 produced, as keys. ``restorers`` and ``presets`` narrow the
    list, ``restored_presets`` (default: ``presets``) narrows the restored ones further; the clean faces are
    always kept, and every kept preset is scored unrestored."""
    from .degrade import expand_preset_names
    from .restore import CLEAN

    table = pd.read_csv(run.path("restoration", "restorers.csv"))
    metrics = pd.read_csv(run.path("restoration", "metrics.csv"), usecols=["restorer", "condition"])[["restorer", "condition"]].drop_duplicates()
    ok = set(table[table["available"]]["restorer"])
    if restorers is not None:
        ok &= set(restorers) | {"none"}
    wanted = None if presets is None else set(expand_preset_names(presets)) | {CLEAN}
    restored = wanted if restored_presets is None else set(expand_preset_names(restored_presets)) | {CLEAN}
    keep = [(r, c) for r, c in metrics.itertuples(index=False)
            if r in ok and (wanted is None or c in wanted) and (r == "none" or restored is None or c in restored)]
    return [f"{r}{KEY_SEP}{c}" for r, c in keep]


def build(params, run, classifiers: Sequence[str], stage: str, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score ``classifiers`` on every condition of the run; returns (metrics, classifier table)."""

    from . import data, restore
    from .io import stage_key, weights_files
    from .paths import MODELS_DIR

    restore.build(params, run, progress)
    digest = stage_key(params, "classification", upstream=[run.stage_digest(restore.STAGE)],
                       inputs=[MODELS_DIR / d for d in ("cnn", "vit_fer2013", "landmarks", "transfer")]
                       + weights_files(params.classification.weights) + [landmarker_path(params)])
    cached = run.cached(stage, digest, lambda: _read_outputs(run, stage, classifiers))
    if cached is not None:
        return cached
    clean = data.load_clean(run)
    c = params.classification
    keys = condition_keys(run, c.restorers, c.presets, c.restored_presets)
    metrics, table = score(run, clean, keys, lambda r, c: restore.load_restored(run, r, c, clean.ids), classifiers,
                           context_for(params, run), stage, progress)
    run.mark_stage(stage, digest)
    return metrics, table


def score(run, clean, keys: Sequence[str], load, classifiers: Sequence[str], ctx, stage: str,
          progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score ``classifiers`` on the faces ``load(restorer, condition)`` gives for each key; write the run's files."""
    from tqdm.auto import tqdm

    from . import classify
    from .io import atomic_path, read_json, write_csv, write_json

    out_dir = run.path("classification")
    confusion_path = out_dir / "confusion.json"
    confusion = read_json(confusion_path) if confusion_path.exists() else {}
    table, rows, models = [], [], {}
    for name in classifiers:
        try:
            models[name] = classify.create(name, ctx)
            table.append({"classifier": name, "available": True, "family": models[name].family, "reason": "", "fix": "",
                          "description": doc_line(type(models[name]))})
        except classify.ClassifierUnavailable as e:
            table.append({"classifier": name, "available": False, "family": "", "reason": e.reason, "fix": e.fix, "description": ""})
    # condition-major: each condition's faces are read once and every classifier scores them in turn
    proba = {name: np.empty((len(keys), len(clean), len(CLASSES)), np.float32) for name in models}
    for k, key in enumerate(tqdm(keys, desc="conditions", disable=not progress or not models)):
        images = load(*key.split(KEY_SEP))
        for name, clf in models.items():
            proba[name][k] = clf.predict_proba(images)
    for name, clf in models.items():
        with atomic_path(out_dir / f"{name}.npz") as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, ids=clean.ids, labels=clean.labels, keys=np.array(keys), proba=proba[name])
        for k, key in enumerate(keys):
            m = metrics_for(clean.labels, classify.predictions(proba[name][k]))
            confusion[f"{name}{KEY_SEP}{key}"] = m.pop("confusion")
            r, cond = key.split(KEY_SEP)
            rows.append({"classifier": name, "family": clf.family, "restorer": r, "condition": cond, **m})
    metrics = pd.DataFrame(rows) if rows else pd.DataFrame(columns=METRIC_COLUMNS)
    table = pd.DataFrame(table)
    write_csv(out_dir / f"{stage}_metrics.csv", metrics)
    write_csv(out_dir / f"{stage}_classifiers.csv", table)
    write_json(confusion_path, confusion)
    return metrics, table


def score_folder(params, run, classifiers: Sequence[str], progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``fer-study score``: the clean faces of ``params``' data (any FER2013-style folder or CSV), no degradation."""
    from . import data

    data.prepare(params, run, progress)
    clean = data.load_clean(run)
    return score(run, clean, [f"none{KEY_SEP}clean"], lambda r, c: clean.images, classifiers, context_for(params, run), "score", progress)


def _read_outputs(run, stage: str, classifiers: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A scoring stage's cached tables, each available classifier's probabilities checked (raises if damaged)."""
    from .io import check_archive

    table = pd.read_csv(run.path("classification", f"{stage}_classifiers.csv"))
    for clf in table[table["available"].astype(bool)]["classifier"]:
        check_archive(run.path("classification", f"{clf}.npz"))
    return read_metrics(run, classifiers), table


def read_metrics(run, classifiers: Sequence[str] | None = None) -> pd.DataFrame:
    """All classification metrics the run wrote (both notebooks), optionally for some classifiers."""
    files = sorted(run.path("classification").glob("*_metrics.csv"))
    m = pd.concat([pd.read_csv(f) for f in files] or [pd.DataFrame(columns=METRIC_COLUMNS)], ignore_index=True)
    return m[m["classifier"].isin(classifiers)] if classifiers is not None and len(m) else m


def load_probabilities(run, classifier: str) -> dict[str, np.ndarray]:
    """``ids``, ``labels``, ``keys`` and ``proba`` (conditions x faces x 7) that :func:`build` wrote for one classifier."""

    path = run.path("classification", f"{classifier}.npz")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run notebook 04/05 for {classifier} first")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def context_for(params, run=None):
    from . import classify

    c = params.classification
    weights = {k: _path_or_hub_id(v) for k, v in c.weights.items()}
    weights["landmarker"] = str(landmarker_path(params))
    return classify.ClassifyContext(device=params.device(), batch_size=c.batch_size, weights=weights, tta=c.tta)


def _path_or_hub_id(value: str) -> str:
    """A file or folder (made absolute) when it exists or looks like a path; otherwise a hub id, as given."""
    from .paths import resolve_path

    p = resolve_path(value)
    return str(p) if p.exists() or value.startswith((".", "/", "~")) else value


LANDMARKER_URL = "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task"


def landmarker_path(params) -> Path:
    """``classification.landmarker`` if set; else the cached official file, downloaded once (fails fast offline)."""
    import urllib.request

    from .io import atomic_path
    from .paths import resolve_path

    if params.classification.landmarker:
        return resolve_path(params.classification.landmarker)
    path = Path.home() / ".cache" / "fer-study" / "face_landmarker.task"
    if not path.is_file() and params.restoration.allow_download:
        try:
            with urllib.request.urlopen(LANDMARKER_URL, timeout=5) as r, atomic_path(path) as tmp:
                tmp.write_bytes(r.read())
        except OSError:
            pass  # the landmark classifiers then report the missing file, with the fix
    return path


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


def summarise(run, metrics: pd.DataFrame, key: str, what: str, order: int) -> tuple[set[str], pd.DataFrame]:
    """Notebooks 04 and 05's headline: the classifiers near chance (marked next to every figure) and the table,
    recorded for the index."""
    from . import data
    from .report import write_headline

    labels = data.load_clean(run).labels
    weak = weak_classifiers(metrics, labels) if len(metrics) else set()
    head = headline(metrics, labels) if len(metrics) else pd.DataFrame()
    write_headline(run, key, f"Classification ({what}): clean vs degraded vs restored", head, order=order,
                   note="Accuracy, macro-F1 and Cohen's kappa from scikit-learn on the run's faces; faces without an answer count as wrong.")
    return weak, head


def per_class_conditions(metrics: pd.DataFrame, showcase: str) -> list[str]:
    """The conditions of the per-class figure: clean, the showcase preset and the seeds' presets the run scored."""
    wanted = ["clean", showcase, "seed000_chain", "seed003_high", "jpeg_10"]
    have = set(metrics["condition"])
    return [c for c in dict.fromkeys(wanted) if c in have]


def confusions(run, classifier: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Row-normalised confusion matrices of one classifier for some condition keys ("restorer|condition")."""
    from .io import read_json

    conf = read_json(run.path("classification", "confusion.json"))
    out = {}
    for k in keys:
        c = np.array(conf[f"{classifier}{KEY_SEP}{k}"], dtype=float)
        out[k] = c / np.maximum(c.sum(axis=1, keepdims=True), 1)
    return out


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


def outcomes(run, classifier: str) -> Outcomes:
    from . import classify

    z = load_probabilities(run, classifier)
    proba = {str(k): z["proba"][i] for i, k in enumerate(z["keys"])}
    return Outcomes(classifier, z["labels"], proba, {k: classify.predictions(p) for k, p in proba.items()})


def classifier_table(run) -> pd.DataFrame:
    """Every classifier notebooks 04/05 tried, with availability, family and the reason when unavailable."""
    files = sorted(run.path("classification").glob("*_classifiers.csv"))
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True) if files else pd.DataFrame(
        columns=["classifier", "available", "family", "reason", "fix", "description"])


def available_classifiers(run) -> list[str]:
    t = classifier_table(run)
    return [c for c in t[t["available"].astype(bool)]["classifier"] if run.path("classification", f"{c}.npz").is_file()]
