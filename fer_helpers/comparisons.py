"""Paired comparisons of the study's conditions and what they say, on per-face outcomes (notebook 06's numbers).

Pure functions on :class:`fer_helpers.scoring.Outcomes` (each classifier's per-face answers under every
(restorer, condition) key) and on the tables they give; reading them from a run folder is the job of
:mod:`fer_helpers.stages.findings`.

Paired comparisons are on the same faces: McNemar's test on right/wrong outcomes, Holm-corrected within
each classifier's family of tests; 95% bootstrap intervals resample faces with the run's seed. Every number
in a sentence is read from these tables.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from . import scoring, stats
from .data import CLASSES, DEMONSTRATION_FACES
from .degrade import FAMILY_NAMES
from .scoring import Outcomes

SEP = scoring.KEY_SEP


def headline_table(outcomes: Mapping[str, Outcomes], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Classifier x condition (clean, each preset unrestored, each preset restored by each restorer) with
    accuracy, macro-F1 and kappa, and 95% bootstrap intervals for accuracy and macro-F1."""
    from sklearn.metrics import cohen_kappa_score

    rows = []
    for clf, o in outcomes.items():
        for key, pred in o.pred.items():
            restorer, condition = key.split(SEP)
            b = stats.bootstrap_accuracy_f1(o.labels, pred, n_boot, seed)
            b.pop("_replicates")
            rows.append({"classifier": clf, "condition": condition, "restorer": restorer, "faces": len(pred), **b,
                         "kappa": cohen_kappa_score(o.labels, pred)})
    return pd.DataFrame(rows)


