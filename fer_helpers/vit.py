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
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import cnn, training
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

    from .registry import ClassifierUnavailable

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


def predict_proba(model, processor, images: np.ndarray, device: str = "cpu", batch_size: int = 128,
                  precision: str = "fp32") -> np.ndarray:
    """Softmax probabilities in the *model's* label order (``model.config.id2label``) for grey uint8 faces;
    ``precision="bf16"``: the network under bf16 autocast, the softmax in fp32."""
    out = []
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            rgb = [np.repeat(im[:, :, None], 3, axis=2) for im in images[s : s + batch_size]]
            x = processor(images=rgb, return_tensors="pt")["pixel_values"].to(device)
            with training.autocast(device, precision):
                logits = model(pixel_values=x).logits
            out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.num_labels))


@dataclass
class ViTTrainConfig(training.FitConfig):
    """The ViT recipe: the loop's options and the ViT's own. With ``teacher`` set, DeiT-style soft
    distillation: the loss is ``(1 - alpha)`` x cross-entropy on the true labels + ``alpha`` x T^2 x
    KL(teacher || student) at temperature T, on the same augmented faces."""

    hidden_size: int = 192
    layers: int = 6
    heads: int = 3
    patch_size: int = 6
    mlp_ratio: int = 4
    dropout: float = 0.0
    epochs: int = 30
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 3.0
    label_smoothing: float = 0.1
    rotate: float = 10.0
    zoom: float = 0.1
    erase: float = 0.25
    teacher: str = ""  # CNN weights file(s), comma-separated (several: their mean probability); empty: no distillation
    init: str = ""  # continue from this ViT model folder (same shape); "" trains from scratch
    alpha: float = 0.7
    temperature: float = 4.0


def build(cfg: ViTTrainConfig):
    """A ``ViTForImageClassification`` for 48 px faces as three equal channels, and its image processor."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(image_size=48, patch_size=cfg.patch_size, num_channels=3, hidden_size=cfg.hidden_size,
                       num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                       intermediate_size=cfg.mlp_ratio * cfg.hidden_size, hidden_dropout_prob=cfg.dropout,
                       num_labels=len(CLASSES), id2label=dict(enumerate(CLASSES)), label2id={c: i for i, c in enumerate(CLASSES)},
                       attn_implementation="eager")  # eager attention trains 1.5x faster than sdpa in bf16 on a CPU
    processor = ViTImageProcessor(do_resize=True, size={"height": 48, "width": 48}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return ViTForImageClassification(config), processor


def _init_state(cfg: ViTTrainConfig) -> dict:
    """The weights of the ``--init`` model folder, refused when its shape differs from the recipe's."""
    start, _ = load(cfg.init)
    c = start.config
    shape = (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.patch_size, c.intermediate_size // c.hidden_size)
    wanted = (cfg.hidden_size, cfg.layers, cfg.heads, cfg.patch_size, cfg.mlp_ratio)
    if shape != wanted:
        raise ValueError(f"--init {cfg.init} holds a ViT of hidden size/layers/heads/patch/mlp ratio {shape}; "
                         f"the recipe asks for {wanted}: pass the matching options")
    return start.state_dict()


def make_recipe(cfg: ViTTrainConfig, val_images: np.ndarray, val_labels: np.ndarray):
    """The ViT's part of the loop (model, augmentation, distillation loss, validation), its image processor,
    and the teacher's card (``None`` without a teacher)."""
    torch.manual_seed(cfg.seed)
    model, processor = build(cfg)
    if cfg.init:
        model.load_state_dict(_init_state(cfg))
    device = cfg.resolved_device()
    distilled = bool(cfg.teacher) and cfg.alpha > 0
    teacher = cnn.load_teacher(cfg.teacher, device) if distilled else None
    o = (48 - cnn.CROP) // 2

    def prepare(xb, yb, gen):
        faces = training.random_affine_crop(cnn.to_tensor(xb), 48, gen, shift=3, rotate=cfg.rotate, scale=(1 - cfg.zoom, 1 + cfg.zoom))
        return training.random_erase(faces, gen, p=cfg.erase), yb

    def loss(m, inputs, targets, gen):
        teacher_logits = None
        if teacher is not None:
            with torch.no_grad():  # the teacher sees the centre 44 px of the same augmented face, as it was trained
                teacher_logits = teacher(inputs[..., o : o + cnn.CROP, o : o + cnn.CROP])
        logits = m(pixel_values=inputs.expand(-1, 3, -1, -1)).logits
        hard = F.cross_entropy(logits, targets, label_smoothing=cfg.label_smoothing)
        return training.distillation_loss(hard, logits, teacher_logits, cfg.alpha, cfg.temperature)

    val_x = cnn.to_tensor(val_images)

    @torch.no_grad()
    def validate(m):
        m.eval()
        pred = torch.cat([m(pixel_values=val_x[s : s + 512].to(device).expand(-1, 3, -1, -1)).logits.argmax(1).cpu()
                          for s in range(0, len(val_x), 512)])
        return {"score": float((pred.numpy() == val_labels).mean())}

    return (training.Recipe(model, prepare, loss, validate, training.recipe_options(cfg)), processor,
            cnn.teacher_card(cfg.teacher) if distilled else None)


def train(train_images: np.ndarray, train_labels: np.ndarray, val_images: np.ndarray, val_labels: np.ndarray,
          cfg: ViTTrainConfig, out_dir: Path, checkpoint: Path | None = None, resume: bool = False,
          progress: bool = False, log=print, stop_after: int | None = None) -> dict:
    """Train a ViT through the project's loop (distilled from ``cfg.teacher`` when set); keep the weights
    with the best validation accuracy and save them as a Hugging Face model folder with its card."""
    from .training import card_scores

    recipe, processor, teacher_card = make_recipe(cfg, val_images, val_labels)
    result = training.fit(recipe, torch.from_numpy(train_images), torch.from_numpy(train_labels.astype(np.int64)), cfg,
                          checkpoint=checkpoint, resume=resume, progress=progress, log=log, stop_after=stop_after)
    device = result.device
    kept = result.model.float().to(memory_format=torch.contiguous_format)
    pred = predict_proba(kept, processor, val_images, device).argmax(1)
    card = {"config": asdict(cfg), "arch": "ViTForImageClassification", **card_scores(val_labels, pred, CLASSES),
            "parameters": int(sum(p.numel() for p in kept.parameters())),
            "teacher": teacher_card,
            "initialised_from": _init_card(cfg.init) if cfg.init else None,
            "train_images": int(len(train_images)), "val_images": int(len(val_images)), **training.run_facts(result)}
    out_dir.mkdir(parents=True, exist_ok=True)
    kept.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "training.json").write_text(json.dumps(card | {"history": result.history}, indent=2))
    return card | {"history": result.history}


