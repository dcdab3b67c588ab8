"""Statistics on small cases with known answers."""

import numpy as np
import pytest
from scipy.stats import binomtest

from fer_helpers import stats


def test_mcnemar_exact_matches_the_binomial_test_on_discordant_pairs():
    # 10 faces right only under A, 2 right only under B, 20 right under both, 8 wrong under both
    a = np.array([1] * 10 + [0] * 2 + [1] * 20 + [0] * 8, bool)
    b = np.array([0] * 10 + [1] * 2 + [1] * 20 + [0] * 8, bool)
    r = stats.mcnemar_test(a, b)
    assert (r["only_a_right"], r["only_b_right"]) == (10, 2)
    assert r["p"] == pytest.approx(binomtest(2, 12, 0.5).pvalue)
    assert stats.mcnemar_test(a, a)["p"] == 1.0


def test_holm_known_case():
    reject, adj = stats.holm([0.01, 0.04, 0.03, 0.005])
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, then max(0.06, 0.04*1)=0.06
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02])
    assert reject.tolist() == [True, False, False, True]


def test_bootstrap_interval_covers_and_is_seeded():
    from sklearn.metrics import accuracy_score

    y = np.zeros(400, int)
    pred = np.r_[np.zeros(300, int), np.ones(100, int)]  # accuracy 0.75
    est, lo, hi = stats.bootstrap_ci(y, pred, accuracy_score, n_boot=500, seed=1)
    assert est == 0.75 and lo < 0.75 < hi
    # binomial standard error sqrt(.75*.25/400) = 0.0217: the 95% interval is about +-0.042
    assert hi - lo == pytest.approx(2 * 1.96 * 0.0217, abs=0.012)
    assert stats.bootstrap_ci(y, pred, accuracy_score, n_boot=500, seed=1) == (est, lo, hi)


def test_ece_perfect_and_overconfident():
    y = np.array([0, 1, 2, 3])
    perfect = np.eye(7)[y]
    assert stats.expected_calibration_error(y, perfect) == 0.0
    over = np.full((4, 7), 0.0)
    over[:, 0] = 0.95
    over[:, 1:] = 0.05 / 6
    # always predicts class 0 with 0.95 confidence; right once in four: |0.25 - 0.95| = 0.70
    assert stats.expected_calibration_error(y, over) == pytest.approx(0.70)


def test_ovr_auc_and_correlation_and_paired_runs():
    y = np.array([0, 0, 1, 1, 2, 2, 3, 4, 5, 6])
    proba = np.eye(7)[y] * 0.9 + 0.1 / 7
    auc = stats.ovr_auc(y, proba)
    assert auc["macro"] == 1.0 and auc["happy"] == 1.0
    c = stats.correlation([1, 2, 3, 4, 5], [2, 4, 6, 8, 11])
    assert c["spearman_rho"] == pytest.approx(1.0) and c["pearson_r"] > 0.99
    r = stats.paired_over_runs([0.61, 0.63, 0.62, 0.64, 0.60], [0.58, 0.61, 0.59, 0.60, 0.575])
    # all five differences positive: the exact two-sided Wilcoxon p is 2/2^5
    assert r["runs"] == 5 and r["ttest_p"] < 0.01 and r["wilcoxon_p"] == pytest.approx(0.0625)
    assert np.isnan(stats.paired_over_runs([0.6], [0.5])["wilcoxon_p"])


def test_format_p():
    assert stats.format_p(0.0004) == "p < 0.001" and stats.format_p(0.0312) == "p = 0.031"


def test_vectorised_bootstrap_replicates_equal_scikit_learn(rng):
    from sklearn.metrics import accuracy_score, f1_score

    y = rng.integers(0, 7, 300)
    pred = np.where(rng.random(300) < 0.6, y, rng.integers(-1, 7, 300))  # includes -1: no answer
    b = stats.bootstrap_accuracy_f1(y, pred, n_boot=50, seed=3)
    acc, f1 = b["_replicates"]
    idx = np.random.default_rng(3).integers(0, 300, size=(50, 300))
    for k in (0, 17, 49):
        yy, pp = y[idx[k]], pred[idx[k]]
        assert acc[k] == pytest.approx(accuracy_score(yy, pp))
        assert f1[k] == pytest.approx(f1_score(yy, pp, labels=range(7), average="macro", zero_division=0))
    assert b["accuracy_lo"] < b["accuracy"] < b["accuracy_hi"] and b["macro_f1_lo"] < b["macro_f1"] < b["macro_f1_hi"]


def test_findings_sentences_never_read_from_x_to_x():
    import pandas as pd

    from fer_helpers import comparisons

    best = pd.DataFrame([{"a": "auto", "classifier": "cnn", "condition": "seed003_low", "difference": -0.0003,
                          "accuracy_b": 0.51632, "accuracy_a": 0.51602, "p_holm": 1.0, "marked": False, "significant": False}])
    tests = pd.DataFrame(columns=["test", "classifier", "condition", "difference", "accuracy_a", "accuracy_b", "p_holm", "significant", "a"])
    corr = pd.DataFrame(columns=["classifier", "restorer", "spearman_rho", "spearman_p", "n"])
    (line,) = comparisons.sentences(tests, best, corr)
    assert line == "auto lowers cnn accuracy on seed003_low from 51.63% to 51.60% (not significant, p = 1.000, Holm)."


