import json
from pathlib import Path

import numpy as np
import pytest

from fer_helpers import classify
from fer_helpers.classify import ClassifierError, label_index
from fer_helpers.data import CLASSES, fer2013_train_val
from fer_helpers.paths import SAMPLE_FER2013_DIR

ALPHABETICAL = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]  # image-folder order (and trpakov's)


def test_label_orders_map_explicitly():
    assert label_index(CLASSES).tolist() == list(range(7))
    idx = label_index(ALPHABETICAL)
    assert [ALPHABETICAL[i] for i in idx] == list(CLASSES)
    hf = {i: name.capitalize() for i, name in enumerate(ALPHABETICAL)}  # a Hugging Face id2label
    assert label_index(hf).tolist() == idx.tolist()
    # CSV order spelled with capitals and synonyms
    assert label_index(["Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Neutral"]).tolist() == list(range(7))


def test_unmappable_labels_fail_with_a_message():
    with pytest.raises(ClassifierError, match=r"seed000: labels .* cannot be mapped.*missing \['disgust', 'fear', 'sad'\]"):
        label_index(["angry", "happy", "neutral", "surprise"], "seed000")  # seed 000's four-class setup
    with pytest.raises(ClassifierError, match=r"unknown \['contempt'\]"):
        label_index(ALPHABETICAL[:6] + ["contempt"])
    with pytest.raises(ClassifierError, match=r"repeated \['happy'\]"):
        label_index(["angry", "disgust", "fear", "happy", "joy", "sad", "surprise"])


def test_predict_proba_reorders_model_outputs_to_the_canonical_order():
    class Fixed(classify.Classifier):
        name, labels = "fixed", ALPHABETICAL

        def raw_probabilities(self, images):
            p = np.zeros((len(images), 7))
            p[:, ALPHABETICAL.index("neutral")] = 1.0
            return p

    p = Fixed().predict_proba(np.zeros((3, 48, 48), np.uint8))
    assert p.shape == (3, 7) and (p.argmax(axis=1) == CLASSES.index("neutral")).all()


def test_condition_keys_score_every_preset_unrestored_and_the_restored_grid_only_where_asked(tmp_path):
    import pandas as pd

    from fer_helpers.io import RunDir
    from fer_helpers.stages import classification

    run = RunDir(tmp_path)
    run.path("restoration").mkdir(parents=True)
    pd.DataFrame({"restorer": ["none", "auto", "unet", "median"], "available": [True, True, True, False]}).to_csv(
        run.path("restoration", "restorers.csv"), index=False)
    conds = ["clean", "seed003_low", "noise_5", "blur_1"]
    pd.DataFrame([{"restorer": r, "condition": c} for c in conds for r in ("none", "auto", "unet", "median")]).to_csv(
        run.path("restoration", "metrics.csv"), index=False)
    everything = classification.condition_keys(run)
    assert len(everything) == 12 and "median|clean" not in everything  # unavailable restorers are never scored
    keys = classification.condition_keys(run, ["auto"], None, ["seeds"])
    assert keys == ["none|clean", "auto|clean", "none|seed003_low", "auto|seed003_low", "none|noise_5", "none|blur_1"]
    assert classification.condition_keys(run, None, ["noise_sweep"]) == ["none|clean", "auto|clean", "unet|clean", "none|noise_5", "auto|noise_5", "unet|noise_5"]


def test_classifiers_near_the_majority_rate_are_marked_weak():
    import pandas as pd

    from fer_helpers import scoring

    labels = np.array([3] * 50 + [0] * 30 + [4] * 20)  # always "happy" scores 50%
    assert scoring.majority_rate(labels) == 0.5
    rows = [{"classifier": c, "family": "cnn", "restorer": "none", "condition": "clean", "faces": 100, "accuracy": a,
             "macro_f1": a, "kappa": 0.0, "no_answer": 0} for c, a in [("strong", 0.60), ("weak", 0.59), ("chance", 0.40)]]
    rows += [dict(r, condition="jpeg_10", accuracy=r["accuracy"] - 0.1) for r in rows]
    metrics = pd.DataFrame(rows)
    assert scoring.weak_classifiers(metrics, labels) == {"weak", "chance"}
    head = scoring.headline(metrics, labels).set_index("classifier")
    assert head.loc["weak", "note"] == "weak: near chance" and head.loc["strong", "note"] == ""
    assert head.loc["strong", "majority-class rate"] == 0.5
    assert scoring.shown("weak", {"weak"}) == "weak (weak: near chance)" and scoring.shown("strong", {"weak"}) == "strong"
    assert "note" not in scoring.headline(metrics).columns  # without labels, no mark is claimed


