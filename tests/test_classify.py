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
