"""Notebook 06: the study's answers, computed from the files the earlier stages wrote.

Reads ``classification/<classifier>.npz`` (per-face probabilities for every condition, scoring the
classifiers first when the notebook is opened alone), ``restoration/metrics.csv``,
``degradation/presets.csv`` and the data audit's evaluation note. Writes ``statistics/``: ``headline.csv``,
``tests.csv``, ``best_restorers.csv``, ``psnr_vs_accuracy.csv``, ``psnr_accuracy_points.csv``,
``strategies.csv`` and ``strategies_tests.csv`` (when the run holds both CNNs), and ``findings.json`` (the
verdict and the finding sentences). The computations themselves are :mod:`fer_helpers.comparisons` and
:mod:`fer_helpers.strategies`; this module reads the run folder for them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .. import comparisons, strategies
from ..comparisons import answered, family_robustness, headline_summary, showcase  # noqa: F401 - notebook 06 calls them here
from ..config import StudyParams
from ..data import CLASSES  # noqa: F401 - notebook 06's ROC legends
from ..io import RunDir, read_json, write_csv, write_json
from ..scoring import Outcomes, headline
from . import classification, degradation, restoration
from . import data as data_stage
from .classification import available_classifiers, classifier_table, outcomes  # noqa: F401 - notebook 06 calls them here


def all_outcomes(run: RunDir) -> dict[str, Outcomes]:
    """Each scored classifier's per-face outcomes, in the run's classifier order."""
    return {clf: outcomes(run, clf) for clf in available_classifiers(run)}


def presets_table(run: RunDir) -> pd.DataFrame:
    return pd.read_csv(run.path("degradation", "presets.csv"))


def robustness(run: RunDir, head: pd.DataFrame) -> pd.DataFrame:
    """:func:`fer_helpers.comparisons.robustness` with the run's preset table."""
    return comparisons.robustness(presets_table(run), head)


def _cnn_pair(run: RunDir) -> tuple[Outcomes, Outcomes] | None:
    have = available_classifiers(run)
    if strategies.CLEAN_CNN not in have or strategies.ROBUST_CNN not in have:
        return None
    return outcomes(run, strategies.CLEAN_CNN), outcomes(run, strategies.ROBUST_CNN)


def strategy_comparison(run: RunDir, restorer: str = "unet_auto", n_boot: int = 1000, seed: int = 0) -> strategies.Comparison | None:
    """Restore or train robust (:func:`fer_helpers.strategies.compare`), or None when the run lacks either CNN."""
    pair = _cnn_pair(run)
    return strategies.compare(*pair, presets_table(run), restorer, n_boot, seed) if pair else None


