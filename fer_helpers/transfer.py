"""Seed 002's transfer recipe for torchvision's EfficientNet-B0 and ResNet-18, with its bugs fixed.

Three phases: (1) the new head only, (2) the upper blocks as well, (3) everything; mixup 0.2, label
smoothing 0.1, one cosine cycle per phase (seed 002's warm restarts), deterministic TTA (the ten views of
:func:`fer_helpers.cnn.tta_views`). Each phase runs on the project's one training loop
(:mod:`fer_helpers.training`: batched augmentation, bf16 where native, EMA, a checkpoint per epoch,
``--resume``). ImageNet weights are used when they are already in the torch hub cache (``~/.cache/torch/hub/checkpoints``); otherwise the network trains from scratch and the
card says so (they cannot be downloaded here). Augmentation is applied to every training batch (seed
002 built it and then silently used a dataset without it). Faces go in as 3 equal channels at
``input_size`` with ImageNet normalisation. The best epoch is chosen on the validation split (PublicTest).

Full size needs a GPU: ``python -m fer_helpers.transfer --fer2013 DIR --arch efficientnet_b0 --input-size 224``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import training
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


def to_input(faces: torch.Tensor, input_size: int) -> torch.Tensor:
    """Grey faces (N, 1, h, w) in [0, 1] -> the network's input: bicubic to ``input_size``, 3 equal channels,
    ImageNet normalisation (on the faces' device)."""
    x = F.interpolate(faces, size=(input_size, input_size), mode="bicubic", align_corners=False).clamp_(0, 1).expand(-1, 3, -1, -1)
    mean, std = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    return (x - mean) / std


def preprocess(images: np.ndarray, input_size: int) -> torch.Tensor:
    """uint8 (N, h, w) faces -> the network's input (:func:`to_input`)."""
    return to_input(torch.from_numpy(images).float().div_(255).unsqueeze(1), input_size)


def _pixels(views: torch.Tensor) -> torch.Tensor:
    """CNN-style views in [-1, 1] -> [0, 1], rounded to grey levels (what a saved crop of the face would hold)."""
    return ((views + 1) * 127.5).round().clamp(0, 255) / 255


@torch.no_grad()
def predict_proba(model: nn.Module, images: np.ndarray, input_size: int, device: str = "cpu", batch_size: int = 128,
                  tta: str = "ten_crop") -> np.ndarray:
    """Softmax probabilities (N, 7) averaged over the TTA views of :func:`fer_helpers.cnn.tta_views`."""
    from .cnn import to_tensor, tta_views

    model.eval()
    out = []
    for s in range(0, len(images), batch_size):
        views = tta_views(to_tensor(images[s : s + batch_size]), tta)
        probs = [F.softmax(model(to_input(_pixels(v).to(device), input_size)).float(), dim=1) for v in views]
        out.append(torch.stack(probs).mean(0).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(CLASSES)))


@dataclass
class TransferConfig(training.FitConfig):
    """Seed 002's recipe on the project's loop. Each phase is one run of :func:`fer_helpers.training.fit` with its
    own epochs and learning rate (``epochs`` and ``lr`` are set per phase), one cosine from that rate down (seed
    002's warm restarts, one cycle per phase); the next phase starts from the weights the previous one kept."""

    arch: str = "efficientnet_b0"
    input_size: int = 224
    epochs_per_phase: tuple[int, int, int] = (2, 4, 10)
    lr_per_phase: tuple[float, float, float] = (3e-3, 1e-3, 3e-4)
    batch_size: int = 64
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    mixup: float = 0.2
    label_smoothing: float = 0.1


