"""Seed 002's transfer recipe for torchvision's EfficientNet-B0 and ResNet-18, with its bugs fixed.

Three phases: (1) the new head only, (2) the upper blocks as well, (3) everything; mixup 0.2, label
smoothing 0.1, cosine annealing with warm restarts (one cycle per phase), deterministic TTA (the
ten views of :func:`fer_helpers.cnn.tta_views`). ImageNet weights are used when they are already in the
torch hub cache (``~/.cache/torch/hub/checkpoints``); otherwise the network trains from scratch and the
card says so (they cannot be downloaded here). Augmentation is applied to every training batch (seed
002 built it and then silently used a dataset without it). Faces go in as 3 equal channels at
``input_size`` with ImageNet normalisation. The best epoch is chosen on the validation split (PublicTest).

Full size needs a GPU: ``python -m fer_helpers.transfer --fer2013 DIR --arch efficientnet_b0 --input-size 224``.
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

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: torchvision weights enum name per architecture (looked up only in the local cache)
WEIGHTS = {"efficientnet_b0": "EfficientNet_B0_Weights", "resnet18": "ResNet18_Weights"}


def build(arch: str, pretrained_if_cached: bool = True) -> tuple[nn.Module, str]:
    """The network with a 7-class head, and where its starting weights came from."""
    import torchvision.models as tvm

    enum = getattr(tvm, WEIGHTS[arch]).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
    weights = enum if pretrained_if_cached and cached.is_file() else None
    model = getattr(tvm, arch)(weights=weights)
    if arch == "resnet18":
        model.fc = nn.Linear(model.fc.in_features, len(CLASSES))
    else:
        model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, len(CLASSES))
    return model, ("ImageNet (torch cache)" if weights else "random init (no ImageNet weights in the torch cache)")


def phase_parameters(model: nn.Module, arch: str, phase: int) -> list[nn.Parameter]:
    """Trainable parameters of phase 1 (head), 2 (head + upper half of the blocks) or 3 (all)."""
    if arch == "resnet18":
        head, upper = [model.fc], [model.layer3, model.layer4]
    else:
        head, upper = [model.classifier], list(model.features)[5:]  # EfficientNet-B0 blocks 5-8
    groups = head if phase == 1 else head + upper if phase == 2 else [model]
    return [p for g in groups for p in g.parameters()]


def preprocess(images: np.ndarray, input_size: int) -> torch.Tensor:
    x = torch.from_numpy(images).float().div_(255).unsqueeze(1)
    x = F.interpolate(x, size=(input_size, input_size), mode="bicubic", align_corners=False).clamp_(0, 1).expand(-1, 3, -1, -1)
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


@torch.no_grad()
def predict_proba(model: nn.Module, images: np.ndarray, input_size: int, device: str = "cpu", batch_size: int = 128,
                  tta: str = "ten_crop") -> np.ndarray:
    from .cnn import to_tensor, tta_views

    model.eval()
    out = []
    for s in range(0, len(images), batch_size):
        views = tta_views(to_tensor(images[s : s + batch_size]), tta)
        probs = []
        for v in views:
            v = ((v + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).squeeze(1).numpy()  # back to pixels, then the model's preprocessing
            probs.append(F.softmax(model(preprocess(v, input_size).to(device)), dim=1))
        out.append(torch.stack(probs).mean(0).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(CLASSES)))


@dataclass
class TransferConfig:
    arch: str = "efficientnet_b0"
    input_size: int = 224
    epochs_per_phase: tuple[int, int, int] = (2, 4, 10)
    lr_per_phase: tuple[float, float, float] = (3e-3, 1e-3, 3e-4)
    batch_size: int = 64
    mixup: float = 0.2
    label_smoothing: float = 0.1
    seed: int = 0
    device: str = "auto"


def train(train_images, train_labels, val_images, val_labels, cfg: TransferConfig, out: Path, log=print) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    from .cnn import augment, mixup_loss, to_tensor
    from .io import save_weights

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    model, init = build(cfg.arch)
    model = model.to(device)
    x_all, y_all = to_tensor(train_images), torch.from_numpy(train_labels.astype(np.int64))
    steps = math.ceil(len(x_all) / cfg.batch_size)
    best, history, t0, card, epoch_no = -1.0, [], time.perf_counter(), {}, 0
    for phase, (epochs, lr) in enumerate(zip(cfg.epochs_per_phase, cfg.lr_per_phase), start=1):
        for p in model.parameters():
            p.requires_grad_(False)
        params = phase_parameters(model, cfg.arch, phase)
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=max(1, epochs * steps))
        for _ in range(epochs):
            epoch_no += 1
            model.train()
            order = torch.randperm(len(x_all), generator=gen)
            total = 0.0
            for k in range(steps):
                idx = order[k * cfg.batch_size : (k + 1) * cfg.batch_size]
                crops = augment(x_all[idx], gen)  # (n, 1, 44, 44) in [-1, 1]; the model's preprocessing follows
                pix = ((crops + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).squeeze(1).numpy()
                x, y = preprocess(pix, cfg.input_size).to(device), y_all[idx].to(device)
                loss = mixup_loss(model, x, y, cfg.mixup, cfg.label_smoothing, gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item()
            pred = predict_proba(model, val_images, cfg.input_size, device).argmax(1)
            acc, f1 = accuracy_score(val_labels, pred), f1_score(val_labels, pred, average="macro")
            history.append({"epoch": epoch_no, "phase": phase, "train_loss": total / steps, "val_accuracy": acc, "val_macro_f1": f1})
            log(f"{cfg.arch} phase {phase} epoch {epoch_no}: loss {total / steps:.4f}  val accuracy {acc:.4f}")
            if acc > best:
                best = acc
                card = {"config": asdict(cfg), "init": init, "best_epoch": epoch_no, "val_accuracy": acc, "val_macro_f1": f1,
                        "device": device, "torch": torch.__version__}
                save_weights(out, model.state_dict(), card)
    return card | {"history": history, "train_seconds": round(time.perf_counter() - t0, 1)}


def load(path: str | Path, device: str = "cpu") -> tuple[nn.Module, dict]:
    from safetensors.torch import load_file

    from .io import read_card

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights {path} not found: train them with `python -m fer_helpers.transfer` (GPU)")
    card = read_card(path)
    model, _ = build(card["config"]["arch"], pretrained_if_cached=False)
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval(), card


def main(argv=None) -> int:
    import argparse

    from . import data

    ap = argparse.ArgumentParser(prog="python -m fer_helpers.transfer", description=__doc__.splitlines()[0])
    ap.add_argument("--fer2013", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--arch", choices=list(WEIGHTS), default="efficientnet_b0")
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--epochs", type=int, nargs=3, default=[2, 4, 10], metavar=("HEAD", "UPPER", "ALL"))
    a = ap.parse_args(argv)
    tr, val, _ = data.fer2013_train_val(a.fer2013)
    cfg = TransferConfig(arch=a.arch, input_size=a.input_size, epochs_per_phase=tuple(a.epochs))
    card = train(tr.images, tr.labels, val.images, val.labels, cfg, a.out, log=lambda m: print(m, flush=True))
    a.out.with_suffix(".json").write_text(json.dumps(card, indent=2))
    print(f"best PublicTest accuracy {card['val_accuracy']:.4f} ({card['init']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
