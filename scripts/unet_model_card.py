"""Write models/unet_denoiser/README.md from the training cards (JSON) and a PublicTest evaluation (CSV).

    python scripts/unet_model_card.py --eval models/unet_denoiser/publictest.csv --cards models/unet_denoiser/blind.json
    python scripts/unet_model_card.py --from-run reports/fer2013 --cards models/unet_denoiser/blind.json
    python scripts/unet_model_card.py --from-run reports/fer2013 --eval finetunes.csv --cards models/unet_denoiser/*.json
    python scripts/unet_model_card.py --eval all_presets.csv finetunes.csv --cards models/unet_denoiser/*.json

``--from-run`` takes the figures from a study run's notebook 03 (restoration/metrics.csv), which scores the
shipped U-Net and every classical filter on exactly the evaluation pairs of that run.

Every number in the card comes from those files (written by `python -m fer_helpers.unet train` and
`python -m fer_helpers.unet evaluate --csv`), so the card cannot drift from what was measured.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

LOSS_NAMES = {"l1": "L1", "mse": "MSE", "psnr": "PSNR (per-face -PSNR)"}
TARGETS = {"seed003_low": 36.7, "seed003_high": 30.5, "seed003_sp": 36.9}  # issue targets, PSNR dB on PublicTest


def from_run(run_dir: Path) -> pd.DataFrame:
    """The evaluate table's columns from a run's restoration metrics: noisy input, best classical filter, U-Net."""
    m = pd.read_csv(run_dir / "restoration" / "metrics.csv")
    m = m[m["condition"] != "clean"]
    g = m.groupby(["condition", "restorer"])[["psnr", "ssim"]].mean().reset_index()
    classical = {"median", "switching_median", "nlm", "unsharp", "wiener", "auto"}
    rows = []
    for cond, c in g.groupby("condition"):
        none = m[(m["condition"] == cond) & (m["restorer"] == "none")]
        cl = c[c["restorer"].isin(classical)].sort_values("psnr").iloc[-1]
        u = c[c["restorer"] == "unet"].iloc[0]
        rows.append({"preset": cond, "faces": len(none), "noisy PSNR": none["psnr"].mean(), "noisy SSIM": none["ssim"].mean(),
                     "best classical": cl["restorer"], "classical PSNR": cl["psnr"], "classical SSIM": cl["ssim"],
                     "blind PSNR": u["psnr"], "blind SSIM": u["ssim"]})
    order = ["seed003_low", "seed003_high", "seed003_sp"]
    return pd.DataFrame(rows).sort_values("preset", key=lambda s: s.map(lambda p: (order.index(p) if p in order else 99, p)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eval", type=Path, nargs="+", default=[],
                    help="CSVs written by `python -m fer_helpers.unet evaluate --csv`: the first (or --from-run) gives the rows, "
                    "the others add their U-Net columns (e.g. the fine-tunes on their own presets)")
    ap.add_argument("--from-run", type=Path, help="a run folder whose notebook 03 ran the U-Net (restorer unet)")
    ap.add_argument("--cards", type=Path, nargs="+", required=True)
    ap.add_argument("--out", type=Path, default=Path("models/unet_denoiser/README.md"))
    ap.add_argument("--margin-of", nargs="+", default=["blind", "unet_auto"],
                    help="U-Net columns whose best is compared with the best classical filter (last column)")
    a = ap.parse_args()
    if not (a.eval or a.from_run):
        ap.error("give --eval, --from-run or both")
    tables = [pd.read_csv(e) for e in a.eval]
    ev = from_run(a.from_run) if a.from_run else tables.pop(0)
    for extra in tables:
        cols = [c for c in extra.columns if c.endswith((" PSNR", " SSIM")) and c not in ev.columns
                and not c.startswith(("noisy", "classical"))]
        ev = ev.merge(extra[["preset", *cols]], on="preset", how="left")
    cards = {c.stem: json.loads(c.read_text()) for c in a.cards}
    models = [c[: -len(" PSNR")] for c in ev.columns if c.endswith(" PSNR") and c not in ("noisy PSNR", "classical PSNR")]

    lines = [
        "# Attention U-Net denoiser (model card)",
        "",
        "Seed 003's architecture (encoder 16-32-64-128, bottleneck 256, additive attention gates on the skips),",
        "predicting a residual added to its input; `fer_helpers/unet.py`. Weights are fp16 safetensors.",
        "",
        "## Data",
        "",
        "FER2013 Training faces (Kaggle folders), blank faces and faces whose pixels also occur in PublicTest removed;",
        "degraded on the fly with the project's own presets (a fresh draw every step). Validation: a held-out part of",
        "Training with fixed (seeded) degradations. Evaluation: PublicTest with train duplicates and blank faces removed,",
        "degraded with the study's seed 0 (exactly the pairs `params/fer2013.yaml` scores). PrivateTest was never used.",
        "",
        "## Training",
        "",
        "| weights | presets | epochs (best) | train faces | val PSNR (dB) | time | hardware, precision |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in cards.items():
        cfg = c["config"]
        presets = cfg["presets"] if len(cfg["presets"]) <= 3 else f"{len(cfg['presets'])} presets (all of the study's)"
        init = ""
        if cfg.get("init"):
            init = ", continued from its own earlier weights (see below)" if Path(cfg["init"]).stem == name else f", fine-tuned from `{Path(cfg['init']).name}`"
        init += ", impulse switch (only 0/255 pixels change)" if c.get("impulse_switch") else ""
        ran = len(c.get("history", [])) or cfg["epochs"]
        lines.append(f"| `{name}.safetensors` | {presets}{init} | {ran} of {cfg['epochs']} planned ({c['best_epoch']}) | {c['train_images']:,} | "
                     f"{c['val_psnr']:.2f} | {c['train_seconds'] / 60:.0f} min | {c['device']}, {c['threads']} threads, "
                     f"{cfg.get('precision', 'fp32')}, torch {c['torch']} |")
    lines += [f"\n`{name}`: {c['note']}." for name, c in cards.items() if c.get("note")]
    lines += [
        "",
        "Optimiser AdamW, one-cycle learning rate; maximum rate and loss per model: "
        + ", ".join(f"{n} {c['config']['lr']:g} {LOSS_NAMES.get(c['config']['loss'], c['config']['loss'])}" for n, c in cards.items())
        + f"; batch {next(iter(cards.values()))['config']['batch_size']}.",
        "",
        "## PublicTest (PSNR dB / SSIM, scikit-image, data_range 255)",
        "",
        "U-Net columns without a suffix: one pass (no `tta` in `restoration.options`, the default); `+flip`: the mirror",
        "self-ensemble (`restoration.options: {unet: {tta: flip}}`: each face and its mirror image, outputs averaged; twice the time).",
        "",
        f"Last column: the better of {' and '.join(a.margin_of)} (one pass; the restorers the study runs, which never see the",
        "preset's name, unlike a fine-tune scored on its own preset) minus the best classical filter, in dB. The issue",
        "asks for it to be positive on every preset.",
        "",
        "| preset | faces | noisy input | best classical | " + " | ".join(models) + " | target | U-Net vs classical |",
        "|---|---|---|---|" + "---|" * len(models) + "---|---|",
    ]
    one_pass = [m for m in models if m in a.margin_of]
    for _, r in ev.iterrows():
        cells = [f"{r[f'{m} PSNR']:.2f} / {r[f'{m} SSIM']:.3f}" if pd.notna(r[f"{m} PSNR"]) else "" for m in models]
        target = f"{TARGETS[r['preset']]:.1f}" if r["preset"] in TARGETS else ""
        scored = {m: r[f"{m} PSNR"] for m in one_pass if pd.notna(r[f"{m} PSNR"])}
        best = max(scored, key=scored.get) if scored else None
        margin = f"{scored[best] - r['classical PSNR']:+.2f} ({best})" if best else ""
        lines.append(f"| {r['preset']} | {r['faces']:,} | {r['noisy PSNR']:.2f} / {r['noisy SSIM']:.3f} | "
                     f"{r['classical PSNR']:.2f} / {r['classical SSIM']:.3f} ({r['best classical']}) | " + " | ".join(cells)
                     + f" | {target} | {margin} |")
    lines += [
        "",
        "Reproduce: the commands in the project README (`python -m fer_helpers.unet train ...`, then",
        "`python -m fer_helpers.unet evaluate ... --csv models/unet_denoiser/publictest.csv` and this script).",
        "",
    ]
    a.out.write_text("\n".join(lines))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
