"""``python -m fer_helpers.unet train|evaluate``: train the Attention U-Net, and score U-Net weights files beside
the registered restorers on PublicTest (the table the U-Net card and ``restoration`` choices are made from).
It sits above :mod:`fer_helpers.restore`, which the model module :mod:`fer_helpers.unet` must not import."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import data, degrade, restore
from .compute import for_inference
from .training import CHECKPOINT_ROOT, add_config_options, add_run_options, config_from_args
from .unet import TTA, TrainConfig, denoise, load_model, train, training_faces


def evaluate_on(faces, weights: dict[str, Path], presets: Sequence[str], seed: int = 0,
                classical: Sequence[str] = ("median", "switching_median", "nlm", "unsharp", "wiener", "auto"), device: str = "cpu",
                tta: str = "none", restorers: Sequence[str] = ()):
    """PSNR / SSIM per preset of the noisy input, the best classical filter, each U-Net weights file and each
    registered restorer in ``restorers`` (e.g. ``unet_auto``, which routes every face to a fine-tune or the blind model).

    ``faces`` is a Dataset (the evaluation faces); degradation is the study's own, with ``seed``; ``tta``
    as in :func:`denoise` (with ``flip`` the U-Net columns are named ``<name>+flip``).
    """
    models = {name: for_inference(load_model(path, device)[0], device) for name, path in weights.items()}
    ctx = restore.RestoreContext(device=device, options={"unet": {"tta": tta}, "unet_auto": {"tta": tta}})
    # name -> (uint8 stack -> uint8 stack); unavailable restorers fail here, before any work
    scorers = {name: partial(denoise, m, device=device, tta=tta) for name, m in models.items()}
    scorers |= {name: restore.create(name, ctx) for name in restorers}
    filters = {c: restore.create(c, ctx) for c in classical}
    rows = []
    for pname in tqdm(presets, desc="presets", disable=len(presets) < 2):
        noisy = degrade.apply_preset(faces.images, faces.ids, degrade.PRESETS[pname], seed)
        psnr, ssim = degrade.pair_metrics(faces.images, noisy)
        row = {"preset": pname, "faces": len(faces), "noisy PSNR": psnr.mean(), "noisy SSIM": ssim.mean()}
        best = (-np.inf, "", 0.0)
        for c, f in filters.items():
            out = f(noisy)
            p_, s_ = degrade.pair_metrics(faces.images, out)
            if p_.mean() > best[0]:
                best = (p_.mean(), c, s_.mean())
        row.update({"best classical": best[1], "classical PSNR": best[0], "classical SSIM": best[2]})
        for name, fn in scorers.items():
            p_, s_ = degrade.pair_metrics(faces.images, fn(noisy))
            col = name if tta == "none" else f"{name}+{tta}"
            row.update({f"{col} PSNR": p_.mean(), f"{col} SSIM": s_.mean()})
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fer_helpers.unet train --fer2013 DIR --out models/unet_denoiser/blind.safetensors [...]``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m fer_helpers.unet")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train or fine-tune the Attention U-Net denoiser")
    t.add_argument("--fer2013", required=True, help="Kaggle-style FER2013 folder (train/ and test/)")
    t.add_argument("--out", required=True, type=Path)
    add_run_options(t, "~/.cache/fer-study/train/<out name>.pt")
    add_config_options(t, TrainConfig, {"init": str, "max_train_images": int, "threads": int})
    e = sub.add_parser("evaluate", help="PSNR/SSIM on the evaluation split (train duplicates and blank faces removed)")
    e.add_argument("--fer2013", required=True)
    e.add_argument("--weights", nargs="+", default=[], metavar="NAME=PATH", help="U-Net weights files to score")
    e.add_argument("--restorers", nargs="+", default=[], metavar="NAME",
                   help="registered restorers to score as well, e.g. unet_auto (the fine-tunes routed per face)")
    e.add_argument("--presets", nargs="+", default=["seed003_low", "seed003_high", "seed003_sp"])
    e.add_argument("--csv", type=Path, help="also write the table here")
    e.add_argument("--tta", choices=TTA, default="none", help="U-Net test-time augmentation (the study's restoration.options: {unet: {tta: flip}})")
    a = ap.parse_args(argv)
    a.presets = degrade.expand_preset_names(a.presets)  # groups (seeds, noise_sweep, ...) allowed
    for p in a.presets:
        if p not in degrade.PRESETS:
            ap.error(f"unknown preset {p!r}; `fer-study presets` lists them")
    if a.cmd == "evaluate":
        bad = [w for w in a.weights if "=" not in w]
        if bad:
            ap.error(f"--weights takes NAME=PATH pairs (e.g. blind=models/unet_denoiser/blind.safetensors), not {bad[0]!r}")
        if not (a.weights or a.restorers):
            ap.error("give --weights NAME=PATH ..., --restorers NAME ... or both")
        unknown = [r for r in a.restorers if r.removesuffix(restore.GATE_SUFFIX) not in restore.available_names()]
        if unknown:
            ap.error(f"unknown restorer {unknown[0]!r}; known: {', '.join(restore.available_names())}")

        _, faces, _ = data.fer2013_train_val(a.fer2013)  # PublicTest, audited; PrivateTest_* files are never opened
        try:
            table = evaluate_on(faces, dict(w.split("=", 1) for w in a.weights), a.presets, tta=a.tta, restorers=a.restorers)
        except (restore.RestorerUnavailable, FileNotFoundError, ValueError) as e:
            ap.exit(1, f"python -m fer_helpers.unet evaluate: {e}\n")
        print(table.round(3).to_string(index=False))
        if a.csv:
            table.to_csv(a.csv, index=False)
        return 0
    cfg = config_from_args(TrainConfig, a)
    train_set, public, _ = data.fer2013_train_val(a.fer2013)  # PrivateTest_* files are never opened
    faces = training_faces(train_set, public)
    print(f"{len(faces)} clean Training faces (blank and eval-split duplicates excluded); presets {cfg.presets}")
    checkpoint = a.checkpoint or CHECKPOINT_ROOT / f"{a.out.stem}.pt"
    print(f"checkpoint {checkpoint}; after a kill, the same command with --resume continues it", flush=True)
    card = train(faces, cfg, a.out, checkpoint=checkpoint, resume=a.resume, progress=True, stop_after=a.stop_after)
    a.out.with_suffix(".json").write_text(json.dumps(card, indent=2))
    print(f"best val PSNR {card['val_psnr']:.2f} dB at epoch {card['best_epoch']}; weights {a.out}")
    return 0


