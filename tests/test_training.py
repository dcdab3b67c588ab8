"""The training loop: exact resume after a real kill, the schedule, the EMA, batched augmentation."""

import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from fer_helpers import training

ROOT = Path(__file__).resolve().parents[1]

# A tiny run: a small CNN on random 16 px images; ``kill_after`` kills the process with SIGKILL as soon
# as that epoch's checkpoint is on disk (the log line comes before the checkpoint is written, so the
# kill happens at the next epoch's first log).
TINY_RUN = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import torch, torch.nn as nn, torch.nn.functional as F
    from fer_helpers import training

    out, kill_after, resume = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (96, 1, 16, 16), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 3, (96,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.3),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    prepare = lambda xb, yb, gen: (training.random_erase(training.random_affine_crop(
        xb.float() / 255, 12, gen), gen), yb)
    loss = lambda m, i, t, gen: F.cross_entropy(m(i), t)
    validate = lambda m: {"score": float(m(x[:32, :, 2:14, 2:14].float() / 255).softmax(1)[:, 0].mean())}
    cfg = training.FitConfig(epochs=4, batch_size=32, lr=0.05, ema_decay=0.9, device="cpu", threads=1, precision="fp32")
    def log(msg):
        if msg.startswith(f"epoch {kill_after + 1}/"):
            os.kill(os.getpid(), signal.SIGKILL)
    res = training.fit(training.Recipe(model, prepare, loss, validate), x, y, cfg, checkpoint=out / "ck.pt",
                       resume=resume, progress=False, log=log)
    torch.save({"kept": res.model.state_dict(), "best_epoch": res.best_epoch}, out / "result.pt")
