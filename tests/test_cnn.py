import numpy as np
import pytest
import torch

from fer_helpers import cnn


def test_augmentation_is_applied_and_seeded(sample_faces):
    x = cnn.to_tensor(sample_faces.images[:16])
    a = cnn.augment(x, torch.Generator().manual_seed(0))
    b = cnn.augment(x, torch.Generator().manual_seed(0))
    c = cnn.augment(x, torch.Generator().manual_seed(1))
    assert tuple(a.shape) == (16, 1, cnn.CROP, cnn.CROP)
    assert torch.equal(a, b) and not torch.equal(a, c)
    centre = x[..., 2:46, 2:46]
    assert (a - centre).abs().mean() > 0.05  # really augmented, not the plain centre crop


def test_tta_is_deterministic_and_uses_ten_views(sample_faces):
    x = cnn.to_tensor(sample_faces.images[:4])
    views = cnn.tta_views(x)
    assert len(views) == 10 and all(tuple(v.shape) == (4, 1, 44, 44) for v in views)
    assert torch.equal(views[5], views[0].flip(-1))
    torch.manual_seed(0)
    model = cnn.CompactCNN(width=8)
    p1, p2 = cnn.predict_proba(model, sample_faces.images[:4]), cnn.predict_proba(model, sample_faces.images[:4])
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_allclose(p1.sum(1), 1.0, rtol=1e-5)
    flip = cnn.tta_views(x, "flip")
    assert len(flip) == 2 and torch.equal(flip[0], views[0]) and torch.equal(flip[1], views[5])
    assert len(cnn.tta_views(x, "none")) == 1
    p_flip = cnn.predict_proba(model, sample_faces.images[:4], tta="flip")
    model.eval()
    with torch.no_grad():
        expected = torch.stack([torch.softmax(model(v), 1) for v in flip]).mean(0).numpy()
    np.testing.assert_allclose(p_flip, expected, atol=1e-6)
    with pytest.raises(ValueError, match="ten_crop"):
        cnn.tta_views(x, "five")


def test_tiny_training_selects_on_validation_and_round_trips(sample_faces, tmp_path):
    cfg = cnn.CNNTrainConfig(width=8, epochs=2, batch_size=16, lr=0.01, seed=0, device="cpu")
    x, y = sample_faces.images, sample_faces.labels
    card = cnn.train(x, y, x[:14], y[:14], cfg, tmp_path / "cnn.safetensors", log=lambda *_: None)
    assert card["best_epoch"] in (1, 2) and len(card["history"]) == 2
    assert np.array(card["confusion_matrix"]).sum() == 14
    model, meta = cnn.load(tmp_path / "cnn.safetensors")
    assert meta["val_accuracy"] == card["val_accuracy"]
    with pytest.raises(FileNotFoundError, match="CNN weights .* not found"):
        cnn.load(tmp_path / "missing.safetensors")


def test_gradcam_maps_are_normalised_and_target_dependent(sample_faces):
    torch.manual_seed(0)
    model = cnn.CompactCNN(width=8)
    x = sample_faces.images[:3]
    cam = cnn.gradcam(model, x)
    assert cam.shape == (3, 48, 48) and cam.min() >= 0 and np.allclose(cam.reshape(3, -1).max(1), 1, atol=1e-5)
    assert (cam[:, :2, :] == 0).all()
    other = cnn.gradcam(model, x, target=np.array([0, 1, 2]))
    assert not np.allclose(cam, other)


@pytest.mark.slow
def test_robust_fine_tune_starts_from_the_given_weights_and_reports_each_seed_preset(sample_faces, tmp_path):
    x, y = sample_faces.images, sample_faces.labels
    base = cnn.CNNTrainConfig(width=8, epochs=1, batch_size=16, lr=0.01, seed=0, device="cpu")
    cnn.train(x, y, x[:14], y[:14], base, tmp_path / "clean.safetensors", log=lambda *_: None)
    start, _ = cnn.load(tmp_path / "clean.safetensors")
    tuned = cnn.CNNTrainConfig(width=8, epochs=1, batch_size=16, lr=0.0, warmup_epochs=0, seed=0, device="cpu",
                               degrade_p=0.5, init=str(tmp_path / "clean.safetensors"), ema_decay=0.0)
    recipe = cnn.make_recipe(tuned, x[:14], y[:14])
    for a, b in zip(recipe.model.state_dict().values(), start.state_dict().values()):
        torch.testing.assert_close(a, b)  # the fine-tune begins where the clean model ended
    card = cnn.train(x, y, x[:14], y[:14], tuned, tmp_path / "robust.safetensors", log=lambda *_: None)
    assert card["initialised_from"]["weights"] == "clean.safetensors"
    assert set(card["val_accuracy_by_preset"]) == set(cnn.degrade.PRESET_GROUPS["seeds"])
    assert card["degradation_mix"]["p"] == 0.5 and "raw_clean" in card["history"][0]
    with pytest.raises(ValueError, match="holds a width-8 CNN; pass --width 8"):
        cnn.make_recipe(cnn.CNNTrainConfig(width=16, init=str(tmp_path / "clean.safetensors")), x[:4], y[:4])


