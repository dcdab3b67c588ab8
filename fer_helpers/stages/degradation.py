"""Notebook 01, second half: every degradation preset applied to the same clean faces.

Reads ``data/clean.npz`` (building the data stage first). Writes ``degraded/<preset>.npz`` (the faces in the
clean set's order), ``degradation/metrics.csv`` (PSNR and SSIM per face and preset) and ``degradation/presets.csv``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .. import data
from ..config import StudyParams
from ..degrade import Preset, degrade_all, pair_metrics, preset_table
from ..images import stable_hash
from ..io import RunDir, check_archive, load_images, read_if_computed_for, save_images, stage_key, write_csv
from . import data as data_stage

STAGE = "degradation"


def build(params: StudyParams, run: RunDir, progress: bool = True) -> "pd.DataFrame":
    """Write ``degraded/<preset>.npz`` for every preset of the run and ``degradation/metrics.csv``.

    Needs the run's clean set (made by :func:`fer_helpers.data_stage.prepare` if missing). Presets whose
    file exists for the same parameters are not recomputed.
    """
    data_stage.prepare(params, run, progress)
    digest = stage_key(params, "degradation", upstream=[run.stage_digest(data_stage.STAGE)])
    cached = run.cached(STAGE, digest, lambda: _read_outputs(run))
    if cached is not None:
        return cached
    clean = data_stage.load_clean(run)
    presets = params.degradation.resolved_presets()
    frames = []
    for p in tqdm(presets, desc="presets", disable=not progress):
        f = run.degraded_file(p.name)
        z = read_if_computed_for(f, digest)
        deg = z["images"] if z is not None else None
        if deg is None:
            deg = degrade_all(clean.images, clean.ids, p, params.seed, params.degradation.batch_size, progress)
            save_images(f, clean.ids, deg, params_digest=np.array(digest))
        psnr, ssim = pair_metrics(clean.images, deg)
        frames.append(pd.DataFrame({"id": clean.ids, "label": clean.labels, "preset": p.name, "family": p.family,
                                    "severity": p.severity, "psnr": psnr, "ssim": ssim}))
    metrics = pd.concat(frames, ignore_index=True)
    write_csv(run.path("degradation", "metrics.csv"), metrics)
    write_csv(run.path("degradation", "presets.csv"), preset_table(presets))
    run.mark_stage(STAGE, digest, presets=[p.name for p in presets])
    return metrics


def _read_outputs(run) -> "pd.DataFrame":
    """The degradation stage's cached outputs, every preset's archive checked (raises if one is damaged)."""
    for name in pd.read_csv(run.path("degradation", "presets.csv"))["preset"]:
        check_archive(run.degraded_file(name))
    return pd.read_csv(run.path("degradation", "metrics.csv"))


def load_degraded(run, preset: str, ids: np.ndarray | None = None) -> np.ndarray:
    """One preset's degraded images, checked to be paired with ``ids`` (the clean set's order)."""
    z = load_images(run.degraded_file(preset))
    if ids is not None and not np.array_equal(z["ids"], ids):
        raise ValueError(f"{run.degraded_file(preset)} is not paired with the clean set: rerun notebook 01 (fer-study run --force)")
    return z["images"]


def gallery(run, presets: Sequence[Preset], n: int, seed: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """``n`` clean faces (a seeded draw, one per class in turn) and their degraded versions, for :func:`plots.face_grid`."""
    clean = data_stage.load_clean(run)
    rng = np.random.default_rng(np.random.SeedSequence([seed, stable_hash("gallery")]))
    order = rng.permutation(len(clean))
    by_class = [order[clean.labels[order] == c] for c in range(len(data.CLASSES))]
    picks: list[int] = []
    while len(picks) < min(n, len(clean)):
        for idx in by_class:
            taken = [i for i in idx if i not in picks]
            if taken and len(picks) < n:
                picks.append(int(taken[0]))
    picks = sorted(picks, key=lambda i: clean.labels[i])
    rows = {"clean": clean.images[picks]}
    for p in presets:
        rows[p.name] = load_degraded(run, p.name, clean.ids)[picks]
    return rows, [data.CLASSES[clean.labels[i]] for i in picks]