""")


def _run(folder: Path, kill_after: int, resume: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", TINY_RUN, str(folder), str(kill_after), "1" if resume else "0"],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_killed_and_resumed_run_gives_the_same_weights(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    assert _run(straight, kill_after=99, resume=False).returncode == 0
    first = _run(killed, kill_after=2, resume=False)
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert torch.load(killed / "ck.pt", weights_only=True)["epoch"] == 2  # killed during epoch 3
    assert not (killed / "result.pt").exists()
    second = _run(killed, kill_after=99, resume=True)
    assert second.returncode == 0, second.stderr
    a, b = (torch.load(f / "result.pt", weights_only=True) for f in (straight, killed))
    assert a["best_epoch"] == b["best_epoch"]
    assert all(torch.equal(a["kept"][k], b["kept"][k]) for k in a["kept"])
    ca, cb = (torch.load(f / "ck.pt", weights_only=True) for f in (straight, killed))
    assert all(torch.equal(ca["model"][k], cb["model"][k]) for k in ca["model"])
    assert all(torch.equal(ca["ema"][k], cb["ema"][k]) for k in ca["ema"])
    assert [r["train_loss"] for r in ca["history"]] == [r["train_loss"] for r in cb["history"]]


def _tiny_fit(tmp_path, resume=False, **cfg):
    torch.manual_seed(0)
    x, y = torch.rand(40, 1, 8, 8), torch.randint(0, 2, (40,))
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    options = {"epochs": 2, "batch_size": 16, "device": "cpu", "precision": "fp32"} | cfg
    recipe = training.Recipe(model, lambda a, b, g: (a, b), lambda m, i, t, g: nn.functional.cross_entropy(m(i), t),
                             lambda m: {"score": 0.5})
    return training.fit(recipe, x, y, training.FitConfig(**options), checkpoint=tmp_path / "ck.pt", resume=resume,
                        progress=False, log=lambda _: None)


def test_resume_refuses_a_checkpoint_made_with_other_settings(tmp_path):
    _tiny_fit(tmp_path, lr=0.1)
    with pytest.raises(ValueError, match=r"ck\.pt.*lr: 0\.1 -> 0\.2.*delete it to start over"):
        _tiny_fit(tmp_path, resume=True, lr=0.2)
    (tmp_path / "ck.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=r"cannot resume from .*ck\.pt"):
        _tiny_fit(tmp_path, resume=True, lr=0.1)


def test_history_and_throughput_are_reported(tmp_path):
    res = _tiny_fit(tmp_path, epochs=3)
    assert [r["epoch"] for r in res.history] == [1, 2, 3]
    assert res.images_per_second > 0 and res.best_epoch == 1  # equal scores: the first is kept
    assert res.precision == "fp32" and not res.model.training


def test_learning_rate_is_a_function_of_the_global_step():
    total, warm = 100, 10
    lrs = [training.lr_at(s, total, warm, 0.1, 0.01) for s in range(total)]
    assert lrs[0] == pytest.approx(0.01) and lrs[warm - 1] == pytest.approx(0.1)
    assert lrs[warm] == pytest.approx(0.1) and max(lrs) == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[warm:], lrs[warm + 1:]))  # cosine decay is monotone
    assert training.lr_at(total, total, warm, 0.1, 0.01) == pytest.approx(0.001)
    mid = warm + (total - warm) // 2
    assert lrs[mid] == pytest.approx(0.001 + 0.099 * 0.5 * (1 + math.cos(math.pi * (mid - warm) / (total - warm))))


def test_ema_moves_towards_the_model_and_copies_integer_buffers():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    ema = training.EMA(model, decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model[1].num_batches_tracked += 5
    before = [p.clone() for p in ema.module.parameters()]
    ema.update(model, step=10**6)  # past the warm-up: decay 0.5
    for b, e, m in zip(before, ema.module.parameters(), model.parameters()):
        torch.testing.assert_close(e, (b + m) / 2)
    assert int(ema.module[1].num_batches_tracked) == 5


def test_batched_augmentation_is_seeded_changes_images_and_keeps_shapes():
    x = torch.rand(64, 1, 48, 48)
    views = [training.random_affine_crop(x, 44, torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    assert views[0].shape == (64, 1, 44, 44)
    assert torch.equal(views[0], views[1]) and not torch.equal(views[0], views[2])
    centre = x[..., 2:46, 2:46]
    assert (views[0] - centre).abs().mean() > 0.05
    # no rotation, zoom or shift: every view is the centre crop or its mirror, about half of each
    plain = training.random_affine_crop(x, 44, torch.Generator().manual_seed(0), shift=0, rotate=0)
    same = [torch.allclose(p, c, atol=1e-5) for p, c in zip(plain, centre)]
    mirrored = [torch.allclose(p, c.flip(-1), atol=1e-5) for p, c in zip(plain, centre)]
    assert all(s or m for s, m in zip(same, mirrored)) and 16 < sum(mirrored) < 48


def test_random_erase_replaces_one_rectangle_per_chosen_image():
    x = torch.full((200, 1, 20, 20), 7.0)
    out = training.random_erase(x, torch.Generator().manual_seed(0), p=0.5, area=(0.1, 0.1), aspect=(1.0, 1.0))
    changed = (out != 7.0).flatten(1).sum(1)
    erased = changed > 0
    assert 70 < int(erased.sum()) < 130  # about half the images
    assert (changed[erased] == 6 * 7).all()  # 10% of 400 pixels: height round(sqrt(40)) = 6, width round(40 / 6) = 7
    for img in out[erased][:10, 0]:
        rows, cols = torch.nonzero(img != 7.0, as_tuple=True)
        assert (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) == len(rows)  # one rectangle
    assert torch.equal(out, training.random_erase(x, torch.Generator().manual_seed(0), p=0.5, area=(0.1, 0.1), aspect=(1.0, 1.0)))


@pytest.mark.gpu
def test_the_same_loop_trains_the_cnn_on_a_gpu(sample_faces, tmp_path):
    """--device cuda runs unchanged: bf16 autocast, data kept on the device, a CPU-loadable card and weights."""
    from fer_helpers import cnn

    x, y = sample_faces.images, sample_faces.labels
    cfg = cnn.CNNTrainConfig(width=8, epochs=2, batch_size=16, lr=0.01, device="cuda")
    card = cnn.train(x, y, x[:14], y[:14], cfg, tmp_path / "gpu.safetensors", log=lambda *_: None)
    assert card["device"] == "cuda" and card["precision"] == "bf16" and len(card["history"]) == 2
    model, meta = cnn.load(tmp_path / "gpu.safetensors", "cpu")
    assert meta["val_accuracy"] == card["val_accuracy"]


def test_stop_after_ends_early_and_a_resume_finishes_the_same_curve(tmp_path):
    """--stop-after: the run ends after that epoch with the best weights so far; a later resume without it
    continues the planned schedule and ends where an uninterrupted run ends."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    full = _tiny_fit(tmp_path / "a", epochs=3)
    early = training.fit(*_tiny_args(), training.FitConfig(epochs=3, batch_size=16, device="cpu", precision="fp32"),
                         checkpoint=tmp_path / "b" / "ck.pt", progress=False, log=lambda _: None, stop_after=2)
    assert len(early.history) == 2 and early.images_per_second > 0
    again = training.fit(*_tiny_args(), training.FitConfig(epochs=3, batch_size=16, device="cpu", precision="fp32"),
                         checkpoint=tmp_path / "b" / "ck.pt", resume=True, progress=False, log=lambda _: None, stop_after=2)
    assert len(again.history) == 2 and again.images_per_second > 0  # nothing more to train: the card still has a speed
    rest = training.fit(*_tiny_args(), training.FitConfig(epochs=3, batch_size=16, device="cpu", precision="fp32"),
                        checkpoint=tmp_path / "b" / "ck.pt", resume=True, progress=False, log=lambda _: None)
    assert [h["train_loss"] for h in rest.history] == [h["train_loss"] for h in full.history]


def _tiny_args():
    torch.manual_seed(0)
    x, y = torch.rand(40, 1, 8, 8), torch.randint(0, 2, (40,))
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    recipe = training.Recipe(model, lambda a, b, g: (a, b), lambda m, i, t, g: nn.functional.cross_entropy(m(i), t),
                             lambda m: {"score": 0.5})
    return recipe, x, y


def test_a_checkpoint_from_before_a_new_option_still_resumes_when_the_option_is_left_at_its_default():
    saved = {"epochs": 50, "lr": 0.05, "recipe": {"mixup": 0.2}}
    now = {"epochs": 50, "lr": 0.05, "init": "", "recipe": {"mixup": 0.2, "init": ""}, "device": "cuda"}
    assert training._config_mismatch(saved, now, {"init": "", "mixup": 0.0}) == []
    changed = {**now, "init": "a.safetensors", "recipe": {"mixup": 0.2, "init": "a.safetensors"}}
    assert training._config_mismatch(saved, changed, {"init": ""}) == ["init: None -> 'a.safetensors'",
                                                                         "recipe.init: None -> 'a.safetensors'"]
