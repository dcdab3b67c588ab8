import time

import numpy as np
import pytest

from fer_helpers import vit
from fer_helpers.classify import ClassifierUnavailable, label_index
from fer_helpers.data import CLASSES


def test_hub_id_offline_is_unavailable_within_seconds(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setattr(vit, "hub_reachable", lambda *a, **k: False)
    t = time.perf_counter()
    with pytest.raises(ClassifierUnavailable, match="not in the local Hugging Face cache and huggingface.co is unreachable"):
        vit.load(vit.HUB_VIT)
    assert time.perf_counter() - t < 5


def test_a_folder_without_config_is_named(tmp_path):
    with pytest.raises(ClassifierUnavailable, match="is not a Hugging Face model folder"):
        vit.load(str(tmp_path))


def test_trained_vit_is_a_model_folder_the_same_loader_opens(sample_faces, tmp_path):
    cfg = vit.ViTTrainConfig(hidden_size=32, layers=1, heads=2, epochs=1, batch_size=16)
    card = vit.train(sample_faces.images, sample_faces.labels, sample_faces.images[:14], sample_faces.labels[:14], cfg,
                     tmp_path / "vit", log=lambda *_: None)
    assert (tmp_path / "vit" / "config.json").is_file() and (tmp_path / "vit" / "preprocessor_config.json").is_file()
    model, processor = vit.load(str(tmp_path / "vit"))
    p = vit.predict_proba(model, processor, sample_faces.images[:5])
    assert p.shape == (5, 7) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert label_index(model.config.id2label).tolist() == list(range(len(CLASSES)))
    assert 0 <= card["val_accuracy"] <= 1
