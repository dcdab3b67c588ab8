import numpy as np
import pytest
import torch

from fer_helpers import classify, transfer


def test_phases_unfreeze_head_then_upper_blocks_then_all():
    model, init = transfer.build("resnet18", pretrained_if_cached=False)
    assert init.startswith("random init")
    n = [sum(p.numel() for p in transfer.phase_parameters(model, "resnet18", k)) for k in (1, 2, 3)]
    assert n[0] == 512 * 7 + 7 and n[0] < n[1] < n[2] == sum(p.numel() for p in model.parameters())
    eff, _ = transfer.build("efficientnet_b0", pretrained_if_cached=False)
    m = [sum(p.numel() for p in transfer.phase_parameters(eff, "efficientnet_b0", k)) for k in (1, 2, 3)]
    assert m[0] < m[1] < m[2]


@pytest.mark.slow
def test_tiny_three_phase_training_and_the_classifier_wrapper(sample_faces, tmp_path):
    cfg = transfer.TransferConfig(arch="resnet18", input_size=48, epochs_per_phase=(1, 1, 1), batch_size=16)
    x, y = sample_faces.images[:32], sample_faces.labels[:32]
    ck = tmp_path / "ck" / "resnet18.pt"
    card = transfer.train(x, y, x[:8], y[:8], cfg, tmp_path / "resnet18.safetensors", checkpoint=ck, log=lambda *_: None)
    assert [h["phase"] for h in card["history"]] == [1, 2, 3] and card["init"].startswith("random init")
    assert [h["epoch"] for h in card["history"]] == [1, 2, 3] and card["val_tta"] == "ten_crop"
    assert sorted(f.name for f in ck.parent.iterdir()) == [f"resnet18_phase{k}.pt" for k in (1, 2, 3)]
    # the same run resumed from its finished checkpoints ships the same weights (the project's loop, phase by phase)
    again = transfer.train(x, y, x[:8], y[:8], cfg, tmp_path / "again.safetensors", checkpoint=ck, resume=True, log=lambda *_: None)
    assert again["val_accuracy"] == card["val_accuracy"] and again["best_epoch"] == card["best_epoch"]
    a, b = transfer.load(tmp_path / "resnet18.safetensors")[0], transfer.load(tmp_path / "again.safetensors")[0]
    for u, v in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(u, v)
    clf = classify.create("resnet18", classify.ClassifyContext(weights={"resnet18": str(tmp_path / "resnet18.safetensors")}))
    p = clf.predict_proba(x[:4])
    assert p.shape == (4, 7) and np.allclose(p.sum(1), 1, atol=1e-5)
    np.testing.assert_array_equal(p, clf.predict_proba(x[:4]))  # deterministic TTA
