"""Combining CNNs: the ensemble's card (their mean probability) and weight averages ("model soups").

    python -m fer_helpers.ensemble --fer2013 DIR --members models/cnn/cnn.safetensors models/cnn/cnn_seed1.safetensors

writes ``ensemble.json`` next to the first member (what ``classify.card_of("cnn_ensemble")`` reads): the
members, each member's own PublicTest accuracy and the ensemble's, macro-F1 and confusion matrix, all with the
same test-time augmentation.

    python -m fer_helpers.ensemble --fer2013 DIR --members START.safetensors FT1.safetensors ... --average-into OUT.safetensors

writes one CNN whose weights are the mean of the members' (Wortsman et al. 2022, "Model soups"): one model's
cost at inference, much of an ensemble's gain. Averaging only works for networks fine-tuned from the same
weights (they stay in one basin of the loss); members of different origins are refused. ``--greedy`` adds the
members one by one, best first, and keeps each only if the average does not lose PublicTest accuracy.
PrivateTest is never read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .data import CLASSES

if TYPE_CHECKING:
    from .cnn import CompactCNN


def ensemble_card(members: Sequence[str | Path], images: np.ndarray, labels: np.ndarray, tta: str = "ten_crop",
                  progress: bool = False) -> dict:
    """Scores of each member and of their mean probability on (``images``, ``labels``); ``progress``: a bar per member."""
    from sklearn.metrics import accuracy_score

    from . import cnn
    from .training import card_scores

    probas = cnn.member_probas(members, images, tta=tta, progress=progress)
    pred = np.mean(probas, axis=0).argmax(1)
    return {"members": [Path(p).name for p in members],
            "member_val_accuracy": [accuracy_score(labels, p.argmax(1)) for p in probas],
            **card_scores(labels, pred, CLASSES), "val_tta": tta, "val_images": int(len(labels))}


def common_start(members: Sequence[str | Path]) -> str:
    """The weights file every member was fine-tuned from (or is): a weight average needs one. ValueError naming
    the odd member otherwise (averaging networks trained apart gives a network that recognises nothing)."""
    from .io import read_card

    starts = []
    for m in members:
        card = read_card(m)
        starts.append((card.get("initialised_from") or {}).get("weights") or card.get("common_start") or Path(m).name)
    if len(set(starts)) > 1:
        raise ValueError("a weight average needs members fine-tuned from the same weights, but they start from "
                         + ", ".join(f"{m}: {s}" for m, s in zip(members, starts))
                         + " (fine-tune each from one file with `python -m fer_helpers.cnn --init FILE`, or combine "
                         "them as an ensemble: drop --average-into)")
    return starts[0]


def average_weights(members: Sequence[str | Path]) -> tuple["CompactCNN", dict]:
    """A CNN holding the element-wise mean of the members' weights (BatchNorm statistics included; integer counters
    taken from the first), and the first member's card. ValueError naming the member whose tensors do not match."""
    from . import cnn

    first, card = cnn.load(members[0])
    reference = first.state_dict()
    total = {k: v.double() for k, v in reference.items()}
    for m in members[1:]:
        state = cnn.load(m)[0].state_dict()
        bad = [k for k in reference if k not in state or state[k].shape != reference[k].shape]
        if bad or set(state) != set(reference):
            raise ValueError(f"{m} does not hold the same network as {members[0]} (first differing tensor: "
                             f"{(bad or sorted(set(state) ^ set(reference)))[0]}); average CNNs of one width only")
        for k, v in state.items():
            total[k] += v.double()
    first.load_state_dict({k: (v / len(members)).to(reference[k].dtype) if reference[k].is_floating_point()
                           else reference[k] for k, v in total.items()})
    return first, card


def _scores(model: "CompactCNN", images: np.ndarray, tta: str, progress: bool = False) -> np.ndarray:
    """The model's probabilities (BatchNorm-folded inference copy, fp32), as the members are scored."""
    from . import cnn
    return cnn.inference_proba(model, images, tta=tta, progress="mean weights" if progress else None)