def _init_card(folder: str) -> dict:
    """What a continued run started from: the folder and how well it did on the same faces."""
    start = json.loads((Path(folder) / "training.json").read_text()) if (Path(folder) / "training.json").is_file() else {}
    return {"weights": Path(folder).name, "val_accuracy": start.get("val_accuracy"),
            "epochs": (start.get("config") or {}).get("epochs")}


def main(argv=None) -> int:
    """``python -m fer_helpers.vit train --fer2013 DIR --out models/vit_fer2013 [--teacher models/cnn/cnn.safetensors]
    [--resume]`` (selects on PublicTest only; PrivateTest_* files are never read)."""
    import argparse

    from . import data
    from .training import add_config_options, config_from_args

    ap = argparse.ArgumentParser(prog="python -m fer_helpers.vit")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--fer2013", required=True)
    t.add_argument("--out", type=Path, required=True)
    training.add_run_options(t, "~/.cache/fer-study/train/<out folder name>.pt")
    add_config_options(t, ViTTrainConfig, {"threads": int})
    a = ap.parse_args(argv)
    cfg = config_from_args(ViTTrainConfig, a)
    missing = [t for t in cnn.teacher_files(cfg.teacher) if not t.is_file()]
    if missing:
        ap.error(f"--teacher: no such file {', '.join(map(str, missing))} (CNN weights, e.g. models/cnn/cnn.safetensors)")
    if cfg.init and not (Path(cfg.init) / "config.json").is_file():
        ap.error(f"--init {cfg.init}: not a ViT model folder (no config.json; e.g. models/vit_fer2013)")
    checkpoint = a.checkpoint or training.CHECKPOINT_ROOT / f"{a.out.name}.pt"
    tr, val, dropped = data.fer2013_train_val(a.fer2013)
    print(f"train {len(tr)} faces, validate on {len(val)} PublicTest faces ({dropped} dropped by the audit); "
          f"checkpoint {checkpoint}", flush=True)
    card = train(tr.images, tr.labels, val.images, val.labels, cfg, a.out, checkpoint=checkpoint, resume=a.resume,
                 progress=True, log=lambda m: print(m, flush=True), stop_after=a.stop_after)
    print(f"PublicTest accuracy {card['val_accuracy']:.4f} with the {card['kept_weights']} weights of epoch "
          f"{card['best_epoch']}: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
