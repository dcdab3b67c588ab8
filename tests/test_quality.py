import numpy as np
import pandas as pd
import pytest

from fer_helpers import quality
from fer_helpers.config import QualityThresholds
from fer_helpers.degrade import PRESETS, apply_preset


def test_laplacian_variance_matches_opencv(rng):
    cv2 = pytest.importorskip("cv2")
    x = rng.integers(0, 256, size=(3, 48, 48), dtype=np.uint8)
    ours = quality.laplacian_variance(x)
    ref = [cv2.Laplacian(im.astype(np.float64), cv2.CV_64F).var() for im in x]
    np.testing.assert_allclose(ours, ref, rtol=1e-10)
    assert quality.laplacian_variance(np.full((1, 48, 48), 77, np.uint8))[0] == 0


def test_noise_sigma_recovers_known_noise(rng):
    yy, xx = np.mgrid[0:128, 0:128]
    smooth = 60 + xx + 0.5 * yy  # a ramp: no high-frequency content of its own
    for sigma in (5.0, 15.0):
        img = np.clip(smooth + rng.normal(0, sigma, smooth.shape), 0, 255).round().astype(np.uint8)[None]
        est = quality.noise_sigma(img)[0]
        assert est == pytest.approx(sigma, rel=0.12)


def test_blank_image_has_no_noise_no_signal_and_is_flagged():
    blank = np.full((1, 48, 48), 120, np.uint8)
    m = quality.measure(blank)
    assert m["noise_sigma"].iloc[0] == pytest.approx(0, abs=1e-9)
    assert np.isfinite(m["snr_db"].iloc[0]) and m["snr_db"].iloc[0] < 0  # no signal at all
    v = quality.verdict(m, QualityThresholds(laplacian_var_min=100, snr_db_min=10, blockiness_max=1.2))
    assert v["verdict"].iloc[0] == "blur+noise"


def test_snr_db_known_values():
    x = np.zeros((1, 10, 10), np.uint8)
    x[0, :, 5:] = 100  # variance 2500
    assert quality.snr_db(x, np.array([5.0]))[0] == pytest.approx(10 * np.log10((2500 - 25) / 25))


def test_blockiness_detects_jpeg(sample_faces):
    x = sample_faces.images[:12]
    clean = quality.blockiness(x)
    from fer_helpers.degrade import jpeg

    blocky = quality.blockiness(jpeg(x, [], quality=10))
    assert np.median(clean) < 1.1 and np.all(blocky > clean) and np.median(blocky) > 1.4
    flat = np.full((1, 48, 48), 50, np.uint8)
    assert quality.blockiness(flat)[0] == pytest.approx(1.0)


def test_verdict_flags_and_disabled_checks():
    s = pd.DataFrame({"laplacian_var": [500, 50, 500, 500], "noise_sigma": [1, 1, 20, 1], "snr_db": [30, 30, 5, 30],
                      "blockiness": [1.0, 1.0, 1.0, 2.0]})
    v = quality.verdict(s, QualityThresholds(laplacian_var_min=100, snr_db_min=10, blockiness_max=1.2))
    assert v["verdict"].tolist() == ["ok", "blur", "noise", "jpeg"]
    assert v["flagged"].tolist() == [False, True, True, True]
    v2 = quality.verdict(s, QualityThresholds(laplacian_var_min=100, snr_db_min=None, blockiness_max=None))
    assert v2["flagged"].tolist() == [False, True, False, False]


def test_detector_table_is_paired_and_correct(sample_faces):
    x, ids = sample_faces.images[:20], list(sample_faces.ids[:20])
    frames = []
    for cond, imgs in {"clean": x, "noise_25": apply_preset(x, ids, PRESETS["noise_25"], 0),
                       "blur_3": apply_preset(x, ids, PRESETS["blur_3"], 0)}.items():
        m = quality.measure(imgs)
        m.insert(0, "condition", cond)
        m.insert(0, "id", ids)
        frames.append(m.sample(frac=1, random_state=1))  # shuffled rows: the table must pair by id
    scores = quality.verdict(pd.concat(frames), QualityThresholds(laplacian_var_min=150, snr_db_min=20, blockiness_max=None))
    det = quality.detector_table(scores).set_index("condition")
    assert det.loc["noise_25", "auc_noise"] == 1.0 and det.loc["blur_3", "auc_blur"] == 1.0
    assert det.loc["noise_25", "n_pairs"] == 20
    clean_flag = scores[scores.condition == "clean"]["flagged"].mean()
    assert det.loc["blur_3", "false_alarm_rate"] == pytest.approx(clean_flag)
    roc = quality.roc_points(scores, "blur_3", "blur")
    assert roc["tpr"].iloc[-1] == 1.0 and roc["fpr"].iloc[0] == 0.0
