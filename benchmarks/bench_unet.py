"""The U-Net's cost on this machine: a training step in fp32 vs bf16 autocast, one pass vs the mirror self-ensemble,
and every restorer of the study per face, side by side on the same faces.

    python benchmarks/bench_unet.py [--n 2000] [--repeat 2] [--steps 10]

Faces: real FER2013 PublicTest when FER2013_DIR or ../shared/data/fer2013 is there, else the bundled sample
tiled to --n. Prints milliseconds per face, the ratio to the baseline row, and PSNR (scikit-image) where it
applies. Run it on an otherwise idle machine: other processes distort the ratios (a training run beside it
more than halves the speed of both).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_batching import best_of, load  # noqa: E402

from fer_helpers import degrade, restore, unet  # noqa: E402,F401
from fer_helpers.paths import MODELS_DIR  # noqa: E402


def train_step_ms(clean: np.ndarray, precision: str, steps: int, batch: int = 64) -> float:
    """Milliseconds per face of a full training step (degrade, forward, L1, backward, AdamW): the U-Net recipe's
    own batch preparation and loss (``unet.make_recipe``, what ``training.fit`` runs), one batch after another."""
    from fer_helpers import training

    cfg = unet.TrainConfig(presets=["seed003_high"], batch_size=batch, val_images=batch, precision=precision, device="cpu")
    recipe, tr = unet.make_recipe(cfg, clean)
    model = recipe.model.to(memory_format=torch.channels_last).train()
    opt = training.make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(0)
    faces, dummy = torch.from_numpy(tr), torch.zeros(batch, dtype=torch.int64)

    def step(k: int) -> None:
        start = (k * batch) % (len(faces) - batch)
        inputs, targets = recipe.prepare(faces[start : start + batch], dummy, gen)
        with training.autocast("cpu", precision):
            loss = recipe.loss(model, inputs, targets, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for k in range(3):  # warm-up (oneDNN picks its kernels)
        step(k)
    t = time.perf_counter()
    for k in range(steps):
        step(k)
    return (time.perf_counter() - t) / (steps * batch) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    clean, ids, src = load(a.n)
    print(f"{len(clean)} faces from {src}; {torch.get_num_threads()} torch threads; ms per face\n")

    fp32, bf16 = train_step_ms(clean, "fp32", a.steps), train_step_ms(clean, "bf16", a.steps)
    print(f"{'U-Net training step (batch 64)':44s} {'fp32':>9s} {'bf16':>9s} {'speed-up':>9s}")
    print(f"{'':44s} {fp32:9.2f} {bf16:9.2f} {fp32 / bf16:8.2f}x\n", flush=True)

    print(f"{'restorer':30s} {'preset':14s} {'ms/face':>8s} {'PSNR dB':>8s}  (flip: time and PSNR gain over one pass)")
    for preset in ("seed003_low", "seed003_high", "seed003_sp"):
        noisy = degrade.apply_preset(clean, ids, degrade.PRESETS[preset], 0)
        one_pass = {}
        names = ["none", "median", "switching_median", "nlm", "unsharp", "wiener", "auto", "unet", "unet flip"]
        if all((MODELS_DIR / "unet_denoiser" / f"{p}.safetensors").is_file() for p in restore.UNET_SPECIALISTS):
            names += ["unet_auto", "unet_auto flip"]
        for name in names:
            base, flip = name.split()[0], name.endswith("flip")
            ctx = restore.RestoreContext(options={base: {"tta": "flip" if flip else "none"}})
            r = restore.create(base, ctx)
            r(noisy[:64])  # warm-up: worker processes, oneDNN kernels
            t, out = best_of(lambda: restore.run_restorer(r, noisy, ctx.batch_size)[0], a.repeat)
            ms, psnr = t / len(noisy) * 1e3, degrade.pair_metrics(clean, out)[0].mean()
            one_pass.setdefault(base, (ms, psnr))
            extra = f"  {ms / one_pass[base][0]:.2f}x, {psnr - one_pass[base][1]:+.2f} dB" if flip else ""
            print(f"{name:30s} {preset:14s} {ms:8.3f} {psnr:8.2f}{extra}", flush=True)


if __name__ == "__main__":
    main()
