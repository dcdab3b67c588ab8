"""Reproduce the `project` quality thresholds: 5% false alarms per measure on clean FER2013 Training faces.

    FER2013_DIR=/path/to/fer2013 python scripts/calibrate_quality.py [--per-class 400] [--false-alarm 0.05]
"""

import argparse
import os

import numpy as np

from fer_helpers import data, quality

ap = argparse.ArgumentParser()
ap.add_argument("--per-class", type=int, default=400)
ap.add_argument("--false-alarm", type=float, default=0.05)
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()
root = os.environ.get("FER2013_DIR") or ap.error("set FER2013_DIR to a folder with train/<class>/")
train = data.load_folder(root, "train", progress=True)
not_blank = train.take(np.flatnonzero(train.images.reshape(len(train), -1).std(axis=1) > 1.0))
sample = data.subset_per_class(not_blank, a.per_class, a.seed)
print(f"{len(sample)} clean Training faces; thresholds at {a.false_alarm:.0%} false alarms per measure:")
for k, v in quality.calibrate_thresholds(sample.images, a.false_alarm).items():
    print(f"  {k}: {v:.3f}")
