"""Write models/README.md (the shipped classifiers' cards) from their training JSON files.

    python scripts/classifier_cards.py models/cnn/cnn.json models/vit_fer2013/training.json models/landmarks/*.json

Every number comes from those files, written by the training commands; nothing is typed by hand.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cards", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, default=Path("models/README.md"))
    ap.add_argument("--hardware", default="2 CPU cores (no GPU)")
    a = ap.parse_args()
    lines = [
        "# Shipped classifiers (model cards)",
        "",
        "Trained by the project on FER2013 Training (28,709 faces, Kaggle folders); the epoch kept is the one with",
        "the best accuracy on PublicTest (with Training duplicates and blank faces removed); PrivateTest was never",
        "read. These are CPU-sized runs: the full-size commands (GPU) are in the project README.",
        "",
        "| model | file | parameters | epochs (best) | PublicTest accuracy | macro-F1 | training time | hardware |",
        "|---|---|---|---|---|---|---|---|",
    ]
    confusions = []
    for path in a.cards:
        c = json.loads(path.read_text())
        cfg = c["config"]
        name = cfg.get("arch", path.stem if path.stem != "training" else path.parent.name)
        keys = {k: v for k, v in cfg.items() if k not in ("seed", "device", "threads", "arch")}
        f1 = f"{c['val_macro_f1']:.4f}" if "val_macro_f1" in c else ""
        lines.append(f"| {name} | `{path.parent.name}/` | {', '.join(f'{k}={v}' for k, v in keys.items())} | "
                     f"{c.get('epochs_run') or len(c.get('history', [])) or cfg.get('epochs')} of {cfg.get('epochs')} ({c['best_epoch']}) | {c['val_accuracy']:.4f} | {f1} | "
                     f"{c.get('train_seconds', 0) / 60:.0f} min | {a.hardware} |")
        if "confusion_matrix" in c:
            confusions.append((name, c["confusion_matrix"]))
        if "val_faces_without_landmarks" in c:
            lines.append(f"|  | | faces without landmarks: {c['train_faces_without_landmarks']:,} of Training, "
                         f"{c['val_faces_without_landmarks']:,} of PublicTest (scored as wrong) | | | | | |")
    for name, cm in confusions:
        lines += ["", f"## {name}: PublicTest confusion matrix (rows: true class, columns: predicted)", "",
                  "| | " + " | ".join(CLASSES) + " |", "|---|" + "---|" * len(CLASSES)]
        lines += [f"| {CLASSES[i]} | " + " | ".join(str(v) for v in row) + " |" for i, row in enumerate(cm)]
    lines.append("")
    a.out.write_text("\n".join(lines))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