def test_cnn_ensemble_averages_its_members_and_names_a_missing_one(sample_faces, tmp_path):
    import torch

    from fer_helpers import cnn
    from fer_helpers.io import save_weights

    files = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        files.append(tmp_path / f"m{seed}.safetensors")
        save_weights(files[-1], cnn.CompactCNN(width=4).state_dict(), {"config": {"width": 4}, "val_accuracy": 0.5})
    ctx = classify.ClassifyContext(tta="flip", weights={"cnn_ensemble": ",".join(map(str, files))})
    ens = classify.create("cnn_ensemble", ctx)
    faces = sample_faces.images[:6]
    members = [classify.create("cnn", classify.ClassifyContext(tta="flip", weights={"cnn": str(f)})).predict_proba(faces)
               for f in files]
    assert not np.allclose(members[0], members[1])
    np.testing.assert_allclose(ens.predict_proba(faces), np.mean(members, axis=0), atol=1e-6)
    ctx.weights["cnn_ensemble"] = f"{files[0]},{tmp_path / 'missing.safetensors'}"
    with pytest.raises(classify.ClassifierUnavailable, match="missing.safetensors"):
        classify.create("cnn_ensemble", ctx)
    ctx.weights["cnn_ensemble"] = str(files[0])
    with pytest.raises(classify.ClassifierUnavailable, match="at least two"):
        classify.create("cnn_ensemble", ctx)
    assert classify.card_of("cnn", files[0])["val_accuracy"] == 0.5


def test_corrupt_cnn_weights_are_unavailable_with_the_file_named(tmp_path):
    bad = tmp_path / "torn.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(classify.ClassifierUnavailable, match=r"torn\.safetensors: not a readable weights file"):
        classify.create("cnn", classify.ClassifyContext(weights={"cnn": str(bad)}))


def test_ensemble_card_scores_members_and_their_mean(sample_faces, tmp_path):
    import torch

    from fer_helpers import cnn, ensemble
    from fer_helpers.io import save_weights

    files = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        files.append(tmp_path / f"m{seed}.safetensors")
        save_weights(files[-1], cnn.CompactCNN(width=4).state_dict(), {"config": {"width": 4}})
    x, y = sample_faces.images[:20], sample_faces.labels[:20]
    card = ensemble.ensemble_card(files, x, y, tta="flip")
    ens = classify.create("cnn_ensemble", classify.ClassifyContext(tta="flip", weights={"cnn_ensemble": ",".join(map(str, files))}))
    assert card["val_accuracy"] == pytest.approx(float((ens.predict_proba(x).argmax(1) == y).mean()))
    assert len(card["member_val_accuracy"]) == 2 and np.array(card["confusion_matrix"]).sum() == 20


def test_headline_compares_restored_and_unrestored_on_the_same_presets():
    """A run scores all presets unrestored but restores only some: the gain is over the restored ones."""
    import pandas as pd

    from fer_helpers import scoring

    acc = {("none", "clean"): 0.7, ("none", "noise_25"): 0.4, ("none", "jpeg_10"): 0.6, ("none", "blur_3"): 0.2,
           ("unet", "noise_25"): 0.5, ("unet", "jpeg_10"): 0.6, ("median", "noise_25"): 0.45, ("median", "jpeg_10"): 0.62}
    metrics = pd.DataFrame([{"classifier": "cnn", "family": "cnn", "restorer": r, "condition": c, "faces": 10, "accuracy": a,
                             "macro_f1": a, "kappa": 0.0, "no_answer": 0} for (r, c), a in acc.items()])
    h = scoring.headline(metrics).iloc[0]
    assert h["degraded accuracy (mean over presets)"] == pytest.approx(0.4)  # all three presets
    assert h["best restorer on average"] == "unet" and h["restored presets"] == 2  # +0.05 mean gain vs median's +0.035
    assert h["degraded accuracy on those presets"] == pytest.approx(0.5)
    assert h["restored accuracy on those presets"] == pytest.approx(0.55)


def _truncated(src, dst):
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    return dst


@pytest.mark.parametrize("name, kind", [("cnn", "truncated"), ("cnn", "foreign"), ("landmark_mlp", "truncated"),
                                        ("landmark_mlp", "foreign"), ("vit_fer2013", "truncated"), ("landmark_gcn", "bad task")])
