from pathlib import Path

import numpy as np
import pytest
import torch

from fer_helpers import landmarks
from fer_helpers.paths import SHARED_DIR

TASK = SHARED_DIR / "models" / "face_landmarker.task"


@pytest.fixture(scope="module")
def task():
    if not TASK.is_file():
        pytest.skip(f"MediaPipe model not found at {TASK} (development and CI machines have it beside the checkout)")
    return TASK


def test_extraction_finds_most_faces_and_caches(sample_faces, task, tmp_path):
    x = sample_faces.images[:20]
    pts, found = landmarks.extract_cached(x, task, tmp_path / "cache.npz")
    assert pts.shape == (20, 478, 3) and found.mean() >= 0.8
    assert np.isnan(pts[~found]).all() and not np.isnan(pts[found]).any()
    again, _ = landmarks.extract_cached(x[::-1], task, tmp_path / "cache.npz")  # served from the cache, by pixels
    np.testing.assert_array_equal(again[::-1], pts)


def test_missing_task_file_names_the_fix(sample_faces, tmp_path):
    with pytest.raises(landmarks.LandmarkerUnavailable, match="face_landmarker.task"):
        landmarks.extract(sample_faces.images[:1], tmp_path / "none.task")


def test_an_unknown_model_name_is_refused_before_any_work(capsys):
    """--archs is checked by the parser: a wrong name stops the command at once, not after the landmarks and
    the teacher's probabilities have been computed."""
    with pytest.raises(SystemExit):
        landmarks.main(["--fer2013", "/nonexistent", "--task", "/nonexistent.task", "--archs", "transformer"])
    assert "invalid choice: 'transformer'" in capsys.readouterr().err


def test_normalisation_removes_position_and_scale(rng):
    p = rng.random((2, 478, 3)).astype(np.float32)
    moved = p * 3 + np.array([0.2, -0.1, 0.0], np.float32)
    np.testing.assert_allclose(landmarks.normalise(p), landmarks.normalise(moved), atol=1e-5)
    assert np.isnan(landmarks.normalise(np.full((1, 478, 3), np.nan))).all()


def test_graph_has_self_loops_and_no_isolated_landmark(task):
    a = landmarks.facemesh_adjacency().to_dense()
    assert a.shape == (478, 478) and torch.allclose(a, a.T) and (torch.diagonal(a) > 0).all()
    only_self = torch.nonzero((a > 0).sum(1) == 1).flatten().tolist()
    assert only_self == [468, 473]  # the iris centres: kept by their self-loops


@pytest.mark.parametrize("arch", list(landmarks.ARCHS))
def test_models_train_and_score_faces_without_landmarks_as_failures(arch, rng, tmp_path, task):
    pts = rng.normal(size=(64, 478, 3)).astype(np.float32)
    labels = np.arange(64) % 7
    pts[labels == 3, :, 0] += 0.5  # a learnable signal for one class
    val = pts[:16].copy()
    val[0] = np.nan  # no landmarks
    cfg = landmarks.LandmarkTrainConfig(arch=arch, epochs=2, batch_size=32)
    card = landmarks.train(pts, labels, val, labels[:16], cfg, tmp_path / "m.safetensors", log=lambda *_: None)
    assert card["val_faces_without_landmarks"] == 1
    model, meta = landmarks.load(tmp_path / "m.safetensors")
    proba = landmarks.predict_proba(model, val)
    assert np.isnan(proba[0]).all() and np.allclose(proba[1:].sum(1), 1)


@pytest.mark.slow
def test_transformer_tokens_are_regions_of_the_mean_face_and_travel_with_the_weights(rng, tmp_path):
    # two well-separated halves of a face: k-means must never put points of both halves in one token
    pts = rng.normal(size=(64, 478, 3)).astype(np.float32) * 0.05
    pts[:, :239, 0] -= 1.0
    pts[:, 239:, 0] += 1.0
    cfg = landmarks.LandmarkTrainConfig(arch="landmark_transformer", epochs=1, batch_size=32)
    landmarks.train(pts, np.arange(64) % 7, pts[:8], np.arange(8) % 7, cfg, tmp_path / "t.safetensors", log=lambda *_: None)
    model, _ = landmarks.load(tmp_path / "t.safetensors")
    region = model.region.numpy()
    assert set(region[:239]).isdisjoint(region[239:])
    assert len(np.unique(region)) == model.n_regions


def test_mirror_permutation_pairs_each_landmark_with_its_reflection(rng):
    half = rng.uniform(0.1, 1.0, size=(200, 2))
    midline = np.c_[np.zeros(78), rng.uniform(-1, 1, 78)]
    face = np.concatenate([half, half * [-1, 1], midline])  # landmark i and i + 200 are mirror images
    order = rng.permutation(len(face))
    face = np.c_[face[order], np.zeros(len(face))]
    perm = landmarks.mirror_permutation(face)
    assert sorted(perm.tolist()) == list(range(len(face)))  # a permutation
    np.testing.assert_array_equal(perm[perm], np.arange(len(face)))  # mirroring twice is the identity
    mirrored = face[perm] * [-1, 1, 1]
    np.testing.assert_allclose(mirrored, face, atol=1e-12)


