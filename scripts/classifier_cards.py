"""Write models/README.md (the shipped classifiers' cards) from the JSON files their training commands wrote.

    python scripts/classifier_cards.py models/cnn/cnn.json models/vit_fer2013/training.json models/landmarks/*.json

Every number comes from those files; nothing is typed by hand.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# loop options that say where a run ran, not what it learned
NOT_RECIPE = {"seed", "device", "threads", "arch", "precision"}


def registered_as() -> dict[str, str]:
    """Weights file or folder name -> the classifier name the study registers it under (``classify.DEFAULT_WEIGHTS``)."""
    from fer_helpers.classify import DEFAULT_WEIGHTS

    return {Path(str(v)).name: k for k, v in DEFAULT_WEIGHTS.items() if "," not in str(v)}


def model_name(path: Path, card: dict) -> str:
    """The file's own name, followed by the classifier name it is registered under when that differs."""
    if "members" in card:
        return "cnn_ensemble"
    name = path.parent.name if path.stem == "training" else card["config"].get("arch", path.stem)
    weights = path.parent.name if path.stem == "training" else path.with_suffix(".safetensors").name
    names = registered_as()
    registered = names.get(weights)
    if registered and registered != name:
        return f"{name} (`{registered}`)"
    if not registered and name in names.values():  # an older file whose name the registry now gives to another
        return f"{name} (file only; `{name}` is {next(w for w, k in names.items() if k == name)})"
    return name


def ensemble_row(path: Path, card: dict) -> str:
    members = ", ".join(f"{m} ({a:.4f})" for m, a in zip(card["members"], card["member_val_accuracy"]))
    return (f"| cnn_ensemble | `{path.parent.name}/{path.name}` | mean probability of {members} | (members') | "
            f"{card['val_accuracy']:.4f} ({card['val_tta']} TTA) | {card['val_macro_f1']:.4f} | | | |")


def average_row(path: Path, card: dict) -> str:
    """A weight average ("model soup"): one CNN whose weights are its members' mean."""
    members = ", ".join(f"{m['weights']} ({m['val_accuracy']:.4f})" for m in card["weight_average_of"])
    return (f"| {model_name(path, card)} | `{path.parent.name}/` | mean weights of {members}, all fine-tuned from "
            f"{card['common_start']} (members: {card['selection']}) | (members') | {card['val_accuracy']:.4f} "
            f"({card['val_tta']} TTA) | {card['val_macro_f1']:.4f} | | | {card.get('hardware', '')} |")


def extras(card: dict) -> list[str]:
    """Rows under a model's row: where a fine-tune started, what a robust model was trained on and scores."""
    out = []
    if card.get("initialised_from"):
        s = card["initialised_from"]
        after = f"{s['epochs']} epochs, " if s.get("epochs") else ""  # a continued run: the epochs its start had run
        out.append(f"|  | | fine-tuned from {s['weights']} ({after}PublicTest {s['val_accuracy']:.4f}) | | | | | | |")
    if card.get("degradation_mix"):
        mix = card["degradation_mix"]
        fams = "; ".join(f"{f}: {v[1]:g}-{v[2]:g}" if isinstance(v, list) else f"{f}: {v}" for f, v in mix["families"].items())
        out.append(f"|  | | each training face degraded with p = {mix['p']} by one of: {fams}; selected on the {mix['selected_on']} | | | | | | |")
    if card.get("val_accuracy_by_preset"):
        accs = ", ".join(f"{p} {a:.4f}" for p, a in card["val_accuracy_by_preset"].items())
        out.append(f"|  | | PublicTest accuracy on each seed preset (ten-crop): {accs} | | | | | | |")
    return out


