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
    cfg = vit.ViTTrainConfig(hidden_size=32, layers=1, heads=2, epochs=1, batch_size=16, device="cpu")
    card = vit.train(sample_faces.images, sample_faces.labels, sample_faces.images[:14], sample_faces.labels[:14], cfg,
                     tmp_path / "vit", log=lambda *_: None)
    assert card["teacher"] is None
    assert (tmp_path / "vit" / "config.json").is_file() and (tmp_path / "vit" / "preprocessor_config.json").is_file()
    model, processor = vit.load(str(tmp_path / "vit"))
    p = vit.predict_proba(model, processor, sample_faces.images[:5])
    assert p.shape == (5, 7) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert label_index(model.config.id2label).tolist() == list(range(len(CLASSES)))
    assert 0 <= card["val_accuracy"] <= 1


def test_continued_vit_starts_from_the_init_folder_and_says_so(sample_faces, tmp_path):
    import torch

    small = dict(hidden_size=16, layers=1, heads=2, batch_size=16, device="cpu")
    start = vit.train(sample_faces.images, sample_faces.labels, sample_faces.images[:14], sample_faces.labels[:14],
                      vit.ViTTrainConfig(epochs=1, **small), tmp_path / "start", log=lambda *_: None)
    recipe, _, _ = vit.make_recipe(vit.ViTTrainConfig(epochs=1, seed=5, init=str(tmp_path / "start"), **small),
                                   sample_faces.images[:14], sample_faces.labels[:14])
    saved, _ = vit.load(str(tmp_path / "start"))
    for name, w in saved.state_dict().items():  # the recipe's model holds the saved weights, not a fresh seed-5 draw
        assert torch.equal(recipe.model.state_dict()[name], w), name
    card = vit.train(sample_faces.images, sample_faces.labels, sample_faces.images[:14], sample_faces.labels[:14],
                     vit.ViTTrainConfig(epochs=1, init=str(tmp_path / "start"), **small), tmp_path / "next", log=lambda *_: None)
    assert card["initialised_from"] == {"weights": "start", "val_accuracy": start["val_accuracy"], "epochs": 1}
    with pytest.raises(ValueError, match="hidden size/layers/heads/patch/mlp ratio"):
        vit.make_recipe(vit.ViTTrainConfig(init=str(tmp_path / "start"), **(small | {"hidden_size": 32})),
                        sample_faces.images[:14], sample_faces.labels[:14])


def test_stop_after_ends_a_vit_run_early_with_its_model_folder(sample_faces, tmp_path):
    cfg = vit.ViTTrainConfig(hidden_size=16, layers=1, heads=2, epochs=3, batch_size=16, device="cpu")
    card = vit.train(sample_faces.images, sample_faces.labels, sample_faces.images[:14], sample_faces.labels[:14], cfg,
                     tmp_path / "vit", checkpoint=tmp_path / "vit.pt", log=lambda *_: None, stop_after=1)
    assert card["epochs_run"] == 1 and len(card["history"]) == 1 and card["config"]["epochs"] == 3
    assert (tmp_path / "vit" / "model.safetensors").is_file() and (tmp_path / "vit.pt").is_file()


def test_distillation_loss_mixes_labels_and_teacher():
    import torch
    import torch.nn.functional as F

    from fer_helpers.training import distillation_loss

    torch.manual_seed(0)
    student, teacher, y = torch.randn(8, 7), torch.randn(8, 7), torch.randint(0, 7, (8,))
    ce = F.cross_entropy(student, y)
    assert torch.allclose(distillation_loss(ce, student, None, 0.7, 4.0), ce)
    assert torch.allclose(distillation_loss(ce, student, teacher, 0.0, 4.0), ce)
    # a student that equals its teacher pays only the label term
    ce_t = F.cross_entropy(teacher, y)
    assert torch.allclose(distillation_loss(ce_t, teacher, teacher, 0.5, 2.0), 0.5 * ce_t, atol=1e-6)
    kl = F.kl_div(F.log_softmax(student / 2, 1), F.softmax(teacher / 2, 1), reduction="batchmean")
    assert torch.allclose(distillation_loss(ce, student, teacher, 1.0, 2.0), 4 * kl, atol=1e-5)


@pytest.mark.slow
def test_distilled_vit_names_its_teacher(sample_faces, tmp_path):
    import torch

    from fer_helpers import cnn
    from fer_helpers.io import save_weights

    torch.manual_seed(0)
    teacher = tmp_path / "teacher.safetensors"
    save_weights(teacher, cnn.CompactCNN(width=4).state_dict(), {"config": {"width": 4}, "arch": "CompactCNN", "val_accuracy": 0.5})
    cfg = vit.ViTTrainConfig(hidden_size=16, layers=1, heads=2, epochs=1, batch_size=16, device="cpu", teacher=str(teacher))
    card = vit.train(sample_faces.images, sample_faces.labels, sample_faces.images[:14], sample_faces.labels[:14], cfg,
                     tmp_path / "vit", log=lambda *_: None)
    assert card["teacher"] == {"weights": "teacher.safetensors", "arch": "CompactCNN", "width": 4, "val_accuracy": 0.5}
    assert np.array(card["confusion_matrix"]).sum() == 14


def test_bf16_vit_inference_is_really_bf16_and_close_to_fp32(sample_faces):
    import torch

    torch.manual_seed(0)
    model, processor = vit.build(vit.ViTTrainConfig(hidden_size=32, layers=1, heads=2))
    model.eval()
    p32 = vit.predict_proba(model, processor, sample_faces.images)
    p16 = vit.predict_proba(model, processor, sample_faces.images, precision="bf16")
    assert p16.dtype == p32.dtype and not np.array_equal(p16, p32)
    np.testing.assert_allclose(p16, p32, atol=0.02)
    np.testing.assert_allclose(p16.sum(1), 1.0, rtol=1e-5)
