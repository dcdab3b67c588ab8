"""A compact CNN for 48x48 grey faces, trained from scratch (no ImageNet weights), and its recipe.

Architecture: a VGG-style stack (Khaireddin & Chen 2021 reach 73.3% on FER2013 PrivateTest with this
shape): four stages of two 3x3 conv + BN + ReLU and a 2x2 max-pool, widths ``width x (1, 2, 4, 8)``,
then global average pooling, dropout and a linear layer. ``width=64`` is the full model; smaller widths
train on a CPU.

Recipe: random 44 px crops of the 48 px face (reflect-padded by 2), horizontal flips, small rotations
and random erasing, applied to every training batch (seed 002's augmentation was silently off); optional
mixup; label smoothing; SGD with Nesterov momentum and a cosine schedule. Test-time augmentation is
deterministic: the five fixed 44 px crops (centre and corners) and their mirror images, averaged.
The epoch kept is the one with the best accuracy on the validation split (PublicTest); PrivateTest is
never read.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import CLASSES

CROP = 44


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class CompactCNN(nn.Module):
    def __init__(self, width: int = 64, n_classes: int = len(CLASSES), dropout: float = 0.4):
        super().__init__()
        w = [width, 2 * width, 4 * width, 8 * width]
        self.features = nn.Sequential(_stage(1, w[0]), _stage(w[0], w[1]), _stage(w[1], w[2]), _stage(w[2], w[3]))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(w[3], n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 48, 48) -> float (N, 1, 48, 48) normalised to [-1, 1] (the model's preprocessing)."""
    return torch.from_numpy(images).float().div_(127.5).sub_(1).unsqueeze(1)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Training augmentation of a (N, 1, 48, 48) batch -> (N, 1, 44, 44): crop, flip, rotation, erasing."""
    n = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    oy, ox = torch.randint(0, 52 - CROP + 1, (2, n), generator=gen)
    crops = torch.stack([padded[i, :, oy[i] : oy[i] + CROP, ox[i] : ox[i] + CROP] for i in range(n)])
    flip = torch.rand(n, generator=gen) < 0.5
    crops[flip] = crops[flip].flip(-1)
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(10)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros(n)], 1), torch.stack([sin, cos, torch.zeros(n)], 1)], 1)
    grid = F.affine_grid(theta, list(crops.shape), align_corners=False)
    crops = F.grid_sample(crops, grid, padding_mode="reflection", align_corners=False)
    # random erasing: one rectangle of 2-20% of the area per image, with probability 0.5
    erase = torch.rand(n, generator=gen) < 0.5
    for i in torch.nonzero(erase).flatten().tolist():
        area = CROP * CROP * (0.02 + 0.18 * torch.rand(1, generator=gen).item())
        h = int(min(CROP, max(1, round(math.sqrt(area * (0.3 + 2.7 * torch.rand(1, generator=gen).item()))))))
        w = int(min(CROP, max(1, round(area / h))))
        y0 = int(torch.randint(0, CROP - h + 1, (1,), generator=gen))
        x0 = int(torch.randint(0, CROP - w + 1, (1,), generator=gen))
        crops[i, :, y0 : y0 + h, x0 : x0 + w] = torch.randn(1, h, w, generator=gen)
    return crops


#: test-time augmentation -> number of fixed 44 px crops used (centre first), each with its mirror image
TTA = {"ten_crop": 5, "flip": 1}


def tta_views(x: torch.Tensor, tta: str = "ten_crop") -> list[torch.Tensor]:
    """The deterministic test views of a (N, 1, 48, 48) batch: ``ten_crop`` gives 5 fixed 44 px crops (centre
    and corners) and their mirrors, ``flip`` the centre crop and its mirror, ``none`` the centre crop."""
    o = 48 - CROP
    crops = [x[..., o // 2 : o // 2 + CROP, o // 2 : o // 2 + CROP], x[..., :CROP, :CROP], x[..., :CROP, o:],
             x[..., o:, :CROP], x[..., o:, o:]]
    if tta == "none":
        return crops[:1]
    if tta not in TTA:
        raise ValueError(f"unknown test-time augmentation {tta!r}; use one of {[*TTA, 'none']}")
    crops = crops[: TTA[tta]]
    return crops + [c.flip(-1) for c in crops]


@torch.no_grad()
def predict_proba(model: nn.Module, images: np.ndarray, device: str = "cpu", batch_size: int = 512, tta: str = "ten_crop") -> np.ndarray:
    """Softmax probabilities (N, 7) in the canonical order, averaged over the TTA views."""
    from .compute import channels_last

    model.eval()
    out = []
    for s in range(0, len(images), batch_size):
        x = channels_last(to_tensor(images[s : s + batch_size]).to(device))
        views = tta_views(x, tta)
        out.append(torch.stack([F.softmax(model(v), dim=1) for v in views]).mean(0).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(CLASSES)))


def mixup_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, alpha: float, smoothing: float, gen: torch.Generator) -> torch.Tensor:
    """Cross-entropy with label smoothing on a mixup batch (lambda ~ Beta(alpha, alpha); alpha 0: no mixup)."""
    if alpha <= 0:
        return F.cross_entropy(model(x), y, label_smoothing=smoothing)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))  # drawn from the run's generator: reproducible
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(len(x), generator=gen).to(x.device)
    logits = model(lam * x + (1 - lam) * x[perm])
    return lam * F.cross_entropy(logits, y, label_smoothing=smoothing) + (1 - lam) * F.cross_entropy(logits, y[perm], label_smoothing=smoothing)


@dataclass
class CNNTrainConfig:
    width: int = 64
    epochs: int = 60
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    mixup: float = 0.2  # Beta(alpha, alpha); 0 disables
    seed: int = 0
    device: str = "auto"
    threads: int | None = None


def train(train_images: np.ndarray, train_labels: np.ndarray, val_images: np.ndarray, val_labels: np.ndarray,
          cfg: CNNTrainConfig, out: Path, log=print) -> dict:
    """Train on (train_images, train_labels); keep the epoch with the best TTA accuracy on the validation set."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    from .io import save_weights

    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    gen = torch.Generator().manual_seed(cfg.seed)
    model = CompactCNN(cfg.width).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    steps = math.ceil(len(train_images) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps, pct_start=0.1, anneal_strategy="cos")
    x_all, y_all = to_tensor(train_images), torch.from_numpy(train_labels.astype(np.int64))
    best, history, t0 = -1.0, [], time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(x_all), generator=gen)
        total = 0.0
        for k in range(steps):
            idx = order[k * cfg.batch_size : (k + 1) * cfg.batch_size]
            x, y = augment(x_all[idx], gen).to(device), y_all[idx].to(device)
            loss = mixup_loss(model, x, y, cfg.mixup, cfg.label_smoothing, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        pred = predict_proba(model, val_images, device).argmax(1)
        acc, f1 = accuracy_score(val_labels, pred), f1_score(val_labels, pred, average="macro")
        history.append({"epoch": epoch + 1, "train_loss": total / steps, "val_accuracy": acc, "val_macro_f1": f1,
                        "seconds": round(time.perf_counter() - t0, 1)})
        log(f"epoch {epoch + 1}/{cfg.epochs}: loss {total / steps:.4f}  val accuracy {acc:.4f}  macro-F1 {f1:.4f}")
        if acc > best:
            best = acc
            card = {"config": asdict(cfg), "best_epoch": epoch + 1, "val_accuracy": acc, "val_macro_f1": f1,
                    "confusion_matrix": confusion_matrix(val_labels, pred, labels=range(len(CLASSES))).tolist(),
                    "labels": list(CLASSES), "train_images": int(len(train_images)), "device": device, "torch": torch.__version__}
            save_weights(out, model.state_dict(), card)
    return card | {"history": history, "train_seconds": round(time.perf_counter() - t0, 1)}


def load(path: str | Path, device: str = "cpu") -> tuple[CompactCNN, dict]:
    from safetensors.torch import load_file

    from .io import read_card

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CNN weights {path} not found: train them with `python -m fer_helpers.cnn` (see the README)")
    card = read_card(path)
    model = CompactCNN(card.get("config", {}).get("width", 64))
    try:
        model.load_state_dict(load_file(str(path)))
    except RuntimeError as e:
        raise ValueError(f"{path} does not hold CompactCNN weights of width {card.get('config', {}).get('width')}: "
                         f"{str(e).splitlines()[0]}") from None
    return model.to(device).eval(), card


def main(argv=None) -> int:
    """``python -m fer_helpers.cnn --fer2013 DIR --out models/cnn/cnn.safetensors [--epochs 60 --width 64]``.

    Trains on the Training split; selects the epoch on PublicTest (the Kaggle test/ folder's PublicTest_*
    files, with Training duplicates and blank faces removed). PrivateTest_* files are never read.
    """
    import argparse

    from . import data
    from .cli import add_config_options, config_from_args

    ap = argparse.ArgumentParser(prog="python -m fer_helpers.cnn")
    ap.add_argument("--fer2013", required=True)
    ap.add_argument("--out", type=Path, required=True)
    add_config_options(ap, CNNTrainConfig, {"threads": int})
    a = ap.parse_args(argv)
    cfg = config_from_args(CNNTrainConfig, a)
    tr, val, dropped = data.fer2013_train_val(a.fer2013)
    print(f"train {len(tr)} faces, validate on {len(val)} PublicTest faces ({dropped} dropped by the audit)")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    card = train(tr.images, tr.labels, val.images, val.labels, cfg, a.out, log=lambda m: print(m, flush=True))
    a.out.with_suffix(".json").write_text(json.dumps(card, indent=2))
    print(f"best PublicTest accuracy {card['val_accuracy']:.4f} at epoch {card['best_epoch']}: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def gradcam(model: CompactCNN, images: np.ndarray, target: np.ndarray | None = None, device: str = "cpu") -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) of the last convolutional stage, for the centre 44 px view.

    ``target``: the class per face to explain (default: the predicted one). Returns (N, 48, 48) maps in
    [0, 1], zero in the 2 px border the centre crop leaves out.
    """
    model.eval()
    layer = model.features[-1][5]  # the last ReLU before the final pooling
    acts: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda m, i, o: acts.append(o))
    try:
        x = to_tensor(images).to(device)[..., 2:46, 2:46].requires_grad_(True)
        logits = model(x)
        t = torch.as_tensor(target if target is not None else logits.argmax(1).cpu().numpy(), device=device)
        grads = torch.autograd.grad(logits.gather(1, t.view(-1, 1)).sum(), acts[0])[0]
    finally:
        hook.remove()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * acts[0]).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=(CROP, CROP), mode="bilinear", align_corners=False).squeeze(1)
    cam = cam / cam.flatten(1).amax(1).clamp_min(1e-8).view(-1, 1, 1)
    out = np.zeros((len(images), 48, 48), np.float32)
    out[:, 2:46, 2:46] = cam.detach().cpu().numpy()
    return out
