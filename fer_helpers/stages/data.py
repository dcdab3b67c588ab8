"""Notebook 01, first half: the run's clean evaluation faces.

Reads the data folder or CSV the parameters name (``data``), audits it against the train split, drops and
subsets as asked. Writes ``data/clean.npz`` (ids, images, labels), the audit tables (``data/audit_*.csv``,
``skipped_files.csv``, ``dropped.csv``), ``data/evaluation.json`` (which faces were scored and why) and
``data/summary.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..config import StudyParams
from ..data import CLASSES, DataError, Dataset, audit, drop_flagged, load_split, no_faces_left, select_subset, subset_per_class
from ..faces import face_from_photo
from ..io import RunDir, load_images, read_json, save_images, stage_key, write_csv, write_json

STAGE = "data"


def data_inputs(params: StudyParams) -> list[Path]:
    """The data files this stage reads: the CSV, or the folders of the eval and train splits."""
    d, path = params.data, params.data_path()
    return [path] if d.source == "csv" else [path / s for s in (d.eval_split, d.train_split) if s]


def prepare(params: StudyParams, run: RunDir, progress: bool = True) -> dict:
    """Load the eval (and train, for the audit) split, audit, drop what the parameters say, subset, save.

    Writes ``data/clean.npz`` (ids, images, labels) and the audit tables into the run folder; returns a summary.
    Does nothing if the run already holds this stage's output for the same parameters.
    """
    d = params.data
    path = params.data_path()
    digest = stage_key(params, "data", data_inputs=data_inputs(params))
    summary = run.cached(STAGE, digest, lambda: (load_clean(run), read_json(run.path("data", "summary.json")))[1])
    if summary is not None:
        return summary
    read_face = None
    if d.detect_faces:  # photographs: find and align the face (the train split too, so duplicates still match)
        read_face = face_from_photo
    ev, evaluation = select_subset(load_split(d.source, path, d.eval_split, d.label_map, progress, read_face), d.eval_subset, d.source)
    tr = load_split(d.source, path, d.train_split, d.label_map, progress, read_face) if d.train_split else None
    au = audit(ev, tr, d.blank_std_max)
    kept, dropped = drop_flagged(ev, au, d.drop_test_duplicates_of_train, d.drop_blank)
    kept = subset_per_class(kept, d.per_class, params.seed)
    if len(kept) == 0:
        raise DataError(no_faces_left(len(ev), dropped, path, d.eval_split))
    out = run.path("data")
    save_images(run.clean_file, kept.ids, kept.images, labels=kept.labels)
    write_csv(out / "audit_counts.csv", au.counts.reset_index())
    write_csv(out / "audit_duplicates_within.csv", au.duplicates_within)
    write_csv(out / "audit_duplicates_across.csv", au.duplicates_across)
    write_csv(out / "audit_blank.csv", au.blank)
    write_csv(out / "skipped_files.csv", au.skipped)
    write_csv(out / "dropped.csv", dropped)
    write_json(out / "evaluation.json", evaluation | {"faces_after_audit_and_subsetting": len(kept)})
    summary = au.summary() | {
        "evaluation faces": evaluation["note"],
        "eval images dropped by the audit": len(dropped),
        "eval images in the study": len(kept),
        "study images per class": dict(zip(CLASSES, np.bincount(kept.labels, minlength=len(CLASSES)).tolist())),
    }
    write_json(out / "summary.json", summary)
    run.mark_stage(STAGE, digest)
    return summary


def read_evaluation(run) -> dict:
    """What :func:`prepare` recorded about the scored faces (subset, count, why, selected-on), ``{}`` before it ran."""
    f = run.path("data", "evaluation.json")
    return read_json(f) if f.is_file() else {}


def load_clean(run) -> Dataset:
    """The run's clean evaluation set as written by :func:`prepare`."""
    z = load_images(run.clean_file)
    return Dataset(z["ids"], z["images"], z["labels"].astype(np.int64), "eval")


def read_audit(run) -> dict[str, pd.DataFrame]:
    """The audit tables :func:`prepare` wrote, by name (counts, duplicates_within, duplicates_across, blank, skipped, dropped)."""
    d = run.path("data")
    names = {"counts": "audit_counts", "duplicates_within": "audit_duplicates_within", "duplicates_across": "audit_duplicates_across",
             "blank": "audit_blank", "skipped": "skipped_files", "dropped": "dropped"}
    out = {}
    for k, f in names.items():
        try:
            out[k] = pd.read_csv(d / f"{f}.csv")
        except pd.errors.EmptyDataError:
            out[k] = pd.DataFrame()
    out["counts"] = out["counts"].set_index("class")
    return out