def test_ensemble_teacher_teaches_its_members_mean_probability_and_is_named_on_the_card(sample_faces, tmp_path):
    from fer_helpers.io import save_weights

    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(tmp_path / f"t{seed}.safetensors")
        save_weights(paths[-1], cnn.CompactCNN(width=4).state_dict(),
                     {"config": {"width": 4}, "arch": "CompactCNN", "val_accuracy": 0.4 + seed / 10})
    spec = ",".join(map(str, paths))
    x = cnn.to_tensor(sample_faces.images[:6])[..., 2:46, 2:46]
    members = [cnn.load(p)[0] for p in paths]
    with torch.no_grad():
        expected = torch.stack([torch.softmax(m(x), 1) for m in members]).mean(0)
        taught = torch.softmax(cnn.load_teacher(spec)(x), 1)
        single = cnn.load_teacher(str(paths[0]))(x)
    torch.testing.assert_close(taught, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.softmax(single, 1), torch.softmax(members[0](x), 1), atol=1e-4, rtol=1e-4)
    assert cnn.teacher_card(spec) == {"weights": ["t0.safetensors", "t1.safetensors"], "arch": "CompactCNN", "width": 4,
                                      "val_accuracy": [0.4, 0.5]}
    # distillation changes the loss, and the student's card names its teachers
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    y = torch.from_numpy(sample_faces.labels[:6].astype(np.int64))
    student = cnn.CompactCNN(width=4).eval()  # no dropout: the three losses see the same network
    plain = cnn.mixup_loss(student, x, y, 0.2, 0.1, gen())
    same_plain = cnn.mixup_loss(student, x, y, 0.2, 0.1, gen(), cnn.load_teacher(spec), 0.0)
    distilled = cnn.mixup_loss(student, x, y, 0.2, 0.1, gen(), cnn.load_teacher(spec), 0.7)
    torch.testing.assert_close(plain, same_plain)
    assert not torch.allclose(plain, distilled)
    cfg = cnn.CNNTrainConfig(width=4, epochs=1, batch_size=16, lr=0.01, seed=0, device="cpu", teacher=spec)
    imgs, labels = sample_faces.images, sample_faces.labels
    card = cnn.train(imgs, labels, imgs[:14], labels[:14], cfg, tmp_path / "student.safetensors", log=lambda *_: None)
    assert card["teacher"]["weights"] == ["t0.safetensors", "t1.safetensors"]


def test_bf16_inference_is_really_bf16_and_close_to_fp32(sample_faces):
    torch.manual_seed(0)
    model = cnn.CompactCNN(width=8).eval()
    p32 = cnn.predict_proba(model, sample_faces.images, tta="flip")
    p16 = cnn.predict_proba(model, sample_faces.images, tta="flip", precision="bf16")
    assert p16.dtype == p32.dtype and not np.array_equal(p16, p32)  # the autocast really ran
    np.testing.assert_allclose(p16, p32, atol=0.02)
    np.testing.assert_allclose(p16.sum(1), 1.0, rtol=1e-5)
    assert (p16.argmax(1) == p32.argmax(1)).mean() >= 0.9


def test_teacher_probabilities_are_cached_by_weights_and_pixels(tmp_path, monkeypatch):
    """The landmark models' teacher output is computed once: a rerun with the same weights and faces reads the
    cache; other faces or other weights are computed afresh (never served from another input's entry)."""
    from fer_helpers.io import save_weights

    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    for seed, path in ((0, a), (1, b)):
        torch.manual_seed(seed)
        save_weights(path, cnn.CompactCNN(8).state_dict(), {"config": {"width": 8}})
    faces = np.random.default_rng(0).integers(0, 256, (6, 48, 48), dtype=np.uint8)
    calls = []
    real = cnn.predict_proba
    monkeypatch.setattr(cnn, "predict_proba", lambda *args, **kw: calls.append(1) or real(*args, **kw))
    first = cnn.teacher_proba(f"{a},{b}", faces, precision="fp32", cache=tmp_path / "cache")
    assert len(calls) == 2 and first.shape == (6, 7) and np.allclose(first.sum(1), 1)
    again = cnn.teacher_proba(f"{a},{b}", faces, precision="fp32", cache=tmp_path / "cache")
    assert len(calls) == 2 and np.array_equal(first, again)
    cnn.teacher_proba(f"{a},{b}", faces[::-1].copy(), precision="fp32", cache=tmp_path / "cache")
    cnn.teacher_proba(str(a), faces, precision="fp32", cache=tmp_path / "cache")
    assert len(calls) == 5 and len(list((tmp_path / "cache").glob("teacher_*.npy"))) == 3
