import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from fer_helpers import degrade
from fer_helpers.degrade import PRESETS, Step, apply_preset, degrade_all, image_rng


def ids(n):
    return [f"img{i}" for i in range(n)]


def const(value, n=8, size=48):
    return np.full((n, size, size), value, dtype=np.uint8)


def test_noise_statistics_in_grey_levels():
    x = const(128, n=16)
    y = degrade.gaussian_noise(x, [image_rng(0, "p", i) for i in ids(16)], sigma=10.0)
    d = y.astype(float) - 128
    assert abs(d.mean()) < 0.3
    assert 9.7 < d.std() < 10.3


def test_noise_is_added_in_float_and_clipped_not_wrapped():
    # seed 000 cast noise to uint8 before adding: negative noise on dark pixels wrapped to ~255
    dark = degrade.gaussian_noise(const(3), [image_rng(0, "p", i) for i in ids(8)], sigma=20.0)
    assert dark.min() == 0 and dark.max() < 100
    bright = degrade.gaussian_noise(const(252), [image_rng(0, "p", i) for i in ids(8)], sigma=20.0)
    assert bright.max() == 255 and bright.min() > 150


def test_same_id_preset_seed_gives_same_image_and_batching_does_not_matter(sample_faces):
    imgs, names = sample_faces.images[:20], list(sample_faces.ids[:20])
    p = PRESETS["seed000_chain"]
    a = apply_preset(imgs, names, p, seed=7)
    b = degrade_all(imgs, names, p, seed=7, batch_size=3, progress=False)
    np.testing.assert_array_equal(a, b)
    # reversed order: each image still gets its own noise
    r = apply_preset(imgs[::-1], names[::-1], p, seed=7)
    np.testing.assert_array_equal(a, r[::-1])
    assert not np.array_equal(a, apply_preset(imgs, names, p, seed=8))
    other = degrade.make_preset("other_name", [{"op": "gaussian_noise", "value": 15}])
    assert not np.array_equal(apply_preset(imgs, names, PRESETS["noise_15"], 7), apply_preset(imgs, names, other, 7))


def test_jpeg_quality_orders_psnr(sample_faces):
    x = sample_faces.images[:10]
    psnr = {q: np.mean([peak_signal_noise_ratio(a, b, data_range=255) for a, b in zip(x, degrade.jpeg(x, [], quality=q))])
            for q in (90, 50, 20, 5)}
    assert psnr[90] > psnr[50] > psnr[20] > psnr[5]


def test_low_resolution_is_anti_aliased_and_keeps_shape():
    checker = (np.indices((48, 48)).sum(axis=0) % 2 * 255).astype(np.uint8)[None]
    out = degrade.low_resolution(checker, [], factor=2)
    assert out.shape == checker.shape
    # a nearest-neighbour downscale of a 1-px checkerboard aliases to a flat black or white image;
    # the anti-aliased one averages it to mid grey
    assert abs(out.astype(float).mean() - 127.5) < 3 and out.std() < 10


def test_low_resolution_severity_ordering(sample_faces):
    x = sample_faces.images[:10]
    psnr = [np.mean([peak_signal_noise_ratio(a, b, data_range=255) for a, b in zip(x, degrade.low_resolution(x, [], factor=f))])
            for f in (2, 4, 8)]
    assert psnr[0] > psnr[1] > psnr[2]


def test_salt_and_pepper_fraction_and_balance():
    x = const(128, n=20)
    y = degrade.salt_and_pepper(x, [image_rng(0, "sp", i) for i in ids(20)], amount=0.1)
    changed = y != 128
    assert 0.09 < changed.mean() < 0.11
    assert abs((y == 0).mean() - (y == 255).mean()) < 0.01


def test_blur_smooths_and_sigma_zero_is_identity(sample_faces):
    x = sample_faces.images[:5]
    np.testing.assert_array_equal(degrade.gaussian_blur(x, [], sigma=0.0), x)
    y = degrade.gaussian_blur(x, [], sigma=2.0)
    assert np.abs(np.diff(y.astype(float), axis=2)).mean() < 0.5 * np.abs(np.diff(x.astype(float), axis=2)).mean()


def test_ops_reject_bad_input_and_steps_reject_out_of_range():
    with pytest.raises(ValueError, match="uint8"):
        degrade.gaussian_noise(np.zeros((2, 48, 48), np.float32), [], sigma=1)
    with pytest.raises(ValueError, match="outside"):
        Step("jpeg", 0)
    with pytest.raises(ValueError, match="unknown degradation op"):
        Step("sharpen", 1)


def test_seed_presets_reproduce_the_seeds():
    assert [(s.op, s.value) for s in PRESETS["seed000_chain"].steps] == [("gaussian_noise", 15), ("gaussian_blur", 1.5), ("jpeg", 20)]
    assert PRESETS["seed003_low"].steps[0].value == pytest.approx(0.02 * 255, abs=0.01)
    assert PRESETS["seed003_high"].steps[0].value == pytest.approx(0.06 * 255, abs=0.01)
    assert PRESETS["seed003_sp"].steps[0] == Step("salt_and_pepper", 0.10)
    assert {PRESETS[f"lowres_x{f}"].severity for f in (2, 4, 8)} == {2, 4, 8}
    assert degrade.expand_preset_names(["seeds", "lowres_x2", "noise_15"])[:7] == list(degrade.PRESET_GROUPS["seeds"])