def soup(members: Sequence[str | Path], images: np.ndarray, labels: np.ndarray, tta: str = "ten_crop",
         greedy: bool = False, log=print, progress: bool = False) -> tuple["CompactCNN", dict]:
    """The averaged CNN and its card, scored on (``images``, ``labels``). With ``greedy``, members are tried best
    first and kept only where the average scores at least as well as without them. ``progress``: bars while scoring."""
    from sklearn.metrics import accuracy_score

    from . import cnn
    from .training import card_scores

    start = common_start(members)
    own = [accuracy_score(labels, p.argmax(1)) for p in cnn.member_probas(members, images, tta=tta, progress=progress)]
    if greedy:
        steps = []
        order = sorted(range(len(members)), key=lambda i: -own[i])
        kept, best, model = [order[0]], own[order[0]], None
        for i in order[1:]:
            trial, card = average_weights([members[j] for j in kept + [i]])
            trial_proba = _scores(trial, images, tta, progress)
            acc = accuracy_score(labels, trial_proba.argmax(1))
            steps.append({"added": Path(members[i]).name, "val_accuracy": acc, "kept": acc >= best})
            log(f"  + {Path(members[i]).name}: {acc:.4f} ({'kept' if acc >= best else 'left out'}; best so far {best:.4f})")
            if acc >= best:
                kept, best, model, proba = kept + [i], acc, trial, trial_proba
        if model is None:
            raise ValueError("no member raised the best member's accuracy: nothing to average (the best member alone "
                             f"is {Path(members[order[0]]).name}, {own[order[0]]:.4f})")
    else:
        kept = list(range(len(members)))
        model, card = average_weights(members)
        proba = _scores(model, images, tta, progress)
    pred = proba.argmax(1)
    out = {"arch": "CompactCNN", "config": {k: card.get("config", {}).get(k) for k in ("width", "dropout", "seed")},
           "weight_average_of": [{"weights": Path(members[i]).name, "val_accuracy": own[i]} for i in kept],
           "common_start": start, "selection": "greedy, best member first, on PublicTest" if greedy else "uniform",
           **card_scores(labels, pred, CLASSES), "val_tta": tta, "val_images": int(len(labels))}
    if greedy:
        out["greedy_steps"] = steps
    return model, out


def main(argv: Sequence[str] | None = None) -> int:
    from . import data

    ap = argparse.ArgumentParser(prog="python -m fer_helpers.ensemble")
    ap.add_argument("--fer2013", required=True, help="the Kaggle folder, or a file from `python -m fer_helpers.data pack`")
    ap.add_argument("--members", nargs="+", type=Path, required=True)
    ap.add_argument("--tta", default="ten_crop", choices=["ten_crop", "flip", "none"])
    ap.add_argument("--average-into", type=Path, metavar="OUT.safetensors",
                    help="write one CNN with the members' mean weights (members fine-tuned from one start) instead "
                         "of the ensemble's card")
    ap.add_argument("--greedy", action="store_true", help="with --average-into: keep a member only if it helps")
    ap.add_argument("--presets", action="store_true",
                    help="with --average-into: also score the average on each seed preset's degraded faces")
    a = ap.parse_args(argv)
    if len(a.members) < 2:
        ap.error("an ensemble needs at least two --members")
    missing = [str(p) for p in a.members if not p.is_file()]
    if missing:
        ap.error(f"no such weights file: {', '.join(missing)} (train it: python -m fer_helpers.cnn --help)")
    if (a.greedy or a.presets) and not a.average_into:
        ap.error("--greedy and --presets go with --average-into")
    _, val, _ = data.fer2013_train_val(a.fer2013)
    if a.average_into:
        return _write_average(a, val)
    card = ensemble_card(a.members, val.images, val.labels, a.tta, progress=True)
    out = a.members[0].with_name("ensemble.json")
    out.write_text(json.dumps(card, indent=2))
    print(f"PublicTest accuracy {card['val_accuracy']:.4f} (members {', '.join(f'{x:.4f}' for x in card['member_val_accuracy'])}): {out}")
    return 0


def _write_average(a: argparse.Namespace, val) -> int:
    import torch

    from . import cnn
    from .io import save_weights
    from .training import cpu_name

    try:
        model, card = soup(a.members, val.images, val.labels, a.tta, greedy=a.greedy, progress=True)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if a.presets:  # the first member's seed: the same degraded faces as the per-preset figures on its card
        card["val_accuracy_by_preset"] = cnn.preset_accuracies(model, val.images, val.labels, "cpu",
                                                               seed=card["config"].get("seed") or 0, precision="bf16")
    card |= {"hardware": cpu_name(), "torch": torch.__version__}
    a.average_into.parent.mkdir(parents=True, exist_ok=True)
    save_weights(a.average_into, model.state_dict(), card)
    a.average_into.with_suffix(".json").write_text(json.dumps(card, indent=2))
    members = ", ".join(f"{m['weights']} {m['val_accuracy']:.4f}" for m in card["weight_average_of"])
    print(f"PublicTest accuracy {card['val_accuracy']:.4f} ({a.tta} TTA) of the mean weights of {members}: {a.average_into}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
