"""Batched degradation, quality measures and restorers vs the per-image loop they replace, side by side.

    python benchmarks/bench_batching.py [--n 3589] [--repeat 3]

Uses real FER2013 faces when FER2013_DIR (or ../shared/data/fer2013) is there, else the bundled sample
tiled to --n images. Prints seconds per 1,000 images for each path and the speed-up ratio. Results are
identical in both paths (checked), so the ratio is pure overhead removed.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from fer_helpers import data, degrade, quality, restore
from fer_helpers.paths import SAMPLE_FER2013_DIR, SHARED_FER2013_DIR


def load(n: int) -> tuple[np.ndarray, list[str], str]:
    root = os.environ.get("FER2013_DIR") or (SHARED_FER2013_DIR if SHARED_FER2013_DIR.is_dir() else None)
    ds = data.load_folder(root or SAMPLE_FER2013_DIR, "test")
    reps = -(-n // len(ds))
    imgs = np.concatenate([ds.images] * reps)[:n]
    ids = [f"{i}:{k}" for k in range(reps) for i in ds.ids][:n]
    return imgs, ids, str(root or SAMPLE_FER2013_DIR)


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3589)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    imgs, ids, src = load(a.n)
    ctx = restore.RestoreContext(batch_size=512)
    restorers = {n: restore.create(n, ctx) for n in ("median", "unsharp") + (("unet",) if restore.UNET_WEIGHTS.is_file() else ())}
    print(f"{len(imgs)} faces from {src}; best of {a.repeat}; seconds per 1,000 faces\n")
    print(f"{'operation':34s} {'per-image loop':>15s} {'batched':>10s} {'speed-up':>9s}")
    cases = {
        "degrade seed000_chain": lambda x, i: degrade.apply_preset(x, i, degrade.PRESETS["seed000_chain"], 0),
        "degrade lowres_x4": lambda x, i: degrade.apply_preset(x, i, degrade.PRESETS["lowres_x4"], 0),
        "degrade sp_0.10": lambda x, i: degrade.apply_preset(x, i, degrade.PRESETS["sp_0.10"], 0),
        "quality laplacian_variance": lambda x, i: quality.laplacian_variance(x),
        "quality blockiness": lambda x, i: quality.blockiness(x),
        "restore median": lambda x, i: restorers["median"](x),
        "restore unsharp": lambda x, i: restorers["unsharp"](x),
    }
    if restore.UNET_WEIGHTS.is_file():
        cases["restore unet (shipped weights)"] = lambda x, i: restorers["unet"](x)
    for name, fn in cases.items():
        t_loop, loop = best_of(lambda: np.concatenate([fn(imgs[k : k + 1], ids[k : k + 1]) for k in range(len(imgs))]), a.repeat)
        t_batch, batch = best_of(lambda: np.concatenate([fn(imgs[s : s + 512], ids[s : s + 512]) for s in range(0, len(imgs), 512)]), a.repeat)
        np.testing.assert_allclose(np.asarray(loop, float), np.asarray(batch, float), rtol=1e-9)
        k = 1000 / len(imgs)
        print(f"{name:34s} {t_loop * k:15.3f} {t_batch * k:10.3f} {t_loop / t_batch:8.1f}x")
    t_noise, _ = best_of(lambda: quality.noise_sigma(imgs), 1)
    print(f"{'quality noise_sigma (per image)':34s} {'':15s} {t_noise * 1000 / len(imgs):10.3f}")


if __name__ == "__main__":
    main()