def paired_tests(outcomes: Mapping[str, Outcomes], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """McNemar tests on the same faces, Holm-corrected per classifier:
    degraded vs clean (what the degradation costs), restored vs degraded (what each restorer wins back),
    and the gate: ``r+gate`` vs ``r``. ``difference_lo``/``difference_hi``: the paired bootstrap 95% interval
    of the accuracy difference."""
    rows = []
    for clf, o in outcomes.items():
        keys = list(o.pred)
        presets = sorted({k.split(SEP)[1] for k in keys} - {"clean"})
        restorers = [r for r in dict.fromkeys(k.split(SEP)[0] for k in keys) if r != "none"]
        tests = []
        for p in presets:
            deg = f"none{SEP}{p}"
            if deg in o.pred and f"none{SEP}clean" in o.pred:
                tests.append(("degradation", p, "none", "clean", deg, f"none{SEP}clean"))
            for r in restorers:
                if f"{r}{SEP}{p}" in o.pred:
                    tests.append(("restoration", p, r, "none", f"{r}{SEP}{p}", deg))
                if r.endswith("+gate") and f"{r[:-5]}{SEP}{p}" in o.pred:
                    tests.append(("gate", p, r, r[:-5], f"{r}{SEP}{p}", f"{r[:-5]}{SEP}{p}"))
        for r in restorers:  # restorers applied to clean faces: the harm the gate should avoid
            if f"{r}{SEP}clean" in o.pred:
                tests.append(("restoration", "clean", r, "none", f"{r}{SEP}clean", f"none{SEP}clean"))
        for kind, preset, a, b, ka, kb in tests:
            m = stats.mcnemar_test(o.correct(ka), o.correct(kb))
            lo, hi = stats.paired_difference_ci(o.correct(ka), o.correct(kb), n_boot, seed)
            rows.append({"classifier": clf, "test": kind, "condition": preset, "a": a, "b": b,
                         "accuracy_a": o.correct(ka).mean(), "accuracy_b": o.correct(kb).mean(),
                         "difference": o.correct(ka).mean() - o.correct(kb).mean(),
                         "difference_lo": lo, "difference_hi": hi, **m})
    out = pd.DataFrame(rows)
    if len(out):
        out["p_holm"] = np.nan
        out["significant"] = False
        for clf, idx in out.groupby("classifier").groups.items():
            reject, adj = stats.holm(out.loc[idx, "p"].to_numpy())
            out.loc[idx, "p_holm"] = adj
            out.loc[idx, "significant"] = reject
    return out


def best_restorers(tests: pd.DataFrame) -> pd.DataFrame:
    """Per (classifier, preset): the restorer with the largest accuracy gain over the unrestored faces, and
    whether that gain is significant after Holm's correction (only then is it called the best)."""
    r = tests[(tests["test"] == "restoration") & (tests["condition"] != "clean")]
    if r.empty:
        return r
    best = r.loc[r.groupby(["classifier", "condition"])["difference"].idxmax()]
    return best.assign(marked=best["significant"] & (best["difference"] > 0)).reset_index(drop=True)


def best_overall(best: pd.DataFrame, default: str = "auto") -> str:
    """The restorer whose best-per-preset gains are largest on average (galleries and Grad-CAM show its work)."""
    return str(best.groupby("a")["difference"].mean().idxmax()) if len(best) else default


def psnr_vs_accuracy(restoration_metrics: pd.DataFrame, tests: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (classifier, restorer): correlation across presets of the mean PSNR gain and the accuracy gain
    (``restoration_metrics``: notebook 03's per-face table); returns (correlations, the per-preset points)."""
    rest = restoration_metrics[restoration_metrics["condition"] != "clean"]
    rest = rest.assign(gain=(rest["psnr"] - rest["psnr_degraded"]).where(np.isfinite(rest["psnr"]) & np.isfinite(rest["psnr_degraded"])))
    psnr_gain = rest.groupby(["restorer", "condition"])["gain"].mean().rename("psnr_gain").reset_index()
    r = tests[(tests["test"] == "restoration") & (tests["condition"] != "clean")].rename(columns={"a": "restorer"})
    merged = r.merge(psnr_gain, on=["restorer", "condition"], how="inner")
    rows = []
    for (clf, rst), g in merged.groupby(["classifier", "restorer"]):
        rows.append({"classifier": clf, "restorer": rst, **stats.correlation(g["psnr_gain"], g["difference"])})
    return pd.DataFrame(rows), merged


def family_robustness(tests: pd.DataFrame, classifiers_table: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy lost to degradation per classifier family (ViT, CNN, landmarks)."""
    d = tests[tests["test"] == "degradation"].merge(classifiers_table[["classifier", "family"]], on="classifier", how="left")
    return d.groupby(["family", "classifier"])["difference"].mean().rename("mean accuracy change under degradation").reset_index()


def _from_to(before: float, after: float) -> str:
    """"from 51.6% to 51.4%", with as many decimals as it takes for two different values to read differently."""
    for d in (1, 2, 3):
        b, a = f"{before:.{d}%}", f"{after:.{d}%}"
        if b != a:
            break
    return f"from {b} to {a}"


def _significance(significant: bool, p: float, correction: str = "Holm") -> str:
    """Every p-value in a sentence reads the same way: "significant, p = 0.003, Holm" or "not significant, ..."."""
    return f"{'significant' if significant else 'not significant'}, {stats.format_p(p)}" + (f", {correction}" if correction else "")


def sentences(tests: pd.DataFrame, best: pd.DataFrame, corr: pd.DataFrame) -> list[str]:
    """Findings as sentences, every number taken from the tables (percentages of faces, Holm-corrected p)."""
    out = []
    deg = tests[tests["test"] == "degradation"]
    for clf, g in deg.groupby("classifier"):
        worst = g.loc[g["difference"].idxmin()]
        if worst["difference"] < 0:
            out.append(f"{clf}: the costliest degradation is {worst['condition']}, which lowers accuracy "
                       f"{_from_to(worst['accuracy_b'], worst['accuracy_a'])} ({_significance(worst['significant'], worst['p_holm'])}).")
        else:
            out.append(f"{clf}: no degradation lowers its accuracy ({worst['accuracy_b']:.1%} on clean faces).")
    for _, b in best[best["difference"] != 0].iterrows():
        verb = "raises" if b["difference"] > 0 else "lowers"
        out.append(f"{b['a']} {verb} {b['classifier']} accuracy on {b['condition']} {_from_to(b['accuracy_b'], b['accuracy_a'])} "
                   f"({_significance(b['significant'], b['p_holm'])}).")
    gate = tests[tests["test"] == "gate"]
    for (clf, a), g in gate.groupby(["classifier", "a"]):
        out.append(f"{clf}, {a}: restoring only the flagged faces differs significantly from restoring all of them on "
                   f"{int(g['significant'].sum())} of {len(g)} presets (mean accuracy difference {g['difference'].mean():+.1%}).")
    harm = tests[(tests["test"] == "restoration") & (tests["condition"] == "clean")]
    for _, h in harm[harm["significant"]].iterrows():
        out.append(f"{h['a']} applied to clean faces changes {h['classifier']} accuracy {_from_to(h['accuracy_b'], h['accuracy_a'])} "
                   f"({_significance(True, h['p_holm'])}).")
    for _, c in corr.dropna(subset=["spearman_rho"]).iterrows():
        out.append(f"{c['classifier']}, {c['restorer']}: across presets, PSNR gain and accuracy gain correlate with "
                   f"Spearman rho = {c['spearman_rho']:.2f} ({_significance(c['spearman_p'] < 0.05, c['spearman_p'], '')}, n = {c['n']}).")
    return out


def _effect(t: pd.Series) -> str:
    """"+5.2 points [+3.1, +7.4]": an accuracy difference and its paired 95% interval, in percentage points."""
    return f"{100 * t['difference']:+.1f} points [{100 * t['difference_lo']:+.1f}, {100 * t['difference_hi']:+.1f}]"


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def verdict(tests: pd.DataFrame, families: dict[str, str], evaluation: dict) -> str:
    """The study's answer in one paragraph, generated from the paired tests (Holm-corrected McNemar, paired
    bootstrap intervals): which faces were scored; per degradation family, which classifiers a restorer
    significantly helped and by how much; whether restoration ever significantly hurt; whether the gate mattered.
    ``families`` maps each preset to its family (``degradation/presets.csv``)."""
    faces = int(evaluation.get("faces_after_audit_and_subsetting", evaluation.get("faces", 0)))
    where = evaluation.get("note", "the run's faces")
    selected = "; the models were selected on these faces" if evaluation.get("selected_on_these") else ""
    out = [f"Scored on {faces:,} faces: {where}{selected}."]
    if tests.empty:
        return " ".join(out + ["No classifier could be scored, so there is no answer yet."])
    restored = tests[(tests["test"] == "restoration") & (tests["condition"] != "clean")]
    restored = restored.assign(family=restored["condition"].map(families))
    classifiers = list(dict.fromkeys(tests["classifier"]))
    for fam, g in restored.groupby("family", sort=False):
        helped, rest = [], []
        for clf in classifiers:
            wins = g[(g["classifier"] == clf) & g["significant"] & (g["difference"] > 0)]
            if len(wins):
                w = wins.loc[wins["difference"].idxmax()]
                helped.append(f"{clf} ({_effect(w)}, {w['a']} on {w['condition']})")
            elif (g["classifier"] == clf).any():
                rest.append(clf)
        name = FAMILY_NAMES.get(fam, fam)
        if helped:
            tail = f"; for {_join(rest)} no restorer did" if rest else ""
            out.append(f"{name}: restoration significantly raised the accuracy of {_join(helped)}{tail}.")
        else:
            out.append(f"{name}: no restorer significantly raised any classifier's accuracy.")
    hurt = restored[restored["significant"] & (restored["difference"] < 0)]
    if len(hurt):
        h = hurt.loc[hurt["difference"].idxmin()]
        out.append(f"Restoration significantly lowered accuracy in {len(hurt)} of {len(restored)} restored comparisons "
                   f"(the largest: {h['a']} on {h['condition']} for {h['classifier']}, {_effect(h)}).")
    elif len(restored):
        out.append(f"Restoration never significantly lowered accuracy ({len(restored)} restored comparisons).")
    on_clean = tests[(tests["test"] == "restoration") & (tests["condition"] == "clean") & tests["significant"]]
    if len(on_clean):
        worst = on_clean.loc[on_clean["difference"].idxmin()]
        out.append(f"Applied to clean faces, {len(on_clean)} restorer/classifier pairs changed accuracy significantly "
                   f"(the largest change: {worst['a']} for {worst['classifier']}, {_effect(worst)}).")
    gate = tests[tests["test"] == "gate"]
    if len(gate):
        sig = gate[gate["significant"]]
        better = int((sig["difference"] > 0).sum())
        out.append(f"The quality gate (restore only the faces the check flags) made a significant difference in {len(sig)} "
                   f"of {len(gate)} comparisons" + (f", better than restoring every face in {better} of them." if len(sig) else "."))
    if not tests["significant"].any() or not (restored["significant"].any() or gate["significant"].any()):
        why = (f" {faces:,} faces are too few to detect any but very large effects (a study needs at least "
               f"{DEMONSTRATION_FACES})." if faces < DEMONSTRATION_FACES else "")
        out.append("Nothing that restoration or the gate did was significant." + why)
    return " ".join(out)


def robustness(presets: pd.DataFrame, head: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per (classifier, restorer, preset) with each preset's family and severity (``presets``: the
    run's ``degradation/presets.csv``), for robustness curves."""
    presets = presets.rename(columns={"preset": "condition"})
    return head.merge(presets[["condition", "family", "severity"]], on="condition", how="inner").sort_values(["family", "severity"])


def flipped_faces(o: Outcomes, condition: str, restorer: str, n: int) -> tuple[np.ndarray, list[str]]:
    """Up to ``n`` faces whose answer restoration fixed (wrong -> right), then up to ``n`` it broke, with labels
    naming the true class and the two answers."""
    before, after = o.pred[f"none{SEP}{condition}"], o.pred[f"{restorer}{SEP}{condition}"]
    fixed = np.flatnonzero((before != o.labels) & (after == o.labels))[:n]
    broken = np.flatnonzero((before == o.labels) & (after != o.labels))[:n]
    picks = np.r_[fixed, broken].astype(int)
    name = lambda k: CLASSES[k] if k >= 0 else "no answer"  # noqa: E731
    labels = [f"{'fixed' if i in set(fixed) else 'broken'}: {CLASSES[o.labels[i]]} ({name(before[i])} -> {name(after[i])})" for i in picks]
    return picks, labels


def showcase(o: Outcomes, preset: str, restored: int = 2) -> list[str]:
    """Keys to compare for one classifier: clean, ``preset`` unrestored, and up to ``restored`` restorers on it."""
    keys = [k for k in (f"none{SEP}clean", f"none{SEP}{preset}") if k in o.proba]
    return keys + [k for k in o.proba if k.endswith(f"{SEP}{preset}") and not k.startswith(f"none{SEP}")][:restored]


def answered(o: Outcomes, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) of the faces the classifier answered under ``key`` (landmark models may not)."""
    ok = ~np.isnan(o.proba[key]).any(axis=1)
    return o.labels[ok], o.proba[key][ok]


def headline_summary(head: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """One row per classifier and condition: unrestored accuracy [CI], macro-F1 [CI], kappa, and the best restorer
    where its gain is significant (Holm), with its accuracy [CI]."""
    fmt = lambda r, m: f"{r[m]:.1%} [{r[m + '_lo']:.1%}, {r[m + '_hi']:.1%}]"  # noqa: E731
    rows = []
    for (clf, cond), g in head.groupby(["classifier", "condition"], sort=False):
        base = g[g["restorer"] == "none"].iloc[0]
        row = {"classifier": clf, "condition": cond, "accuracy": fmt(base, "accuracy"), "macro-F1": fmt(base, "macro_f1"),
               "kappa": round(float(base["kappa"]), 3), "best restorer (significant)": "", "restored accuracy": ""}
        tried = best[(best["classifier"] == clf) & (best["condition"] == cond)] if len(best) else best
        if cond != "clean":  # say why the column is blank: nothing significant, or no restorer ran on this preset
            row["best restorer (significant)"] = "none significant" if len(tried) else "not restored in this run"
        b = tried[tried["marked"]] if len(tried) else tried
        if len(b):
            r = g[g["restorer"] == b.iloc[0]["a"]].iloc[0]
            row.update({"best restorer (significant)": f"{b.iloc[0]['a']} ({stats.format_p(b.iloc[0]['p_holm'])})",
                        "restored accuracy": fmt(r, "accuracy")})
        rows.append(row)
    return pd.DataFrame(rows)
