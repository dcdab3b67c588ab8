"""The CNN ensemble's card: its members' mean probability scored on PublicTest, written beside the members.

    python -m fer_helpers.ensemble --fer2013 DIR --members models/cnn/cnn.safetensors models/cnn/cnn_seed1.safetensors

Writes ``ensemble.json`` next to the first member (what ``classify.card_of("cnn_ensemble")`` reads): the
members, each member's own PublicTest accuracy and the ensemble's, macro-F1 and confusion matrix, all with the
same test-time augmentation. PrivateTest is never read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from .data import CLASSES


def ensemble_card(members: Sequence[str | Path], images: np.ndarray, labels: np.ndarray, tta: str = "ten_crop") -> dict:
    """Scores of each member and of their mean probability on (``images``, ``labels``)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    from . import cnn

    probas = cnn.member_probas(members, images, tta=tta)
    pred = np.mean(probas, axis=0).argmax(1)
    return {"members": [Path(p).name for p in members],
            "member_val_accuracy": [accuracy_score(labels, p.argmax(1)) for p in probas],
            "val_accuracy": accuracy_score(labels, pred), "val_macro_f1": f1_score(labels, pred, average="macro"),
            "val_tta": tta, "val_images": int(len(labels)), "labels": list(CLASSES),
            "confusion_matrix": confusion_matrix(labels, pred, labels=range(len(CLASSES))).tolist()}


def main(argv: Sequence[str] | None = None) -> int:
    from . import data

    ap = argparse.ArgumentParser(prog="python -m fer_helpers.ensemble")
    ap.add_argument("--fer2013", required=True, help="the Kaggle folder, or a file from `python -m fer_helpers.data pack`")
    ap.add_argument("--members", nargs="+", type=Path, required=True)
    ap.add_argument("--tta", default="ten_crop", choices=["ten_crop", "flip", "none"])
    a = ap.parse_args(argv)
    if len(a.members) < 2:
        ap.error("an ensemble needs at least two --members")
    missing = [str(p) for p in a.members if not p.is_file()]
    if missing:
        ap.error(f"no such weights file: {', '.join(missing)} (train it: python -m fer_helpers.cnn --help)")
    _, val, _ = data.fer2013_train_val(a.fer2013)
    card = ensemble_card(a.members, val.images, val.labels, a.tta)
    out = a.members[0].with_name("ensemble.json")
    out.write_text(json.dumps(card, indent=2))
    print(f"PublicTest accuracy {card['val_accuracy']:.4f} (members {', '.join(f'{x:.4f}' for x in card['member_val_accuracy'])}): {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
