"""Vision Transformers through ``transformers``: a hub model by id, or a model folder the project trained.

One loading path for both (:func:`load`): ``AutoModelForImageClassification`` and ``AutoImageProcessor``
``from_pretrained``. The processor is the model's preprocessing (size, normalisation), so nothing about
it is hard-coded elsewhere; the model's ``config.id2label`` gives its label order, which
:func:`fer_helpers.classify.label_index` maps onto the canonical classes.

A hub id is looked up in the local cache first; only if it is not there and ``huggingface.co`` answers
within two seconds is it downloaded. Offline, the answer "unavailable" comes at once instead of after
the hub client's retries (about 20 s).

The project's own ViT (:func:`train`) is small enough to train on a CPU: 48 px faces as 3 equal
channels, 6 px patches (64 tokens), saved with ``save_pretrained`` as a model folder (weights, config
with id2label, image processor).
"""

from __future__ import annotations

import json
import math
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .data import CLASSES

HUB_VIT = "trpakov/vit-face-expression"


def hub_reachable(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def load(name_or_path: str, device: str = "cpu"):
    """(model, processor) from a local model folder or a hub id; :class:`ClassifierUnavailable` when neither is possible."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from .classify import ClassifierUnavailable

    local = Path(name_or_path).expanduser()
    if local.exists() or name_or_path.startswith((".", "/", "~")):
        if not (local / "config.json").is_file():
            raise ClassifierUnavailable(name_or_path, f"{local} is not a Hugging Face model folder (no config.json)",
                                        "train one with `python -m fer_helpers.vit train` or point at a folder saved with save_pretrained")
        kwargs = {"local_files_only": True}
        src = str(local)
    else:
        src = name_or_path
        try:
            AutoModelForImageClassification.from_pretrained(src, local_files_only=True)
            kwargs = {"local_files_only": True}
        except OSError:
            if not hub_reachable():
                raise ClassifierUnavailable(name_or_path, f"{name_or_path} is not in the local Hugging Face cache and huggingface.co is unreachable (offline)",
                                            "run once on a machine online (or on Colab), or copy its cache into HF_HOME") from None
            kwargs = {}
    try:
        model = AutoModelForImageClassification.from_pretrained(src, **kwargs).to(device).eval()
        processor = AutoImageProcessor.from_pretrained(src, **kwargs)
    except (OSError, ValueError) as e:
        raise ClassifierUnavailable(name_or_path, f"cannot load {src}: {str(e).splitlines()[0]}", "check the id or folder") from None
    return model, processor


def predict_proba(model, processor, images: np.ndarray, device: str = "cpu", batch_size: int = 128) -> np.ndarray:
    """Softmax probabilities in the *model's* label order (``model.config.id2label``) for grey uint8 faces."""
    import torch

    out = []
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            rgb = [np.repeat(im[:, :, None], 3, axis=2) for im in images[s : s + batch_size]]
            x = processor(images=rgb, return_tensors="pt")["pixel_values"].to(device)
            out.append(torch.softmax(model(pixel_values=x).logits, dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.num_labels))


@dataclass
class ViTTrainConfig:
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    patch_size: int = 6
    epochs: int = 15
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    seed: int = 0
    threads: int | None = None


def train(train_images: np.ndarray, train_labels: np.ndarray, val_images: np.ndarray, val_labels: np.ndarray,
          cfg: ViTTrainConfig, out_dir: Path, log=print) -> dict:
    """Train a small ViT from scratch; save the epoch with the best validation accuracy as a model folder."""
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    from .cnn import augment

    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    gen = torch.Generator().manual_seed(cfg.seed)
    config = ViTConfig(image_size=48, patch_size=cfg.patch_size, num_channels=3, hidden_size=cfg.hidden_size,
                       num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, intermediate_size=2 * cfg.hidden_size,
                       num_labels=len(CLASSES), id2label=dict(enumerate(CLASSES)), label2id={c: i for i, c in enumerate(CLASSES)})
    model = ViTForImageClassification(config)
    processor = ViTImageProcessor(do_resize=True, size={"height": 48, "width": 48}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = math.ceil(len(train_images) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps, pct_start=0.1)
    x_all = torch.from_numpy(train_images).float().div_(127.5).sub_(1).unsqueeze(1)  # the processor's normalisation
    y_all = torch.from_numpy(train_labels.astype(np.int64))
    best, history, t0, card = -1.0, [], time.perf_counter(), {}
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(x_all), generator=gen)
        total = 0.0
        for k in range(steps):
            idx = order[k * cfg.batch_size : (k + 1) * cfg.batch_size]
            x = F.interpolate(augment(x_all[idx], gen), size=48, mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
            loss = F.cross_entropy(model(pixel_values=x).logits, y_all[idx], label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        model.eval()
        pred = predict_proba(model, processor, val_images).argmax(1)
        acc, f1 = accuracy_score(val_labels, pred), f1_score(val_labels, pred, average="macro")
        history.append({"epoch": epoch + 1, "train_loss": total / steps, "val_accuracy": acc, "val_macro_f1": f1,
                        "seconds": round(time.perf_counter() - t0, 1)})
        log(f"vit epoch {epoch + 1}/{cfg.epochs}: loss {total / steps:.4f}  val accuracy {acc:.4f}  macro-F1 {f1:.4f}")
        if acc > best:
            best = acc
            card = {"config": asdict(cfg), "best_epoch": epoch + 1, "val_accuracy": acc, "val_macro_f1": f1,
                    "train_images": int(len(train_images)), "torch": torch.__version__}
            out_dir.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(out_dir)
            processor.save_pretrained(out_dir)
            (out_dir / "training.json").write_text(json.dumps(card, indent=2))
    return card | {"history": history, "train_seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    """``python -m fer_helpers.vit train --fer2013 DIR --out models/vit_fer2013`` (selects on PublicTest only)."""
    import argparse

    from . import data
    from .cli import add_config_options, config_from_args

    ap = argparse.ArgumentParser(prog="python -m fer_helpers.vit")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--fer2013", required=True)
    t.add_argument("--out", type=Path, required=True)
    add_config_options(t, ViTTrainConfig, {"threads": int})
    a = ap.parse_args(argv)
    cfg = config_from_args(ViTTrainConfig, a)
    tr, val, _ = data.fer2013_train_val(a.fer2013)
    card = train(tr.images, tr.labels, val.images, val.labels, cfg, a.out, log=lambda m: print(m, flush=True))
    print(f"best PublicTest accuracy {card['val_accuracy']:.4f} at epoch {card['best_epoch']}: {a.out}")
    (a.out / "training.json").write_text(json.dumps(card, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
