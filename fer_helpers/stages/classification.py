"""Notebooks 04 and 05: classifiers scored on every (restorer, condition) pair the run holds.

Reads the clean, degraded and restored faces (building the restoration stage first) and the weights under
``models/`` and ``classification.weights``. Writes ``classification/<classifier>.npz`` (per-face
probabilities, conditions x faces x 7), ``classification/<stage>_metrics.csv``, ``<stage>_classifiers.csv``
and ``confusion.json``; :func:`summarise` adds the notebook's headline table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .. import classify
from ..config import StudyParams
from ..data import CLASSES
from ..degrade import expand_preset_names
from ..headlines import write_headline
from ..io import RunDir, atomic_path, check_archive, read_json, stage_key, weights_files, write_csv, write_json
from ..paths import MODELS_DIR, SHARED_DIR, resolve_path
from ..registry import doc_line
from .. import plots
from ..scoring import KEY_SEP, METRIC_COLUMNS, Outcomes, by_condition, headline, metrics_for, per_class, per_class_conditions, showcase_keys, shown, weak_classifiers
from . import data as data_stage
from . import restoration
from .restoration import CLEAN


def condition_keys(run, restorers: Sequence[str] | None = None, presets: Sequence[str] | None = None,
                   restored_presets: Sequence[str] | None = None) -> list[str]:
    """The (restorer, condition) pairs notebook 03 produced, as keys. ``restorers`` and ``presets`` narrow the
    list, ``restored_presets`` (default: ``presets``) narrows the restored ones further; the clean faces are
    always kept, and every kept preset is scored unrestored."""
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


def model_inputs(params: StudyParams) -> list[Path]:
    """The model files this stage reads: the shipped classifiers, the weights the parameters name and the
    landmarker (:func:`landmarker_path`: fetched first where it can be)."""
    return ([MODELS_DIR / d for d in ("cnn", "vit_fer2013", "landmarks", "transfer")]
            + weights_files(params.classification.weights) + [landmarker_path(params)])


def build(params: StudyParams, run: RunDir, classifiers: Sequence[str], stage: str, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score ``classifiers`` on every condition of the run; returns (metrics, classifier table)."""
    restoration.build(params, run, progress)
    digest = stage_key(params, "classification", upstream=[run.stage_digest(restoration.STAGE)], inputs=model_inputs(params))
    cached = run.cached(stage, digest, lambda: _read_outputs(run, stage, classifiers))
    if cached is not None:
        return cached
    clean = data_stage.load_clean(run)
    c = params.classification
    keys = condition_keys(run, c.restorers, c.presets, c.restored_presets)
    metrics, table = score(run, clean, keys, lambda r, c: restoration.load_restored(run, r, c, clean.ids), classifiers,
                           context_for(params, run), stage, progress)
    run.mark_stage(stage, digest)
    return metrics, table


