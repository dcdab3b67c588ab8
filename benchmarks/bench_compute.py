"""What fer_helpers.compute buys on this machine: worker processes and inference copies vs the plain code.

    python benchmarks/bench_compute.py [--n 2000] [--repeat 2] [--workers 2]

Baseline and fast path run side by side on the same faces (baseline: one process, or the per-face code the
fast path replaced) (real FER2013 PublicTest when FER2013_DIR or
../shared/data/fer2013 is there, else the bundled sample tiled to --n). Prints milliseconds per face for
each, the speed-up, and whether the outputs are identical (or the largest difference where float
rounding may differ). Run it on an otherwise idle machine: other processes distort the ratios.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_batching import best_of, load  # noqa: E402

from fer_helpers import classify, cnn, compute, degrade, landmarks, quality, restore, unet  # noqa: E402
from fer_helpers.paths import SHARED_DIR  # noqa: E402


def skimage_sigma(faces: np.ndarray) -> np.ndarray:
    """scikit-image's estimator face by face (what ``quality.noise_sigma`` did before it was batched)."""
    from skimage.restoration import estimate_sigma

    return np.array([estimate_sigma(f.astype(np.float64), channel_axis=None) for f in faces])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workers", type=int, default=compute.cpu_count())
    a = ap.parse_args()
    clean, ids, src = load(a.n)
    noisy = degrade.apply_preset(clean, ids, degrade.PRESETS["noise_15"], 0)
    print(f"{len(clean)} faces from {src}; best of {a.repeat}; {a.workers} worker processes; ms per face\n")
    print(f"{'operation':38s} {'baseline':>9s} {'fast':>9s} {'speed-up':>9s}  same output")

    def row(name: str, base, fast, exact: bool = True, n: int = len(clean)) -> None:
        compute._WORKERS = 1
        tb, ob = best_of(base, a.repeat)
        compute._WORKERS = a.workers
        fast()  # start the worker processes outside the timing
        tf, of = best_of(fast, a.repeat)
        ob, of = (ob if isinstance(ob, tuple) else (ob,)), (of if isinstance(of, tuple) else (of,))
        if exact:
            same = "yes" if all(np.array_equal(x, y, equal_nan=True) for x, y in zip(ob, of)) else "NO"
        else:
            same = f"max |diff| {max(float(np.nanmax(np.abs(x.astype(float) - y.astype(float)))) for x, y in zip(ob, of)):.2g}"
        print(f"{name:38s} {tb / n * 1e3:9.3f} {tf / n * 1e3:9.3f} {tb / tf:8.2f}x  {same}", flush=True)

    ctx = restore.RestoreContext()
    nlm, wiener = restore.create("nlm", ctx), restore.create("wiener", ctx)
    row("restore nlm (workers)", lambda: nlm(noisy), lambda: nlm(noisy))
    row("restore wiener (workers)", lambda: wiener(noisy), lambda: wiener(noisy))
    row("quality noise sigma (batched wavelets)", lambda: skimage_sigma(noisy), lambda: quality.noise_sigma(noisy))
    row("JPEG q20 (one mosaic per stack)", lambda: np.stack([degrade._jpeg_roundtrip(f, 20) for f in noisy]),
        lambda: degrade.jpeg(noisy, [], quality=20))
    row("degrade seed000_chain (threads)", lambda: degrade.apply_preset(clean, ids, degrade.PRESETS["seed000_chain"], 0),
        lambda: degrade.apply_preset(clean, ids, degrade.PRESETS["seed000_chain"], 0))
    row("PSNR + SSIM (workers)", lambda: degrade.pair_metrics(clean, noisy), lambda: degrade.pair_metrics(clean, noisy))
    task = SHARED_DIR / "models" / "face_landmarker.task"
    if task.is_file():
        few = noisy[:1000]
        row(f"MediaPipe landmarks (workers, {len(few)} faces)", lambda: landmarks.extract(few, task)[0],
            lambda: landmarks.extract(few, task)[0], n=len(few))
    if restore.UNET_WEIGHTS.is_file():
        model = unet.load_model(restore.UNET_WEIGHTS)[0]
        fast = compute.for_inference(model)
        row("U-Net denoise (folded BN, channels-last)", lambda: unet.denoise(model, noisy, batch_size=256),
            lambda: unet.denoise(fast, noisy, batch_size=256), exact=False)
    cnn_path = classify.DEFAULT_WEIGHTS["cnn"]
    if Path(cnn_path).is_file():
        model = cnn.load(cnn_path)[0]
        fast = compute.for_inference(model)
        row("CNN ten-view TTA (folded BN, channels-last)", lambda: cnn.predict_proba(model, noisy),
            lambda: cnn.predict_proba(fast, noisy), exact=False)


if __name__ == "__main__":
    main()
