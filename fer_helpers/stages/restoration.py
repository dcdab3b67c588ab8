"""Notebook 03: every restorer on the clean faces and every degraded copy, scored against the clean faces.

Reads ``data/clean.npz``, ``degraded/*.npz`` and the quality verdicts (building them first), and the weights
under ``models/unet_denoiser`` and ``restoration.weights``. Writes ``restored/<restorer>/<condition>.npz``,
``restoration/metrics.csv`` (PSNR/SSIM per face, restorer and condition), ``restoration/restorers.csv``
(availability, reason and fix, seconds per face) and, with ``restoration.train_unet``, ``models/unet.safetensors``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .. import data, degrade
from ..config import StudyParams
from ..io import RunDir, check_archive, load_images, read_if_computed_for, save_images, stage_key, weights_files, write_csv
from ..paths import MODELS_DIR, resolve_path
from ..restore import GATE_SUFFIX, RestoreContext, RestorerUnavailable, create, run_restorer, summary
from ..unet import TrainConfig, train, training_faces
from . import data as data_stage
from . import degradation
from . import quality as quality_stage

STAGE = "restoration"


def context_for(params, run=None) -> RestoreContext:
    r = params.restoration
    weights = dict(r.weights)
    if run is not None and r.train_unet:
        weights["unet"] = str(run.path("models", "unet.safetensors"))

    return RestoreContext(device=params.device(), batch_size=r.batch_size,
                          weights={k: str(resolve_path(v)) for k, v in weights.items()}, allow_download=r.allow_download,
                          thresholds=params.quality_thresholds(), face_priors_on_cpu=r.face_priors_on_cpu,
                          options={name: dict(kw) for name, kw in r.options.items()})


def restorer_names(params) -> list[str]:
    """``none`` first, then the listed restorers, then the gated ones."""
    names = ["none"] + [n for n in params.restoration.restorers if n != "none"]
    return names + [g + GATE_SUFFIX for g in params.restoration.gate if g != "none"]


def _read_outputs(run) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The restoration stage's cached tables, every restored archive checked (raises if one is damaged)."""
    metrics = pd.read_csv(run.path("restoration", "metrics.csv"))
    for r, c in metrics[["restorer", "condition"]].drop_duplicates().itertuples(index=False):
        if r != "none":  # "none" is the degraded faces themselves
            check_archive(restored_file(run, r, c))
    return metrics, pd.read_csv(run.path("restoration", "restorers.csv"))


def restored_file(run, restorer: str, preset: str) -> Path:
    return run.path("restored", restorer, f"{preset}.npz")


CLEAN = "clean"


def load_restored(run, restorer: str, preset: str, ids: np.ndarray | None = None) -> np.ndarray:
    """Restored faces for one (restorer, condition), paired with the clean set.

    ``preset`` is a degradation preset or ``"clean"`` (the restorer applied to the clean faces);
    restorer ``none`` gives the degraded (or clean) faces themselves.
    """
    if restorer == "none":
        if preset == CLEAN:
            clean = data_stage.load_clean(run)
            if ids is not None and not np.array_equal(clean.ids, ids):
                raise ValueError("ids are not the run's clean set")
            return clean.images
        return degradation.load_degraded(run, preset, ids)
    z = load_images(restored_file(run, restorer, preset))
    if ids is not None and not np.array_equal(z["ids"], ids):
        raise ValueError(f"{restored_file(run, restorer, preset)} is not paired with the clean set: rerun notebook 03 with --force")
    return z["images"]


def model_inputs(params: StudyParams) -> list[Path]:
    """The model files this stage reads: the shipped U-Net and the weights the parameters name."""
    return [MODELS_DIR / "unet_denoiser", *weights_files(params.restoration.weights)]