def test_mirror_augmentation_flips_half_the_faces(rng):
    import torch

    x = torch.from_numpy(rng.normal(size=(400, 478, 3)).astype(np.float32))
    perm = torch.from_numpy(rng.permutation(478))
    out = landmarks._augment(x, torch.Generator().manual_seed(0), perm)
    # a mirrored face correlates with x[:, perm] * (-1, 1, 1), an unmirrored one with x itself
    def corr(a, b):
        return (a * b).flatten(1).sum(1) / (a.flatten(1).norm(dim=1) * b.flatten(1).norm(dim=1))
    mirrored = corr(out, x[:, perm] * torch.tensor([-1.0, 1.0, 1.0])) > corr(out, x)
    assert 150 < int(mirrored.sum()) < 250


def test_augmentation_is_its_definition_face_by_face(rng):
    """The batched 3x3 maps equal the per-face recipe: mirror (re-order, negate x), rotate and scale x/y,
    scale z, add 0.01 jitter, with the same draws in the same order."""
    import torch

    x = torch.from_numpy(rng.normal(size=(64, 478, 3)).astype(np.float32))
    perm = torch.from_numpy(rng.permutation(478))
    out = landmarks._augment(x, torch.Generator().manual_seed(3), perm)
    gen = torch.Generator().manual_seed(3)
    ang, scale = (torch.rand(64, generator=gen) * 2 - 1) * 0.17, 1 + (torch.rand(64, generator=gen) * 2 - 1) * 0.05
    flip = torch.rand(64, generator=gen) < 0.5
    jitter = 0.01 * torch.randn(x.shape, generator=gen)
    for i in range(64):
        p = x[i, perm] * torch.tensor([-1.0, 1.0, 1.0]) if flip[i] else x[i]
        c, s = torch.cos(ang[i]) * scale[i], torch.sin(ang[i]) * scale[i]
        want = torch.stack([c * p[:, 0] - s * p[:, 1], s * p[:, 0] + c * p[:, 1], p[:, 2] * scale[i]], 1) + jitter[i]
        torch.testing.assert_close(out[i], want, atol=1e-5, rtol=1e-5)
    assert 20 < int(flip.sum()) < 44


def test_a_landmark_classifier_refuses_another_models_file(rng, tmp_path, task):
    from fer_helpers import classify

    pts = rng.normal(size=(32, 478, 3)).astype(np.float32)
    cfg = landmarks.LandmarkTrainConfig(arch="landmark_mlp", epochs=1, batch_size=16)
    landmarks.train(pts, np.arange(32) % 7, pts[:8], np.arange(8) % 7, cfg, tmp_path / "mlp.safetensors", log=lambda *_: None)
    with pytest.raises(ValueError, match="holds landmark_mlp weights, not landmark_gcn"):
        landmarks.load(tmp_path / "mlp.safetensors", "landmark_gcn")
    ctx = classify.ClassifyContext(weights={"landmark_gcn": str(tmp_path / "mlp.safetensors"), "landmarker": str(task)})
    with pytest.raises(classify.ClassifierUnavailable, match="holds landmark_mlp weights, not landmark_gcn"):
        classify.create("landmark_gcn", ctx)
    assert landmarks.load(tmp_path / "mlp.safetensors", "landmark_mlp")[1]["config"]["arch"] == "landmark_mlp"


def test_landmarker_path_prefers_the_setting_then_the_cache_then_the_bundle_beside_the_checkout(tmp_path, monkeypatch):
    from fer_helpers.config import parse_params
    from fer_helpers.stages import classification

    monkeypatch.setattr(Path, "home", lambda: tmp_path / "home")
    bundle = tmp_path / "shared" / "face_landmarker.task"
    monkeypatch.setattr(classification, "SHARED_LANDMARKER", bundle)
    offline = parse_params({"restoration": {"allow_download": False}})
    cached = tmp_path / "home" / ".cache" / "fer-study" / "face_landmarker.task"
    assert classification.landmarker_path(offline) == cached  # nothing anywhere: the cache path, which the models name
    bundle.parent.mkdir(parents=True)
    bundle.write_bytes(b"task")
    assert classification.landmarker_path(offline) == bundle
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"task")
    assert classification.landmarker_path(offline) == cached
    given = parse_params({"restoration": {"allow_download": False}, "classification": {"landmarker": str(tmp_path / "mine.task")}})
    assert classification.landmarker_path(given) == tmp_path / "mine.task"