def test_paired_difference_interval_matches_resampling_faces():
    """The multinomial shortcut draws the same distribution as resampling face indices."""
    rng = np.random.default_rng(3)
    a = rng.random(400) < 0.6
    b = a.copy()
    flip = rng.choice(400, 60, replace=False)
    b[flip[:45]] = ~b[flip[:45]]  # a mix of faces only a or only b gets right
    b[flip[45:]] = True
    lo, hi = stats.paired_difference_ci(a, b, n_boot=4000, seed=1)
    idx = np.random.default_rng(2).integers(0, 400, size=(4000, 400))
    boots = (a[idx].astype(float) - b[idx]).mean(1)
    assert lo == pytest.approx(np.quantile(boots, 0.025), abs=0.006)
    assert hi == pytest.approx(np.quantile(boots, 0.975), abs=0.006)
    assert lo < a.mean() - b.mean() < hi
    assert (lo, hi) == stats.paired_difference_ci(a, b, n_boot=4000, seed=1)  # seeded
    assert stats.paired_difference_ci(a, a) == (0.0, 0.0)


def _tests_table(rows):
    import pandas as pd

    cols = {"test": "restoration", "a": "unet", "b": "none", "accuracy_a": 0.6, "accuracy_b": 0.5, "p_holm": 0.01}
    return pd.DataFrame([cols | r for r in rows])


def test_verdict_names_the_faces_each_family_harm_and_gate():
    from fer_helpers import comparisons

    t = _tests_table([
        {"classifier": "cnn", "condition": "noise_25", "difference": 0.08, "difference_lo": 0.05, "difference_hi": 0.11, "significant": True},
        {"classifier": "cnn", "condition": "noise_35", "difference": 0.12, "difference_lo": 0.09, "difference_hi": 0.15, "significant": True},
        {"classifier": "vit", "condition": "noise_25", "difference": 0.01, "difference_lo": -0.01, "difference_hi": 0.03, "significant": False},
        {"classifier": "cnn", "condition": "jpeg_10", "difference": -0.04, "difference_lo": -0.06, "difference_hi": -0.02, "significant": True},
        {"classifier": "vit", "condition": "jpeg_10", "difference": 0.0, "difference_lo": -0.01, "difference_hi": 0.01, "significant": False},
        {"test": "gate", "a": "unet+gate", "b": "unet", "classifier": "cnn", "condition": "noise_25", "difference": 0.02,
         "difference_lo": 0.01, "difference_hi": 0.03, "significant": True},
    ])
    text = comparisons.verdict(t, {"noise_25": "gaussian_noise", "noise_35": "gaussian_noise", "jpeg_10": "jpeg"},
                            {"faces_after_audit_and_subsetting": 3309, "note": "PublicTest only", "selected_on_these": True})
    assert text.startswith("Scored on 3,309 faces: PublicTest only; the models were selected on these faces.")
    assert "Gaussian noise: restoration significantly raised the accuracy of cnn (+12.0 points [+9.0, +15.0], unet on noise_35); " \
           "for vit no restorer did." in text
    assert "JPEG: no restorer significantly raised any classifier's accuracy." in text
    assert "significantly lowered accuracy in 1 of 5 restored comparisons (the largest: unet on jpeg_10 for cnn, -4.0 points" in text
    assert "significant difference in 1 of 1 comparisons, better than restoring every face in 1 of them." in text
    assert "Nothing" not in text


def test_verdict_says_why_when_nothing_is_significant():
    from fer_helpers import comparisons

    t = _tests_table([{"classifier": "cnn", "condition": "noise_25", "difference": 0.14, "difference_lo": -0.1,
                       "difference_hi": 0.4, "significant": False}])
    text = comparisons.verdict(t, {"noise_25": "gaussian_noise"}, {"faces": 7, "note": "all 7 faces of test/"})
    assert "Nothing that restoration or the gate did was significant. 7 faces are too few" in text
    assert "Restoration never significantly lowered accuracy (1 restored comparisons)." in text


def test_headline_summary_says_why_a_best_restorer_cell_is_empty():
    import pandas as pd

    from fer_helpers import comparisons

    ci = {"accuracy_lo": 0.4, "accuracy_hi": 0.6, "macro_f1": 0.5, "macro_f1_lo": 0.4, "macro_f1_hi": 0.6, "kappa": 0.3}
    head = pd.DataFrame([{"classifier": "cnn", "condition": c, "restorer": r, "accuracy": 0.5, **ci}
                         for c, r in [("clean", "none"), ("noise_25", "none"), ("noise_25", "unet"), ("jpeg_10", "none")]])
    best = pd.DataFrame([{"classifier": "cnn", "condition": "noise_25", "a": "unet", "marked": False, "p_holm": 0.3}])
    got = comparisons.headline_summary(head, best).set_index("condition")["best restorer (significant)"]
    assert got.to_dict() == {"clean": "", "noise_25": "none significant", "jpeg_10": "not restored in this run"}