def build(params: StudyParams, run: RunDir, progress: bool = True) -> tuple["pd.DataFrame", "pd.DataFrame"]:
    """Restore, score and save. Returns (metrics per image, restorers table with availability and timing).

    Writes ``restored/<restorer>/<preset>.npz``, ``restoration/metrics.csv`` and ``restoration/restorers.csv``.
    A restorer that is unavailable is listed with its reason and fix; the others run.
    """
    quality_stage.build(params, run, progress)

    digest = stage_key(params, "restoration", upstream=[run.stage_digest(quality_stage.STAGE)], inputs=model_inputs(params))
    cached = run.cached(STAGE, digest, lambda: _read_outputs(run))
    if cached is not None:
        return cached
    if params.restoration.train_unet:
        train_unet(params, run, progress)
    clean = data_stage.load_clean(run)
    ctx = context_for(params, run)
    frames, table, restorers = [], [], {}
    for name in restorer_names(params):
        t0 = time.perf_counter()
        try:
            restorers[name] = create(name, ctx)
        except RestorerUnavailable as e:
            table.append({"restorer": name, "family": "", "available": False, "reason": e.reason, "fix": e.fix,
                          "seconds_per_image": None, "device": ctx.device, "description": ""})
            continue
        table.append({"restorer": name, "family": restorers[name].family, "available": True, "reason": "", "fix": "",
                      "seconds_per_image": None, "load_seconds": round(time.perf_counter() - t0, 2), "device": ctx.device,
                      "description": restorers[name].describe()})
    timing: dict[str, list[float]] = {name: [] for name in restorers}  # seconds per face, one per condition
    # the clean faces are restored too: what a restorer does to a face that needed nothing is what the gate avoids
    conditions = [CLEAN] + [p.name for p in params.restoration_presets()]
    # condition by condition, so that auto and the gates can reuse the filters' output on the same faces
    for cond in tqdm(conditions, desc="conditions", disable=not progress):
        degraded = clean.images if cond == CLEAN else degradation.load_degraded(run, cond, clean.ids)
        base = degrade.pair_metrics(clean.images, degraded)
        done: dict[str, tuple[np.ndarray, float]] = {}
        for name, r in restorers.items():
            f = restored_file(run, name, cond)
            out = None
            z = read_if_computed_for(f, digest) if name != "none" else None
            if z is not None:
                out, spi = z["images"], float(z["seconds_per_image"])
            if out is None:
                out, spi = run_restorer(r, degraded, ctx.batch_size, progress, desc=f"{name} on {cond}", done=done)
                if name != "none":
                    save_images(f, clean.ids, out, params_digest=np.array(digest), seconds_per_image=np.array(spi))
            done[name] = (out, spi)
            timing[name].append(spi)
            psnr, ssim = base if name == "none" else degrade.pair_metrics(clean.images, out)
            frames.append(pd.DataFrame({"id": clean.ids, "label": clean.labels, "condition": cond, "restorer": name,
                                        "psnr": psnr, "ssim": ssim, "psnr_degraded": base[0], "ssim_degraded": base[1]}))
    for row in table:
        if timing.get(row["restorer"]):
            row["seconds_per_image"] = float(np.mean(timing[row["restorer"]]))
    metrics = pd.concat(frames, ignore_index=True)
    restorers = pd.DataFrame(table)
    write_csv(run.path("restoration", "metrics.csv"), metrics)
    write_csv(run.path("restoration", "restorers.csv"), restorers)
    run.mark_stage(STAGE, digest)
    return metrics, restorers


def gallery(run, metrics: "pd.DataFrame", condition: str, restorers: list[str], n: int) -> tuple[dict[str, np.ndarray], list[str], str]:
    """Faces at the best, median and worst PSNR gain of the condition's best restorer (by mean gain).

    Returns rows for ``plots.face_grid`` (clean, degraded, each restorer), column labels, and that restorer's name.
    """
    clean = data_stage.load_clean(run)
    m = metrics[metrics["condition"] == condition]
    s = summary(m)
    cand = s[s["restorer"] != "none"].dropna(subset=["PSNR gain (dB)"])
    best = cand.sort_values("PSNR gain (dB)", ascending=False)["restorer"].iloc[0] if len(cand) else "none"
    mb = m[m["restorer"] == best].set_index("id").loc[clean.ids]
    gain = (mb["psnr"] - mb["psnr_degraded"]).to_numpy()
    gain = np.where(np.isfinite(gain), gain, 0.0)
    order = np.argsort(-gain, kind="stable")
    picks, labels = [], []
    for k in range(n):
        for tag, pos in (("best", k), ("median", len(order) // 2 + k), ("worst", len(order) - 1 - k)):
            if 0 <= pos < len(order) and order[pos] not in picks:
                picks.append(int(order[pos]))
                labels.append(f"{tag} ({gain[order[pos]]:+.1f} dB)")
    rows = {"clean": clean.images[picks]}
    if condition != CLEAN:
        rows[condition] = degradation.load_degraded(run, condition, clean.ids)[picks]
    for r in restorers:
        if r != "none":
            rows[r] = load_restored(run, r, condition, clean.ids)[picks]
    return rows, labels, best


def hires_examples(params, run, condition: str, n: int) -> dict[str, np.ndarray]:
    """The face priors' own 512 px RGB output for ``n`` faces of one condition (empty where none is available)."""
    table = pd.read_csv(run.path("restoration", "restorers.csv"))
    names = table[(table["family"] == "face prior") & table["available"]]["restorer"].tolist()
    if not names:
        return {}
    clean = data_stage.load_clean(run)
    x = degradation.load_degraded(run, condition, clean.ids)[:n] if condition != CLEAN else clean.images[:n]
    ctx = context_for(params, run)
    return {name: create(name, ctx).restore_hires(x) for name in names}


def train_unet(params: StudyParams, run: RunDir, progress: bool = True) -> Path:
    """Notebook 03 with ``restoration.train_unet: true``: train on the run's train split, save into the run folder."""
    d, t = params.data, params.restoration.unet_training
    if not d.train_split:
        raise ValueError("restoration.train_unet needs data.train_split (the faces to train on)")

    data_stage.prepare(params, run, progress)
    key = stage_key(params, "restoration", upstream=[run.stage_digest(data_stage.STAGE)])
    out = run.path("models", "unet.safetensors")
    if out.is_file() and run.stage_done("unet_training", key):
        return out
    path = params.data_path()
    faces = training_faces(data.load_split(d.source, path, d.train_split, d.label_map, progress),
                           data.load_split(d.source, path, d.eval_split, d.label_map, progress))
    cfg = TrainConfig(presets=degrade.expand_preset_names(t.presets), epochs=t.epochs, batch_size=t.batch_size,
                      max_train_images=t.max_train_images, seed=params.seed, val_images=min(1000, len(faces) // 10),
                      device=params.device(), loss=t.loss, precision=t.precision)
    card = train(faces, cfg, out) if progress else train(faces, cfg, out, log=lambda *_: None)
    out.with_suffix(".json").write_text(json.dumps(card, indent=2))
    run.mark_stage("unet_training", key)
    return out
