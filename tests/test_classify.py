import numpy as np
import pytest

from fer_helpers import classify
from fer_helpers.classify import ClassifierError, label_index
from fer_helpers.data import CLASSES

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


def test_preprocess_travels_with_the_model():
    pre = classify.Preprocess(size=224, channels=3, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = pre(np.full((2, 48, 48), 255, np.uint8))
    assert tuple(x.shape) == (2, 3, 224, 224) and float(x.max()) == pytest.approx(1.0)
    g = classify.Preprocess()(np.zeros((1, 48, 48), np.uint8))
    assert tuple(g.shape) == (1, 1, 48, 48) and float(g.min()) == -1.0


def test_condition_keys_score_every_preset_unrestored_and_the_restored_grid_only_where_asked(tmp_path):
    import pandas as pd

    from fer_helpers import scoring
    from fer_helpers.io import RunDir

    run = RunDir(tmp_path)
    run.path("restoration").mkdir(parents=True)
    pd.DataFrame({"restorer": ["none", "auto", "unet", "median"], "available": [True, True, True, False]}).to_csv(
        run.path("restoration", "restorers.csv"), index=False)
    conds = ["clean", "seed003_low", "noise_5", "blur_1"]
    pd.DataFrame([{"restorer": r, "condition": c} for c in conds for r in ("none", "auto", "unet", "median")]).to_csv(
        run.path("restoration", "metrics.csv"), index=False)
    everything = scoring.condition_keys(run)
    assert len(everything) == 12 and "median|clean" not in everything  # unavailable restorers are never scored
    keys = scoring.condition_keys(run, ["auto"], None, ["seeds"])
    assert keys == ["none|clean", "auto|clean", "none|seed003_low", "auto|seed003_low", "none|noise_5", "none|blur_1"]
    assert scoring.condition_keys(run, None, ["noise_sweep"]) == ["none|clean", "auto|clean", "unet|clean", "none|noise_5", "auto|noise_5", "unet|noise_5"]
