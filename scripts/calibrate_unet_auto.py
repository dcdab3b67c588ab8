"""Where unet_auto's noise bands and the salt-and-pepper test come from: estimated noise sigma on Training faces.

    FER2013_DIR=/path/to/fer2013 python scripts/calibrate_unet_auto.py [--n 2000]

The low- and high-noise fine-tunes were trained on one sigma each (seed003_low 5.1, seed003_high 15.3 grey
levels) and are worse than the blind model away from it (PublicTest, see models/unet_denoiser/README.md:
the high fine-tune scores 23.9 dB on noise_25 where the blind model scores 26.6). So unet_auto sends a
noise-flagged face to a fine-tune only when its estimated sigma falls in that fine-tune's band. The bands
sit between the 95th and the 5th percentiles of neighbouring presets, measured here on a seeded sample of
Training faces (not the evaluation split); the chosen edges are UNetAuto's class attributes in
fer_helpers/restore.py, printed last.

Salt-and-pepper (auto and unet_auto): a face with at least 1% isolated 0/255 pixels is salt-and-pepper only if
its estimated sigma after the switching median (impulses replaced) is low; heavy Gaussian noise clips to 0/255
too but stays noisy. The last two columns give that sigma's 5th and 95th percentile among the faces with impulses.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import pandas as pd

from fer_helpers import data, degrade, quality, restore
from fer_helpers.paths import SHARED_FER2013_DIR

PRESETS = ["none", "seed003_low", "noise_10", "seed003_high", "noise_25", "noise_35", "jpeg_5", "blur_3", "seed000_chain",
           "sp_0.02", "sp_0.05", "seed003_sp", "sp_0.20"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000, help="Training faces (seeded sample)")
    a = ap.parse_args()
    root = os.environ.get("FER2013_DIR", str(SHARED_FER2013_DIR))
    train = data.load_folder(root, "train")
    idx = np.random.default_rng(0).permutation(len(train))[: a.n]
    faces, ids = train.images[idx], [train.ids[i] for i in idx]
    thresholds = restore.Auto(restore.RestoreContext()).thresholds
    rows = []
    for p in PRESETS:
        x = faces if p == "none" else degrade.apply_preset(faces, ids, degrade.PRESETS[p], 0)
        v = quality.verdict(quality.measure(x), thresholds)
        s = v["noise_sigma"].to_numpy()
        q5, q50, q95 = np.percentile(s, [5, 50, 95])
        row = {"preset": p, "noise-flagged": v["flag_noise"].mean(), "sigma_hat p5": q5, "p50": q50, "p95": q95}
        imp = restore.impulse_fraction(x) >= restore.IMPULSE_MIN
        row["with impulses"] = imp.mean()
        if imp.any():
            r = quality.noise_sigma(restore.SwitchingMedian()(x[imp]))
            row["after switching median p5"], row["p95 "] = np.percentile(r, [5, 95])
        rows.append(row)
    print(pd.DataFrame(rows).round(2).to_string(index=False))
    u = restore.UNetAuto
    print(f"\nunet_auto: seed003_low for noise-flagged faces with sigma_hat <= {u.low_noise_max}, seed003_high for "
          f"{u.high_noise_band[0]} <= sigma_hat <= {u.high_noise_band[1]}, the blind model otherwise")
    print(f"salt-and-pepper: impulses >= {restore.IMPULSE_MIN:.0%} and sigma after the switching median <= "
          f"{restore.IMPULSE_RESIDUAL_SIGMA_MAX}")


if __name__ == "__main__":
    main()