def robust_curves(run: RunDir, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Accuracy vs severity of the clean and the robust CNN (:func:`fer_helpers.strategies.curves`); empty
    when the run lacks either CNN."""
    pair = _cnn_pair(run)
    return strategies.curves(*pair, presets_table(run), n_boot, seed) if pair else pd.DataFrame()


def flips(run: RunDir, classifier: str, condition: str, restorer: str, n: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """Faces whose prediction flipped after restoration: first wrong->right, then right->wrong.
    Rows for ``plots.face_grid``: clean, degraded, restored; labels say true class and the two predictions."""
    picks, labels = comparisons.flipped_faces(outcomes(run, classifier), condition, restorer, n)
    clean = data_stage.load_clean(run)
    rows = {"clean": clean.images[picks], condition: degradation.load_degraded(run, condition, clean.ids)[picks],
            restorer: restoration.load_restored(run, restorer, condition, clean.ids)[picks]}
    return rows, labels


def gradcam_overlay(run: RunDir, params: StudyParams, condition: str, restorer: str, n: int) -> tuple[np.ndarray, list[str]] | None:
    """Grad-CAM of the CNN (its true-class evidence) on clean / degraded / restored copies of ``n`` faces, as one
    RGB mosaic (rows: the three conditions; red: the map). None when the CNN is not available."""
    from .. import classify, cnn

    try:
        clf = classify.create("cnn", classification.context_for(params, run))
    except classify.ClassifierUnavailable:
        return None
    clean = data_stage.load_clean(run)
    idx = np.random.default_rng(params.seed).choice(len(clean), size=min(n, len(clean)), replace=False)
    rows = [clean.images[idx], degradation.load_degraded(run, condition, clean.ids)[idx],
            restoration.load_restored(run, restorer, condition, clean.ids)[idx]]
    mosaic = []
    for faces in rows:
        cam = cnn.gradcam(clf.model, faces, target=clean.labels[idx])
        g = faces.astype(np.float32) * 0.6
        rgb = np.stack([g + 102 * cam, g, g], axis=-1).clip(0, 255).astype(np.uint8)
        mosaic.append(np.concatenate(list(rgb), axis=1))
    return np.concatenate(mosaic, axis=0), ["clean", condition, restorer]


def unavailable(run: RunDir) -> pd.DataFrame:
    """Restorers and classifiers that could not run here, with the reason and the fix (they are absent, not gaps)."""
    r = pd.read_csv(run.path("restoration", "restorers.csv"))
    c = classifier_table(run)
    rows = [{"kind": "restorer", "name": x["restorer"], "reason": x["reason"], "fix": x["fix"]} for _, x in r[~r["available"].astype(bool)].iterrows()]
    rows += [{"kind": "classifier", "name": x["classifier"], "reason": x["reason"], "fix": x["fix"]} for _, x in c[~c["available"].astype(bool)].iterrows()]
    return pd.DataFrame(rows, columns=["kind", "name", "reason", "fix"])


def build(params: StudyParams, run: RunDir) -> dict[str, Any]:
    """Compute notebook 06's tables and findings and write them to ``statistics/`` (CSV, and findings.json)."""
    S = params.statistics
    for classifiers, stage in ((params.classification.vit, "vit"), (params.classification.baselines, "baselines")):
        classification.build(params, run, classifiers, stage=stage, progress=params.show_progress)  # upstream, when run alone
    scored = all_outcomes(run)
    head = comparisons.headline_table(scored, n_boot=S.n_boot, seed=params.seed)
    tests = comparisons.paired_tests(scored, n_boot=S.n_boot, seed=params.seed)
    best = comparisons.best_restorers(tests) if len(tests) else pd.DataFrame()
    corr, points = (comparisons.psnr_vs_accuracy(pd.read_csv(run.path("restoration", "metrics.csv")), tests) if len(tests)
                    else (pd.DataFrame(), pd.DataFrame()))
    lines = (comparisons.sentences(tests, best, corr) if len(tests)
             else ["No classifier could be scored in this run (see 'Not in this run')."])
    out = run.path("statistics")
    for name, df in {"headline": head, "tests": tests, "best_restorers": best, "psnr_vs_accuracy": corr, "psnr_accuracy_points": points}.items():
        write_csv(out / f"{name}.csv", df)
    comparison = strategy_comparison(run, S.comparison_restorer, S.n_boot, params.seed)
    if comparison is not None:
        write_csv(out / "strategies.csv", comparison.accuracy)
        write_csv(out / "strategies_tests.csv", comparison.tests)
    presets = presets_table(run)
    answer = comparisons.verdict(tests, dict(zip(presets["preset"], presets["family"])), data_stage.read_evaluation(run))
    if comparison is not None:
        answer += " " + strategies.sentence(comparison)
    # the restorer whose work the galleries and Grad-CAM show: the largest mean best-per-preset gain
    shown = comparisons.best_overall(best)
    write_json(out / "findings.json", {"verdict": answer, "findings": lines, "best_overall": shown, "n_boot": S.n_boot,
                                       "seed": params.seed})
    return {"head": head, "tests": tests, "best": best, "corr": corr, "points": points, "lines": lines, "verdict": answer,
            "strategies": comparison, "best_overall": shown}


def readme_section(run: RunDir) -> str:
    """Markdown for the README's "What the study found": the run's verdict and, per classifier, clean, degraded
    and restored accuracy (from the run's files; regenerated by ``scripts/readme_findings.py``)."""
    answer = read_json(run.path("statistics", "findings.json"))["verdict"]
    head = headline(classification.read_metrics(run), data_stage.load_clean(run).labels)
    pct = lambda v: "" if pd.isna(v) else f"{v:.1%}"  # noqa: E731
    lines = [answer, "",
             "| classifier | clean | degraded (mean, all presets) | best restorer | degraded, restored presets | restored | note |",
             "|---|---|---|---|---|---|---|"]
    for _, h in head.iterrows():
        lines.append(f"| {h['classifier']} | {pct(h['clean accuracy'])} | {pct(h['degraded accuracy (mean over presets)'])} | "
                     f"{h['best restorer on average'] or 'none run'} ({h['restored presets']} presets) | "
                     f"{pct(h['degraded accuracy on those presets'])} | {pct(h['restored accuracy on those presets'])} | {h.get('note', '')} |")
    versions = read_json(run.path("versions.json")) if run.path("versions.json").is_file() else {}
    lines += ["", f"Generated from the run folder `{run.root.name}` (git {versions.get('git_commit', 'unknown')}) by "
              "`scripts/readme_findings.py`; accuracies are scikit-learn's on the same faces in every column."]
    return "\n".join(lines)
