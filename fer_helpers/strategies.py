"""Restore, or train robust? The practitioner's four strategies on the same faces (notebook 06).

For every preset that the run both degrades and restores: the clean-trained CNN (``cnn``) and the CNN
trained with the study's degradations as augmentation (``cnn_robust``), each on the degraded faces and on
the faces restored by one restorer fixed in advance (``statistics.comparison_restorer``, default
``unet_auto``: the restorer that beat every classical filter on all 26 presets of PublicTest, see
models/unet_denoiser/README.md). Accuracy with 95% bootstrap intervals; McNemar tests on the same faces
between the strategies that answer the practitioner's questions, Holm-corrected together; and the robust
model's cost on clean faces.

Pure functions on the two CNNs' per-face outcomes (:class:`fer_helpers.scoring.Outcomes`) and the run's
preset table; :mod:`fer_helpers.stages.findings` reads them from a run folder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import stats
from .degrade import FAMILY_NAMES
from .scoring import Outcomes

CLEAN_CNN, ROBUST_CNN = "cnn", "cnn_robust"
SEP = "|"

#: (a, b): the question each paired test answers, as "a vs b"
QUESTIONS = (
    ("robust, unrestored", "clean, restored"),  # train robust instead of restoring?
    ("clean, restored", "clean, unrestored"),  # does restoring help the clean model?
    ("robust, unrestored", "clean, unrestored"),  # does robust training help without a restorer?
    ("robust, restored", "robust, unrestored"),  # does restoring still help the robust model?
)


@dataclass
class Comparison:
    restorer: str
    chosen: str  # how the restorer was chosen
    accuracy: pd.DataFrame  # preset, family, severity, strategy, accuracy, accuracy_lo, accuracy_hi
    tests: pd.DataFrame  # preset, a, b, difference [lo, hi], p, p_holm, significant
    clean_cost: dict  # the robust CNN vs the clean CNN on clean faces


def compare(clean: Outcomes, robust: Outcomes, presets: pd.DataFrame, restorer: str = "unet_auto", n_boot: int = 1000,
            seed: int = 0) -> Comparison | None:
    """The four-way comparison of the clean-trained and the robust CNN (``presets``: the run's
    ``degradation/presets.csv``), or None when no preset was restored."""
    restorers = sorted({k.split(SEP)[0] for k in clean.pred if k.split(SEP)[1] != "clean"} - {"none"})
    chosen = "fixed in advance (statistics.comparison_restorer, chosen on PublicTest)"
    if restorer not in restorers:
        if not restorers:
            return None
        gains = {r: np.mean([clean.correct(k).mean() - clean.correct(f"none{SEP}{k.split(SEP)[1]}").mean()
                             for k in clean.pred if k.startswith(f"{r}{SEP}") and not k.endswith(f"{SEP}clean")]) for r in restorers}
        restorer, chosen = max(gains, key=gains.get), (f"{restorer} was not run: the restorer with the largest mean gain "
                                                       f"for the clean CNN on these faces (selected on them)")
    presets = presets.set_index("preset")
    keys = {"clean, unrestored": ("none", clean), "clean, restored": (restorer, clean),
            "robust, unrestored": ("none", robust), "robust, restored": (restorer, robust)}
    rows, tests = [], []
    for p in [k.split(SEP)[1] for k in clean.pred if k.startswith(f"{restorer}{SEP}") and not k.endswith(f"{SEP}clean")]:
        if f"{restorer}{SEP}{p}" not in robust.pred:
            continue
        correct = {s: o.correct(f"{r}{SEP}{p}") for s, (r, o) in keys.items()}
        for s, (r, o) in keys.items():
            b = stats.bootstrap_accuracy_f1(o.labels, o.pred[f"{r}{SEP}{p}"], n_boot, seed)
            rows.append({"preset": p, "family": presets.loc[p, "family"], "severity": presets.loc[p, "severity"], "strategy": s,
                         "accuracy": b["accuracy"], "accuracy_lo": b["accuracy_lo"], "accuracy_hi": b["accuracy_hi"]})
        for a, b in QUESTIONS:
            tests.append(_paired(p, a, b, correct[a], correct[b], n_boot, seed))
    if not rows:
        return None
    tests_df = pd.DataFrame(tests)
    reject, adj = stats.holm(tests_df["p"].to_numpy())
    tests_df["p_holm"], tests_df["significant"] = adj, reject
    cost = _paired("clean", "robust CNN", "clean CNN", robust.correct(f"none{SEP}clean"), clean.correct(f"none{SEP}clean"), n_boot, seed)
    return Comparison(restorer, chosen, pd.DataFrame(rows), tests_df, cost)


def _paired(preset: str, a: str, b: str, ca: np.ndarray, cb: np.ndarray, n_boot: int, seed: int) -> dict:
    lo, hi = stats.paired_difference_ci(ca, cb, n_boot, seed)
    return {"preset": preset, "a": a, "b": b, "accuracy_a": ca.mean(), "accuracy_b": cb.mean(), "difference": ca.mean() - cb.mean(),
            "difference_lo": lo, "difference_hi": hi, **stats.mcnemar_test(ca, cb)}


def summary(c: Comparison) -> pd.DataFrame:
    """One row per preset: each strategy's accuracy [95% CI], the best strategy, and whether training robust
    beats restoring (robust unrestored vs clean restored, Holm-corrected McNemar)."""
    fmt = lambda r: f"{r['accuracy']:.1%} [{r['accuracy_lo']:.1%}, {r['accuracy_hi']:.1%}]"  # noqa: E731
    rows = []
    for p, g in c.accuracy.groupby("preset", sort=False):
        row = {"preset": p} | {s: fmt(r) for s, r in g.set_index("strategy").iterrows()}
        row["best strategy"] = g.loc[g["accuracy"].idxmax(), "strategy"]
        t = c.tests[(c.tests["preset"] == p) & (c.tests["a"] == QUESTIONS[0][0]) & (c.tests["b"] == QUESTIONS[0][1])].iloc[0]
        verdict = "significant" if t["significant"] else "not significant"
        row["robust vs restoring"] = f"{100 * t['difference']:+.1f} points [{100 * t['difference_lo']:+.1f}, {100 * t['difference_hi']:+.1f}], {verdict} ({stats.format_p(t['p_holm'])})"
        rows.append(row)
    return pd.DataFrame(rows)


def sentence(c: Comparison) -> str:
    """The comparison in the verdict: per family, which strategy wins, and the robust model's cost on clean faces."""
    key = c.tests[(c.tests["a"] == QUESTIONS[0][0]) & (c.tests["b"] == QUESTIONS[0][1])]
    key = key.assign(family=key["preset"].map(c.accuracy.drop_duplicates("preset").set_index("preset")["family"]))
    parts = []
    for fam, g in key.groupby("family", sort=False):
        robust_wins, restore_wins = int((g["significant"] & (g["difference"] > 0)).sum()), int((g["significant"] & (g["difference"] < 0)).sum())
        name = FAMILY_NAMES.get(fam, fam)
        if robust_wins and not restore_wins:
            parts.append(f"{name}: training robust beats restoring on {robust_wins} of {len(g)} presets")
        elif restore_wins and not robust_wins:
            parts.append(f"{name}: restoring beats training robust on {restore_wins} of {len(g)} presets")
        elif robust_wins and restore_wins:
            parts.append(f"{name}: mixed (robust better on {robust_wins}, restoring on {restore_wins} of {len(g)} presets)")
        else:
            parts.append(f"{name}: no significant difference ({len(g)} preset{'s' if len(g) != 1 else ''})")
    cost = c.clean_cost
    sig = "significant" if cost["p"] < 0.05 else "not significant"
    return (f"Restore or train robust (the clean CNN with {c.restorer} vs the robust CNN without a restorer): " + "; ".join(parts)
            + f". On clean faces the robust CNN differs from the clean one by {100 * cost['difference']:+.1f} points "
            f"[{100 * cost['difference_lo']:+.1f}, {100 * cost['difference_hi']:+.1f}] ({sig}, {stats.format_p(cost['p'])}).")


def curves(clean: Outcomes, robust: Outcomes, presets: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Accuracy vs severity of the clean and the robust CNN on unrestored faces, for every single-op family
    (the restored presets are too few for curves): what robust training buys along each severity axis."""
    presets = presets[presets["family"] != presets["preset"]]  # chains have no severity axis
    rows = []
    for o, label in ((clean, "clean CNN"), (robust, "robust CNN")):
        for _, p in presets.iterrows():
            key = f"none{SEP}{p['preset']}"
            if key in o.pred:
                b = stats.bootstrap_accuracy_f1(o.labels, o.pred[key], n_boot, seed)
                rows.append({"classifier": "clean vs robust CNN", "model": label, "condition": p["preset"], "family": p["family"],
                             "severity": p["severity"], "accuracy": b["accuracy"], "accuracy_lo": b["accuracy_lo"],
                             "accuracy_hi": b["accuracy_hi"]})
    return pd.DataFrame(rows)