def test_damaged_or_foreign_weights_make_a_classifier_unavailable_naming_the_file(name, kind, tmp_path):
    """Never a SafetensorError/KeyError traceback: the classifier is listed as unavailable, and why."""
    import shutil

    from fer_helpers import classify
    from fer_helpers.paths import MODELS_DIR, SHARED_DIR

    task = SHARED_DIR / "models" / "face_landmarker.task"
    if name.startswith("landmark") and not task.is_file():
        pytest.skip(f"MediaPipe bundle not found at {task}")
    weights = {"landmarker": str(task)}
    if name == "vit_fer2013":
        folder = tmp_path / "vit"
        shutil.copytree(MODELS_DIR / "vit_fer2013", folder)
        _truncated(MODELS_DIR / "vit_fer2013" / "model.safetensors", folder / "model.safetensors")
        weights[name], bad = str(folder), folder
    elif kind == "bad task":
        bad = tmp_path / "face_landmarker.task"
        bad.write_bytes(b"not a zip archive" * 10)
        weights["landmarker"] = str(bad)
    else:
        shipped = classify.DEFAULT_WEIGHTS[name]
        other = MODELS_DIR / "unet_denoiser" / "blind.safetensors"  # a real safetensors file of another model
        bad = _truncated(shipped, tmp_path / "w.safetensors") if kind == "truncated" else other
        weights[name] = str(bad)
    with pytest.raises(classify.ClassifierUnavailable) as e:
        classify.create(name, classify.ClassifyContext(weights=weights))
    assert e.value.name == name and str(bad) in e.value.reason and e.value.fix
    assert "\n" not in str(e.value)