def make_recipe(model: nn.Module, cfg: TransferConfig, val_images: np.ndarray, val_labels: np.ndarray) -> training.Recipe:
    """The transfer network's part of the loop: CNN-style batched augmentation at 44 px, resized to the
    network's input; mixup with label smoothing; centre-crop validation."""
    from .cnn import augment, mixup_loss, to_tensor

    device = cfg.resolved_device()

    def prepare(xb: torch.Tensor, yb: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return to_input(_pixels(augment(to_tensor(xb), gen)), cfg.input_size), yb

    def loss(m: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return mixup_loss(m, inputs, targets, cfg.mixup, cfg.label_smoothing, gen)

    def validate(m: nn.Module) -> dict[str, float]:
        pred = predict_proba(m, val_images, cfg.input_size, device, tta="none").argmax(1)
        return {"score": float((pred == val_labels).mean())}

    return training.Recipe(model, prepare, loss, validate, training.recipe_options(cfg))


def train(train_images: np.ndarray, train_labels: np.ndarray, val_images: np.ndarray, val_labels: np.ndarray,
          cfg: TransferConfig, out: Path, checkpoint: Path | None = None, resume: bool = False,
          progress: bool = False, log=print) -> dict:
    """Three phases through the project's loop (each with a checkpoint, ``<checkpoint stem>_phase<k>.pt``); keep
    the phase whose kept weights validated best, score them with ten-crop TTA for the card and save them."""
    from dataclasses import replace

    from .training import card_scores

    from .io import save_weights

    torch.manual_seed(cfg.seed)
    model, init = build(cfg.arch)
    x, y = torch.from_numpy(train_images), torch.from_numpy(train_labels.astype(np.int64))
    best: training.FitResult | None = None
    history: list[dict] = []
    seconds, speeds = 0.0, []
    for phase, (epochs, lr) in enumerate(zip(cfg.epochs_per_phase, cfg.lr_per_phase), start=1):
        for p in model.parameters():
            p.requires_grad_(False)
        for p in phase_parameters(model, cfg.arch, phase):
            p.requires_grad_(True)  # the loop's optimiser takes only these
        phase_cfg = replace(cfg, epochs=epochs, lr=lr)
        ck = checkpoint.with_name(f"{checkpoint.stem}_phase{phase}.pt") if checkpoint else None
        result = training.fit(make_recipe(model, phase_cfg, val_images, val_labels), x, y, phase_cfg, checkpoint=ck,
                              resume=resume, progress=progress, log=lambda m, k=phase: log(f"{cfg.arch} phase {k}: {m}"))
        history += [{"phase": phase, **h, "epoch": len(history) + h["epoch"]} for h in result.history]
        seconds, speeds = seconds + result.train_seconds, speeds + [result.images_per_second]
        if best is None or result.best_score > best.best_score:
            best = result
            best.best_epoch = len(history) - len(result.history) + result.best_epoch  # counted over all phases
        model = result.model  # the next phase starts from what this one kept
    kept = best.model.float()
    pred = predict_proba(kept, val_images, cfg.input_size, best.device, tta="ten_crop").argmax(1)
    card = {"config": asdict(cfg), "arch": cfg.arch, "init": init, "val_centre_accuracy": best.best_score,
            **card_scores(val_labels, pred, CLASSES), "val_tta": "ten_crop", "train_images": int(len(train_images)), "val_images": int(len(val_images)),
            **training.run_facts(best), "epochs_run": len(history), "train_seconds": round(seconds, 1),
            "images_per_second": round(float(np.mean(speeds)), 1)}
    save_weights(out, kept.state_dict(), card)
    return card | {"history": history}


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
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (the data then stays on the GPU)")
    ap.add_argument("--checkpoint", type=Path, help="default: ~/.cache/fer-study/train/<out name>.pt (one file per phase)")
    ap.add_argument("--resume", action="store_true", help="continue from the phases' checkpoints if there are any")
    a = ap.parse_args(argv)
    tr, val, _ = data.fer2013_train_val(a.fer2013)
    cfg = TransferConfig(arch=a.arch, input_size=a.input_size, epochs_per_phase=tuple(a.epochs), device=a.device)
    checkpoint = a.checkpoint or training.CHECKPOINT_ROOT / f"{a.out.stem}.pt"
    a.out.parent.mkdir(parents=True, exist_ok=True)
    card = train(tr.images, tr.labels, val.images, val.labels, cfg, a.out, checkpoint=checkpoint, resume=a.resume,
                 progress=True, log=lambda m: print(m, flush=True))
    a.out.with_suffix(".json").write_text(json.dumps(card, indent=2))
    print(f"PublicTest accuracy {card['val_accuracy']:.4f} (ten-crop TTA; {card['init']}): {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