def score(run, clean, keys: Sequence[str], load, classifiers: Sequence[str], ctx, stage: str,
          progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score ``classifiers`` on the faces ``load(restorer, condition)`` gives for each key; write the run's files."""
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
    first_seen: dict[bytes, tuple[int, int]] = {}  # a face's pixels -> (condition, face) where it was first scored
    for k, key in enumerate(tqdm(keys, desc="conditions", disable=not progress or not models)):
        images = load(*key.split(KEY_SEP))
        new, copies = _unseen_faces(images, k, first_seen)
        for name, clf in models.items():
            if len(new):
                proba[name][k, new] = clf.predict_proba(images[new])
            if len(copies):  # pixels scored before (a gate's untouched faces, a restorer's no-op): the same answer
                proba[name][k, copies[:, 0]] = proba[name][copies[:, 1], copies[:, 2]]
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


def _unseen_faces(images: np.ndarray, k: int, first_seen: dict[bytes, tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Split condition ``k``'s faces into those whose pixels no earlier face had (indices, to score) and copies
    (rows ``(face, earlier condition, earlier face)``); records the new ones in ``first_seen``. Classifiers are
    deterministic per face, so a copy's probabilities are the earlier face's."""
    import hashlib

    new, copies = [], []
    for i, face in enumerate(np.ascontiguousarray(images)):
        digest = hashlib.sha1(face.tobytes()).digest()
        if digest in first_seen:
            copies.append((i, *first_seen[digest]))
        else:
            first_seen[digest] = (k, i)
            new.append(i)
    return np.array(new, dtype=np.int64), np.array(copies, dtype=np.int64).reshape(-1, 3)


def score_folder(params: StudyParams, run: RunDir, classifiers: Sequence[str], progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``fer-study score``: the clean faces of ``params``' data (any FER2013-style folder or CSV), no degradation."""
    data_stage.prepare(params, run, progress)
    clean = data_stage.load_clean(run)
    return score(run, clean, [f"none{KEY_SEP}clean"], lambda r, c: clean.images, classifiers, context_for(params, run), "score", progress)


def _read_outputs(run, stage: str, classifiers: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A scoring stage's cached tables, each available classifier's probabilities checked (raises if damaged)."""
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
    c = params.classification
    weights = {k: _path_or_hub_id(v) for k, v in c.weights.items()}
    weights["landmarker"] = str(landmarker_path(params))
    return classify.ClassifyContext(device=params.device(), batch_size=c.batch_size, weights=weights, tta=c.tta,
                                   precision=c.precision)


def _path_or_hub_id(value: str) -> str:
    """A file or folder (made absolute) when it exists or looks like a path; otherwise a hub id, as given."""
    p = resolve_path(value)
    return str(p) if p.exists() or value.startswith((".", "/", "~")) else value


LANDMARKER_URL = "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task"
#: the same 478 landmarks, built from the mediapipe wheel's model files (../shared/models/README.md)
SHARED_LANDMARKER = SHARED_DIR / "models" / "face_landmarker.task"


def landmarker_path(params) -> Path:
    """``classification.landmarker`` if set; else the cached official file, downloaded once (fails fast offline);
    else the equivalent bundle in ``../shared/models/`` beside the checkout, where there is one (offline machines)."""
    import urllib.request

    if params.classification.landmarker:
        return resolve_path(params.classification.landmarker)
    path = Path.home() / ".cache" / "fer-study" / "face_landmarker.task"
    if not path.is_file() and params.restoration.allow_download:
        try:
            with urllib.request.urlopen(LANDMARKER_URL, timeout=5) as r, atomic_path(path) as tmp:
                tmp.write_bytes(r.read())
        except OSError:
            pass  # offline: the bundle below, or the landmark classifiers report the missing file with the fix
    if not path.is_file() and SHARED_LANDMARKER.is_file():
        return SHARED_LANDMARKER
    return path


def summarise(run, metrics: pd.DataFrame, key: str, what: str, order: int) -> tuple[set[str], pd.DataFrame]:
    """Notebooks 04 and 05's headline: the classifiers near chance (marked next to every figure) and the table,
    recorded for the index."""
    labels = data_stage.load_clean(run).labels
    weak = weak_classifiers(metrics, labels) if len(metrics) else set()
    head = headline(metrics, labels) if len(metrics) else pd.DataFrame()
    write_headline(run, key, f"Classification ({what}): clean vs degraded vs restored", head, order=order,
                   note="Accuracy, macro-F1 and Cohen's kappa from scikit-learn on the run's faces; faces without an answer count as wrong.")
    return weak, head


def confusions(run, classifier: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Row-normalised confusion matrices of one classifier for some condition keys ("restorer|condition")."""
    conf = read_json(run.path("classification", "confusion.json"))
    out = {}
    for k in keys:
        c = np.array(conf[f"{classifier}{KEY_SEP}{k}"], dtype=float)
        out[k] = c / np.maximum(c.sum(axis=1, keepdims=True), 1)
    return out


def outcomes(run, classifier: str) -> Outcomes:
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


def figures(run: RunDir, metrics: pd.DataFrame, head: pd.DataFrame, weak: set[str], showcase_preset: str) -> list:
    """Notebooks 04 and 05's figures, in order: per classifier, accuracy and macro-F1 for every (restorer,
    condition); the confusion matrices of the showcase conditions; per-class accuracy unrestored. A weak
    classifier (near chance) is marked in every title."""
    out = []
    for clf in metrics["classifier"].unique():
        out.append(plots.table_heatmap(by_condition(metrics, clf), title=f"{shown(clf, weak)}: accuracy", fmt=".2f", zmin=0, zmax=1))
        out.append(plots.table_heatmap(by_condition(metrics, clf, "macro_f1"), title=f"{shown(clf, weak)}: macro-F1", fmt=".2f", zmin=0, zmax=1))
    for clf in head["classifier"] if len(head) else []:
        keys = showcase_keys(metrics, clf, showcase_preset)
        out.append(plots.confusion_grid(confusions(run, clf, keys), CLASSES, title=shown(clf, weak)))
    table = per_class(metrics, per_class_conditions(metrics, showcase_preset))
    for clf, m in table.groupby("classifier"):
        out.append(plots.bar(m, x="class", y="accuracy", color="condition",
                             title=f"{shown(clf, weak)}: per-class accuracy, unrestored").update_layout(barmode="group"))
    return out