def test_the_ensemble_reuses_the_cnn_pass_on_the_same_faces(sample_faces, monkeypatch):
    """cnn and cnn_ensemble score the same faces in turn: the shared member runs once, with the same numbers."""

    from fer_helpers import classify, cnn
    from fer_helpers.paths import MODELS_DIR

    calls = []
    real = cnn.predict_proba
    monkeypatch.setattr(cnn, "predict_proba", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(classify, "_CNN_MEMO", {})
    shipped = classify.DEFAULT_WEIGHTS["cnn"]
    assert Path(shipped).parent == MODELS_DIR / "cnn"
    ctx = classify.ClassifyContext(tta="flip", weights={"cnn_ensemble": f"{shipped},{shipped}"})
    faces = sample_faces.images[:6]
    single = classify.create("cnn", ctx).predict_proba(faces)
    both = classify.create("cnn_ensemble", ctx).predict_proba(faces)
    assert len(calls) == 1
    np.testing.assert_allclose(both, single, atol=1e-6)
    classify.create("cnn", ctx).predict_proba(sample_faces.images[6:9])  # other faces: computed
    assert len(calls) == 2


def test_faces_scored_before_are_not_scored_again_and_get_the_same_answer(sample_faces, tmp_path, monkeypatch):
    """A gate leaves most faces as they were and some restorers change nothing: the stage scores each distinct
    face once per classifier and copies its probabilities to every later condition holding the same pixels."""
    from fer_helpers.io import RunDir
    from fer_helpers.stages import classification

    clean = sample_faces
    faces = clean.images
    changed = faces.copy()
    changed[::3] = 255 - changed[::3]  # a third of the faces differ from the clean ones
    conditions = {"none|clean": faces, "gate|clean": faces.copy(), "r|noise": changed}
    seen = []

    class Counting(classify.Classifier):
        name, family = "counting", "cnn"

        def raw_probabilities(self, images):
            seen.append(len(images))
            p = np.full((len(images), 7), 0.01)
            p[np.arange(len(images)), images.reshape(len(images), -1).sum(1) % 7] = 0.94
            return p

    monkeypatch.setattr(classify, "create", lambda name, ctx: Counting())
    run = RunDir(tmp_path)
    run.path("classification").mkdir(parents=True)
    metrics, _ = classification.score(run, clean, list(conditions), lambda r, c: conditions[f"{r}|{c}"], ["counting"],
                                      None, "baselines", progress=False)
    n_distinct = len({f.tobytes() for f in faces})
    assert seen == [n_distinct, len(range(0, len(faces), 3))]  # the repeated condition costs nothing
    proba = classification.load_probabilities(run, "counting")["proba"]
    for k, images in enumerate(conditions.values()):  # every row is what scoring those very faces gives
        np.testing.assert_allclose(proba[k], Counting().predict_proba(images), rtol=0, atol=1e-7)
    assert metrics["accuracy"].iloc[0] == metrics["accuracy"].iloc[1]


def _fine_tunes(tmp_path, n: int, start: str = "start.safetensors", width: int = 4) -> list:
    """``n`` width-``width`` CNN files whose cards say they were fine-tuned from ``start``."""
    import torch

    from fer_helpers import cnn
    from fer_helpers.io import save_weights

    files = []
    for seed in range(n):
        torch.manual_seed(seed)
        files.append(tmp_path / f"ft{seed}.safetensors")
        save_weights(files[-1], cnn.CompactCNN(width=width).state_dict(),
                     {"config": {"width": width, "dropout": 0.4}, "initialised_from": {"weights": start, "val_accuracy": 0.5}})
    return files


def test_weight_average_is_the_mean_of_the_members_and_loads_as_a_cnn(tmp_path):
    import torch
    from safetensors.torch import load_file

    from fer_helpers import ensemble

    files = _fine_tunes(tmp_path, 3)
    out = tmp_path / "soup.safetensors"
    assert ensemble.main(["--fer2013", str(SAMPLE_FER2013_DIR), "--members", *map(str, files), "--tta", "flip",
                          "--average-into", str(out)]) == 0
    members = [load_file(str(f)) for f in files]
    averaged = load_file(str(out))
    w = "features.0.0.weight"
    assert torch.allclose(averaged[w], sum(m[w] for m in members) / 3, atol=1e-7)
    assert not torch.equal(averaged[w], members[0][w])
    card = json.loads(out.with_suffix(".json").read_text())
    assert [m["weights"] for m in card["weight_average_of"]] == [f.name for f in files]
    assert card["common_start"] == "start.safetensors" and card["selection"] == "uniform"
    # the study opens it as any CNN, and scores it as the card says
    cnn_clf = classify.create("cnn", classify.ClassifyContext(tta="flip", weights={"cnn": str(out)}))
    _, val, _ = fer2013_train_val(SAMPLE_FER2013_DIR)
    acc = float((cnn_clf.predict_proba(val.images).argmax(1) == val.labels).mean())
    assert card["val_accuracy"] == pytest.approx(acc, abs=1.5 / len(val.labels))


def test_weight_average_refuses_members_of_different_starts(tmp_path):
    from fer_helpers import ensemble

    for d in ("a", "b", "wide"):
        (tmp_path / d).mkdir()
    a = _fine_tunes(tmp_path / "a", 1, start="cnn_long.safetensors")
    b = _fine_tunes(tmp_path / "b", 1, start="cnn_seed1.safetensors")
    with pytest.raises(ValueError, match=r"fine-tuned from the same weights.*ft0\.safetensors: cnn_long\.safetensors"):
        ensemble.common_start([a[0], b[0]])
    wide = _fine_tunes(tmp_path / "wide", 1, start="cnn_long.safetensors", width=8)  # same start, other width
    with pytest.raises(ValueError, match=r"wide/ft0\.safetensors does not hold the same network"):
        ensemble.average_weights([a[0], wide[0]])


def test_greedy_average_keeps_only_members_that_help(tmp_path, monkeypatch):
    """Best member first; a member whose addition lowers the accuracy is left out (accuracies stubbed per subset)."""
    from fer_helpers import cnn, ensemble

    files = _fine_tunes(tmp_path, 3)
    y = np.arange(10) % 7
    own = {0: 0.6, 1: 0.8, 2: 0.5}  # member -> its own accuracy
    subset_acc = {(1, 0): 0.7, (1, 2): 0.9}  # members averaged -> accuracy

    def probas_with(acc: float) -> np.ndarray:
        hits = round(acc * len(y))
        pred = np.where(np.arange(len(y)) < hits, y, (y + 1) % 7)
        return np.eye(7)[pred]

    def fake_average(members):
        return tuple(files.index(m) for m in members), {"config": {"width": 4, "dropout": 0.4}}

    monkeypatch.setattr(cnn, "member_probas", lambda members, images, tta, progress=False: [probas_with(own[i]) for i in range(3)])
    monkeypatch.setattr(ensemble, "average_weights", fake_average)
    monkeypatch.setattr(ensemble, "_scores", lambda model, images, tta, progress=False: probas_with(subset_acc[model]))
    model, card = ensemble.soup(files, np.zeros((10, 48, 48), np.uint8), y, greedy=True, log=lambda m: None)
    assert model == (1, 2) and card["val_accuracy"] == pytest.approx(0.9)
    # tried best first: ft0 (0.6) lowered the best member's 0.8, ft2 (0.5 alone) raised it
    assert [(s["added"], s["kept"]) for s in card["greedy_steps"]] == [("ft0.safetensors", False), ("ft2.safetensors", True)]
