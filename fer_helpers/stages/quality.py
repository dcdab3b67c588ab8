"""Notebook 02: the quality check on the clean faces and every degraded copy.

Reads ``data/clean.npz`` and ``degraded/*.npz`` (building them first). Writes ``quality/scores.csv``
(measures, flags and verdict per face and condition) and ``quality/detector.csv`` (the check's AUC per preset).
"""

from __future__ import annotations

import pandas as pd
from tqdm.auto import tqdm

from ..config import StudyParams
from ..io import RunDir, stage_key, write_csv
from ..quality import detector_table, measure, verdict
from . import data as data_stage
from . import degradation

STAGE = "quality"


def build(params: StudyParams, run: RunDir, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write ``quality/scores.csv`` (measures, flags, verdict per image and condition) and
    ``quality/detector.csv`` (the check's AUCs per preset). Builds the degraded images first if missing."""
    degradation.build(params, run, progress)
    digest = stage_key(params, "quality", upstream=[run.stage_digest(degradation.STAGE)])
    cached = run.cached(STAGE, digest, lambda: (pd.read_csv(run.path("quality", "scores.csv")), pd.read_csv(run.path("quality", "detector.csv"))))
    if cached is not None:
        return cached
    clean = data_stage.load_clean(run)
    conditions = {"clean": clean.images}
    for p in params.degradation.resolved_presets():
        conditions[p.name] = degradation.load_degraded(run, p.name, clean.ids)
    frames = []
    for cond, imgs in tqdm(conditions.items(), desc="quality check", disable=not progress):
        m = measure(imgs)
        m.insert(0, "condition", cond)
        m.insert(0, "id", clean.ids)
        frames.append(m)
    scores = verdict(pd.concat(frames, ignore_index=True), params.quality_thresholds())
    det = detector_table(scores)
    write_csv(run.path("quality", "scores.csv"), scores)
    write_csv(run.path("quality", "detector.csv"), det)
    run.mark_stage(STAGE, digest)
    return scores, det


def load_verdicts(run, condition: str) -> pd.DataFrame:
    """The quality check's per-image verdicts for one condition (for the "restore only what is flagged" gate)."""
    scores = pd.read_csv(run.path("quality", "scores.csv"))
    out = scores[scores["condition"] == condition]
    if out.empty:
        raise KeyError(f"no quality verdicts for condition {condition!r} in {run.path('quality', 'scores.csv')}")
    return out.set_index("id")