def row(path: Path, card: dict, hardware: str) -> str:
    if "members" in card:
        return ensemble_row(path, card)
    if "weight_average_of" in card:
        return average_row(path, card)
    cfg = card["config"]
    recipe = ", ".join(f"{k}={v}" for k, v in cfg.items() if k not in NOT_RECIPE and v not in ("", None) and k not in ("init", "teacher"))
    if card.get("model"):
        recipe += "; model: " + ", ".join(f"{k}={v}" for k, v in card["model"].items())
    if card.get("teacher"):
        t = card["teacher"]
        if isinstance(t["weights"], list):  # an ensemble teacher: the mean probability of its members
            members = ", ".join(f"{w} ({a:.4f})" for w, a in zip(t["weights"], t["val_accuracy"]))
            recipe += f"; distilled from the mean probability of {members} ({t['arch']}s, PublicTest)"
        else:
            recipe += f"; distilled from {t['weights']} ({t['arch']}, PublicTest {t['val_accuracy']:.4f})"
        if t.get("targets"):  # a teacher that saw other inputs than the student (landmark models: whole faces)
            recipe += f"; teacher targets: {t['targets']}"
    epochs_run = card.get("epochs_run") or len(card.get("history", [])) or cfg.get("epochs")
    kept = f"{card['best_epoch']}" + (f", {card['kept_weights']}" if card.get("kept_weights") else "")
    acc = f"{card['val_accuracy']:.4f}" + (f" ({card['val_tta']} TTA)" if card.get("val_tta") else "")
    f1 = f"{card['val_macro_f1']:.4f}" if "val_macro_f1" in card else ""
    speed = f"{card['images_per_second']:.0f}" if card.get("images_per_second") else ""
    where = card.get("hardware") or card.get("cpu") or hardware
    where += (f", {card['threads']} threads" if card.get("threads") and card.get("device", "cpu") == "cpu" else "")
    where += f", {card['precision']}" if card.get("precision") else ""
    return (f"| {model_name(path, card)} | `{path.parent.name}/` | {recipe} | {epochs_run} of {cfg.get('epochs')} ({kept}) | {acc} | "
            f"{f1} | {speed} | {card.get('train_seconds', 0) / 60:.0f} min | {where} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cards", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, default=Path("models/README.md"))
    ap.add_argument("--hardware", default="2 CPU cores (no GPU)", help="for cards that do not record it")
    a = ap.parse_args()
    lines = [
        "# Shipped classifiers (model cards)",
        "",
        "Trained by the project on FER2013 Training (28,709 faces, Kaggle folders) through the one training loop",
        "(`fer_helpers/training.py`); the weights kept are those (raw or their moving average, EMA) with the best",
        "accuracy on PublicTest (Training duplicates and blank faces removed); PrivateTest was never read.",
        "Columns: epochs run of planned (epoch kept, which weights); PublicTest accuracy of the kept weights;",
        "training speed in images per second over whole epochs (data, augmentation and validation included).",
        "",
        "| model | file | recipe | epochs (kept) | PublicTest accuracy | macro-F1 | img/s | training time | hardware |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    confusions = []
    for path in a.cards:
        card = json.loads(path.read_text())
        lines.append(row(path, card, a.hardware))
        lines += extras(card)
        if "val_faces_without_landmarks" in card:
            lines.append(f"|  | | faces without landmarks: {card['train_faces_without_landmarks']:,} of Training, "
                         f"{card['val_faces_without_landmarks']:,} of PublicTest (scored as wrong) | | | | | | |")
        if "confusion_matrix" in card:
            confusions.append((model_name(path, card), card["confusion_matrix"], card.get("confusion_last_column")))
    for name, cm, extra in confusions:
        cols = list(CLASSES) + ([extra] if extra and len(cm[0]) > len(CLASSES) else [])
        lines += ["", f"## {name}: PublicTest confusion matrix (rows: true class, columns: predicted)", "",
                  "| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        lines += [f"| {CLASSES[i]} | " + " | ".join(str(v) for v in r) + " |" for i, r in enumerate(cm)]
    lines.append("")
    a.out.write_text("\n".join(lines))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
