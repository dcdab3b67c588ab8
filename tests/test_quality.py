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


def _many(faces, n=600):
    """``n`` faces (the sample repeated, each copy shifted in brightness) with distinct ids: enough rows for
    ``compute.map_threads`` to split."""
    reps = -(-n // len(faces.images))
    images = np.concatenate([np.clip(faces.images.astype(int) + k, 0, 255).astype(np.uint8) for k in range(reps)])[:n]
    ids = [f"{i}/{k}" for k in range(reps) for i in faces.ids][:n]
    return images, ids


def test_noise_sigma_is_scikit_images_estimator_face_by_face(sample_faces):
    from skimage.restoration import estimate_sigma

    x = sample_faces.images[:30]
    x = np.concatenate([x, apply_preset(x, sample_faces.ids[:30], PRESETS["seed000_chain"], 0),
                        np.full((1, 48, 48), 9, np.uint8), np.pad(x[:1, :, :20], ((0, 0), (0, 0), (0, 28)))])
    with pytest.warns(RuntimeWarning):  # scikit-image's NaN for the constant face
        ref = np.array([estimate_sigma(im.astype(np.float64), channel_axis=None) for im in x])
    assert np.isnan(ref[-2]) and quality.noise_sigma(x)[-2] == 0
    np.testing.assert_array_equal(quality.noise_sigma(x), np.nan_to_num(ref, nan=0.0))  # bit for bit


def test_laplacian_variance_equals_scipys_mirrored_correlation(rng):
    from scipy import ndimage

    kernel = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64)[None]
    for shape in [(5, 48, 48), (3, 7, 5), (2, 1, 6), (2, 6, 1)]:
        x = rng.integers(0, 256, size=shape, dtype=np.uint8)
        ref = ndimage.correlate(x.astype(np.float64), kernel, mode="mirror").reshape(len(x), -1).var(axis=1)
        np.testing.assert_array_equal(quality.laplacian_variance(x), ref)
    assert quality.laplacian_variance(np.zeros((0, 48, 48), np.uint8)).shape == (0,)


def test_blockiness_equals_its_float_definition(sample_faces):
    x = np.concatenate([sample_faces.images[:10], apply_preset(sample_faces.images[:10], sample_faces.ids[:10], PRESETS["jpeg_10"], 0)])
    f = x.astype(np.float64)
    dh, dv = np.abs(np.diff(f, axis=2)), np.abs(np.diff(f, axis=1))
    bh, bv = np.arange(47) % 8 == 7, np.arange(47) % 8 == 7
    on = (dh[:, :, bh].sum(axis=(1, 2)) + dv[:, bv, :].sum(axis=(1, 2))) / (48 * bh.sum() * 2)
    off = (dh[:, :, ~bh].sum(axis=(1, 2)) + dv[:, ~bv, :].sum(axis=(1, 2))) / (48 * (~bh).sum() * 2)
    np.testing.assert_array_equal(quality.blockiness(x), (on + 1e-6) / (off + 1e-6))


def test_measuring_in_threads_gives_the_one_thread_table(sample_faces, monkeypatch):
    from fer_helpers import compute

    images, ids = _many(sample_faces)
    degraded = apply_preset(images, ids, PRESETS["seed000_chain"], 0)
    monkeypatch.setattr(compute, "_WORKERS", 1)
    one = quality._measure(degraded)
    monkeypatch.setattr(compute, "_WORKERS", 2)
    quality._MEMO.clear()
    pd.testing.assert_frame_equal(quality.measure(degraded), one, check_exact=True)