def test_distillation_looks_up_each_faces_teacher_row_and_the_card_names_it(rng, tmp_path, task):
    """The stored targets are (label, row) pairs, so after the loop's shuffle each face is still pulled towards
    its own teacher probabilities: the loss equals the distillation loss against exactly those rows."""
    import torch.nn.functional as F

    from fer_helpers import cnn, training
    from fer_helpers.io import save_weights

    teacher = tmp_path / "teacher.safetensors"
    save_weights(teacher, cnn.CompactCNN(8).state_dict(), {"config": {"width": 8}, "val_accuracy": 0.5})
    pts = rng.normal(size=(48, 478, 3)).astype(np.float32)
    labels = np.arange(48) % 7
    proba = rng.dirichlet(np.ones(7), size=48)
    cfg = landmarks.LandmarkTrainConfig(arch="landmark_mlp", epochs=1, batch_size=16, teacher=str(teacher), alpha=0.6,
                                        temperature=2.0)
    recipe = landmarks.make_recipe(cfg, pts, pts[:8], labels[:8], proba)
    model = recipe.model.eval()
    rows = torch.tensor([7, 2, 40, 11])
    x = torch.from_numpy(landmarks.normalise(pts[rows.numpy()]))
    y = torch.from_numpy(labels[rows.numpy()])
    with torch.no_grad():
        got = recipe.loss(model, x, torch.stack([y, rows], 1), torch.Generator())
        logits = model(x)
        want = training.distillation_loss(F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing), logits,
                                          torch.log(torch.from_numpy(proba[rows.numpy()])).float(), 0.6, 2.0)
        other = recipe.loss(model, x, torch.stack([y, rows.roll(1)], 1), torch.Generator())
    assert float(got) == pytest.approx(float(want), rel=1e-5) and float(other) != pytest.approx(float(got), rel=1e-3)
    card = landmarks.train(pts, labels, pts[:8], labels[:8], cfg, tmp_path / "s.safetensors", log=lambda *_: None,
                           teacher_proba=proba)
    assert card["teacher"]["weights"] == "teacher.safetensors" and card["teacher"]["val_accuracy"] == 0.5
    with pytest.raises(ValueError, match="teacher_proba has 3 rows for 48 faces"):
        landmarks.make_recipe(cfg, pts, pts[:8], labels[:8], proba[:3])


def test_gcn_readouts_and_older_pooled_files_still_load(rng, tmp_path, task):
    """The node readout keeps which landmark moved; files trained with the pooled readout (no readout option
    on their card) load as what they are."""
    from fer_helpers.io import save_weights

    x = torch.from_numpy(rng.normal(size=(4, 478, 3)).astype(np.float32))
    nodes = landmarks.LandmarkGCN(dim=16, layers=1, readout="nodes", node_features=2).eval()
    assert nodes(x).shape == (4, 7)
    swapped = x.clone()
    swapped[:, [0, 1]] = x[:, [1, 0]]  # two landmarks trade places: the node readout sees it
    assert not torch.allclose(nodes(x), nodes(swapped))
    pooled = landmarks.LandmarkGCN(dim=16, layers=1, node_embedding=False)
    save_weights(tmp_path / "old.safetensors", pooled.state_dict(),
                 {"config": {"arch": "landmark_gcn"}, "model": {"dim": 16, "layers": 1, "node_embedding": False}})
    model, _ = landmarks.load(tmp_path / "old.safetensors", "landmark_gcn")
    assert model.readout == "pool"
    with pytest.raises(ValueError, match="unknown readout"):
        landmarks.LandmarkGCN(readout="sum")


def test_transformer_token_readout_keeps_region_order_and_older_files_load_as_mean_pooled(rng, tmp_path):
    from fer_helpers.io import save_weights

    tokens = landmarks.LandmarkTransformer(dim=16, layers=1, heads=2, regions=4, dropout=0.0, readout="tokens").eval()
    encoded = torch.randn(2, 4, 16)
    # the head reads the tokens in region order: swapping two tokens changes the answer, which a mean cannot see
    assert not torch.allclose(tokens.head(encoded), tokens.head(encoded[:, [1, 0, 2, 3]]))
    assert tokens(torch.from_numpy(rng.normal(size=(2, 478, 3)).astype(np.float32))).shape == (2, 7)
    old = landmarks.LandmarkTransformer(dim=16, layers=1, heads=2, regions=4)
    save_weights(tmp_path / "old.safetensors", old.state_dict(),
                 {"config": {"arch": "landmark_transformer"}, "model": {"dim": 16, "layers": 1, "heads": 2, "regions": 4}})
    model, _ = landmarks.load(tmp_path / "old.safetensors", "landmark_transformer")
    assert model.readout == "mean"
    with pytest.raises(ValueError, match="unknown readout"):
        landmarks.LandmarkTransformer(readout="cls")
