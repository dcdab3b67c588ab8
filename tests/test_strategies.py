"""Restore, or train robust: the four-way comparison on hand-made per-face outcomes with known answers."""

import numpy as np
import pandas as pd
import pytest

from fer_helpers import strategies
from fer_helpers.stages import findings
from fer_helpers.io import RunDir


def _fake_run(tmp_path, right: dict[str, dict[str, np.ndarray]], labels: np.ndarray) -> RunDir:
    """A run folder holding per-face outcomes: ``right[classifier][key]`` says which faces it gets right."""
    run = RunDir(tmp_path)
    run.path("classification").mkdir(parents=True)
    run.path("degradation").mkdir(parents=True)
    pd.DataFrame({"preset": ["noise_25", "jpeg_10"], "family": ["gaussian_noise", "jpeg"], "severity": [25, 10]}).to_csv(
        run.path("degradation", "presets.csv"), index=False)
    pd.DataFrame({"classifier": list(right), "available": True, "family": "cnn"}).to_csv(
        run.path("classification", "baselines_classifiers.csv"), index=False)
    for clf, keys in right.items():
        proba = np.zeros((len(keys), len(labels), 7), np.float32)
        for k, ok in enumerate(keys.values()):
            proba[k, np.arange(len(labels)), np.where(ok, labels, (labels + 1) % 7)] = 1.0
        np.savez(run.path("classification", f"{clf}.npz"), ids=np.arange(len(labels)).astype(str), labels=labels,
                 keys=np.array(list(keys)), proba=proba)
    return run


def _hits(n: int, k: int) -> np.ndarray:
    return np.arange(n) < k


def test_four_strategies_on_the_same_faces_and_the_robust_cost(tmp_path):
    n, labels = 400, np.arange(400) % 7
    right = {
        "cnn": {"none|clean": _hits(n, 280), "none|noise_25": _hits(n, 120), "unet_auto|noise_25": _hits(n, 200),
                "none|jpeg_10": _hits(n, 200), "unet_auto|jpeg_10": _hits(n, 204)},
        "cnn_robust": {"none|clean": _hits(n, 276), "none|noise_25": _hits(n, 240), "unet_auto|noise_25": _hits(n, 236),
                       "none|jpeg_10": _hits(n, 202), "unet_auto|jpeg_10": _hits(n, 203)},
    }
    c = findings.strategy_comparison(_fake_run(tmp_path, right, labels), "unet_auto", n_boot=500, seed=0)
    assert c.restorer == "unet_auto" and c.chosen.startswith("fixed in advance")
    acc = c.accuracy.set_index(["preset", "strategy"])["accuracy"]
    assert acc[("noise_25", "clean, restored")] == pytest.approx(0.5) and acc[("noise_25", "robust, unrestored")] == pytest.approx(0.6)
    key = c.tests[(c.tests["a"] == "robust, unrestored") & (c.tests["b"] == "clean, restored")].set_index("preset")
    assert key.loc["noise_25", "difference"] == pytest.approx(0.1) and key.loc["noise_25", "significant"]  # 40 faces one way, 0 the other
    assert not key.loc["jpeg_10", "significant"]
    assert (c.tests["p_holm"] >= c.tests["p"] - 1e-12).all() and len(c.tests) == 2 * len(strategies.QUESTIONS)
    assert c.clean_cost["difference"] == pytest.approx(-0.01)
    table = strategies.summary(c).set_index("preset")
    assert table.loc["noise_25", "best strategy"] == "robust, unrestored"
    assert table.loc["noise_25", "robust vs restoring"].startswith("+10.0 points [")
    text = strategies.sentence(c)
    assert "Gaussian noise: training robust beats restoring on 1 of 1 presets" in text
    assert "JPEG: no significant difference (1 preset)" in text and "-1.0 points" in text


def test_without_the_fixed_restorer_the_best_one_is_chosen_and_said_so(tmp_path):
    n, labels = 70, np.arange(70) % 7
    keys = {"none|clean": _hits(n, 50), "none|noise_25": _hits(n, 20), "median|noise_25": _hits(n, 30), "nlm|noise_25": _hits(n, 25)}
    c = findings.strategy_comparison(_fake_run(tmp_path, {"cnn": keys, "cnn_robust": keys}, labels), "unet_auto", n_boot=200)
    assert c.restorer == "median" and "selected on them" in c.chosen


def test_no_comparison_without_the_robust_model(tmp_path):
    n, labels = 14, np.arange(14) % 7
    run = _fake_run(tmp_path, {"cnn": {"none|clean": _hits(n, 5), "unet_auto|noise_25": _hits(n, 5), "none|noise_25": _hits(n, 5)}}, labels)
    assert findings.strategy_comparison(run) is None and findings.robust_curves(run).empty