def test_pair_metrics_match_scikit_image(sample_faces):
    x = sample_faces.images[:6]
    y = apply_preset(x, list(sample_faces.ids[:6]), PRESETS["noise_15"], 0)
    psnr, ssim = degrade.pair_metrics(x, y)
    assert psnr[0] == pytest.approx(peak_signal_noise_ratio(x[0], y[0], data_range=255))
    assert np.all((ssim > 0) & (ssim < 1)) and np.all((psnr > 20) & (psnr < 30))
    # sigma 15 of additive noise: PSNR about 20*log10(255/15) = 24.6 dB (a bit higher from clipping)
    assert abs(np.median(psnr) - 24.6) < 1.0


def test_training_degradations_are_seeded_batched_and_drawn_from_the_declared_ranges(rng):
    faces = rng.integers(30, 220, size=(300, 48, 48), dtype=np.uint8)
    a, da = degrade.random_degradations(faces, np.random.default_rng(5), p=0.6)
    b, db = degrade.random_degradations(faces, np.random.default_rng(5), p=0.6)
    np.testing.assert_array_equal(a, b)
    assert da == db
    changed = np.any(a != faces, axis=(1, 2))
    described = np.array([d != "" for d in da])
    assert 140 < described.sum() < 220  # about 60% of 300
    assert not changed[~described].any()  # faces left clean are untouched
    ranges = degrade.training_ranges()
    seen = set()
    for d in filter(None, da):
        if " -> " in d:
            assert d == degrade.PRESETS["seed000_chain"].describe()
            seen.add("seed000_chain")
            continue
        op, value = d.split("(")[0], float(d.split("=")[1].rstrip(")"))
        _, lo, hi = ranges[op]
        assert lo <= value <= hi, d
        seen.add(op)
    assert seen == set(degrade.AUGMENT_FAMILIES)
    only_noise, dn = degrade.random_degradations(faces[:20], np.random.default_rng(0), p=1.0, families=["gaussian_noise"])
    assert all(d.startswith("gaussian_noise") for d in dn) and np.any(only_noise != faces[:20], axis=(1, 2)).all()
    with pytest.raises(ValueError, match="unknown degradation families"):
        degrade.random_degradations(faces[:2], np.random.default_rng(0), 0.5, families=["fog"])


def test_robust_cnn_training_degrades_only_training_batches(sample_faces, tmp_path):
    import torch

    from fer_helpers import cnn

    cfg = cnn.CNNTrainConfig(width=4, epochs=1, batch_size=16, device="cpu", degrade_p=1.0)
    recipe = cnn.make_recipe(cfg, sample_faces.images[:8], sample_faces.labels[:8])
    x = torch.from_numpy(sample_faces.images[:16])
    before = x.clone()
    a, _ = recipe.prepare(x, torch.zeros(16, dtype=torch.long), torch.Generator().manual_seed(0))
    b, _ = recipe.prepare(x, torch.zeros(16, dtype=torch.long), torch.Generator().manual_seed(0))
    clean_cfg = cnn.CNNTrainConfig(width=4, epochs=1, batch_size=16, device="cpu")
    c, _ = cnn.make_recipe(clean_cfg, sample_faces.images[:8], sample_faces.labels[:8]).prepare(
        x, torch.zeros(16, dtype=torch.long), torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(x, before)  # the stored training faces are never modified


def test_jpeg_mosaic_gives_each_face_its_own_files_pixels(sample_faces, monkeypatch):
    x = np.concatenate([sample_faces.images] * 5)[:300]
    x[7] = 0  # a flat tile between busy ones
    monkeypatch.setattr(degrade, "_JPEG_MAX_SIDE", 96)  # two rows of 64 tiles per mosaic: three mosaics here
    for q in (5, 20, 75):
        alone = np.stack([degrade._jpeg_roundtrip(face, q) for face in x])
        np.testing.assert_array_equal(degrade.jpeg(x, [], quality=q), alone)
        assert not np.array_equal(alone, x)
    odd = np.ascontiguousarray(x[:3, :45, :44])  # sides not multiples of 8: one file per face
    np.testing.assert_array_equal(degrade.jpeg(odd, [], quality=20), np.stack([degrade._jpeg_roundtrip(f, 20) for f in odd]))


def test_degrading_in_threads_gives_the_one_thread_faces(sample_faces, monkeypatch):
    from fer_helpers import compute

    reps = 10
    images = np.concatenate([sample_faces.images] * reps)
    ids = [f"{i}/{k}" for k in range(reps) for i in sample_faces.ids]
    assert len(images) >= 512
    for name in ("seed000_chain", "sp_0.05", "lowres_x4"):
        monkeypatch.setattr(compute, "_WORKERS", 1)
        one = apply_preset(images, ids, PRESETS[name], 3)
        monkeypatch.setattr(compute, "_WORKERS", 2)
        np.testing.assert_array_equal(apply_preset(images, ids, PRESETS[name], 3), one)
