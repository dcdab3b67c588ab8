"""Tune the classical restorers' parameters on PublicTest (never PrivateTest), by mean PSNR gain.

    FER2013_DIR=/path/to/fer2013 python scripts/tune_classical.py [--per-class 50]

Each filter is tuned on the presets it is meant for (median: salt-and-pepper; nlm: Gaussian noise;
unsharp and wiener: blur) over a seeded subset of PublicTest faces with train duplicates and blank faces
removed, degraded exactly as the study degrades them. The winning values are the class attributes in
fer_helpers/restore.py; this script prints the whole grid so the choice can be checked.
"""

from __future__ import annotations

import argparse
import itertools
import os

import numpy as np
import pandas as pd

from fer_helpers import data, degrade, restore

GRIDS = {
    "median": (restore.Median, {"size": [3, 5]}, ["seed003_sp", "sp_0.02", "sp_0.05", "sp_0.10", "sp_0.20"]),
    "nlm": (restore.NonLocalMeans, {"h_factor": [0.4, 0.5, 0.6, 0.7, 0.8, 1.0]}, ["seed003_low", "seed003_high", "noise_10", "noise_25"]),
    "unsharp": (restore.Unsharp, {"radius": [0.5, 1.0, 1.5, 2.0], "amount": [0.5, 1.0, 2.0, 3.0]}, ["blur_0.5", "blur_1", "blur_1.5", "blur_2"]),
    "wiener": (restore.Wiener, {"psf_sigma": [0.7, 1.0, 1.5], "balance": [0.01, 0.03, 0.1, 0.3]}, ["blur_0.5", "blur_1", "blur_1.5", "blur_2"]),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--only", nargs="*", default=list(GRIDS))
    a = ap.parse_args()
    root = os.environ.get("FER2013_DIR") or ap.error("set FER2013_DIR")
    _, kept, _ = data.fer2013_train_val(root)  # PublicTest only (PrivateTest_* files are never opened)
    faces = data.subset_per_class(kept, a.per_class, seed=0)
    print(f"{len(faces)} PublicTest faces")
    for name in a.only:
        cls, grid, presets = GRIDS[name]
        pairs = {p: degrade.apply_preset(faces.images, faces.ids, degrade.PRESETS[p], seed=0) for p in presets}
        base = {p: np.mean(degrade.pair_metrics(faces.images, d)[0]) for p, d in pairs.items()}
        rows = []
        for values in itertools.product(*grid.values()):
            setting = dict(zip(grid, values))
            r = cls(None, **setting)
            gains = {p: np.mean(degrade.pair_metrics(faces.images, r(d))[0]) - base[p] for p, d in pairs.items()}
            rows.append({**setting, **{f"gain {p}": g for p, g in gains.items()}, "mean gain (dB)": np.mean(list(gains.values()))})
        table = pd.DataFrame(rows).sort_values("mean gain (dB)", ascending=False)
        print(f"\n== {name} (presets {', '.join(presets)})\n{table.round(3).to_string(index=False)}")


if __name__ == "__main__":
    main()
