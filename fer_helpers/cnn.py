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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import degrade, training
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


def augment(x: torch.Tensor, gen: torch.Generator, rotate: float = 10.0, zoom: float = 0.1, erase: float = 0.5) -> torch.Tensor:
    """Training augmentation of a (N, 1, 48, 48) batch -> (N, 1, 44, 44), batched: a random 44 px view
    (shift up to 2 px, rotation up to ``rotate`` degrees, zoom by 1 +- ``zoom``, mirror), then random
    erasing with probability ``erase``."""
    views = training.random_affine_crop(x, CROP, gen, shift=(48 - CROP) / 2, rotate=rotate, scale=(1 - zoom, 1 + zoom))
    return training.random_erase(views, gen, p=erase)


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
def predict_proba(model: nn.Module, images: np.ndarray, device: str = "cpu", batch_size: int = 512, tta: str = "ten_crop",
                  precision: str = "fp32", progress: str | None = None) -> np.ndarray:
    """Softmax probabilities (N, 7) in the canonical order, averaged over the TTA views. ``precision="bf16"``:
    the convolutions under bf16 autocast (about 2x faster on CPUs with AVX512-BF16; a few faces in a thousand
    may change their answer), the softmax and the average in fp32. ``progress``: a bar with this label."""
    from tqdm.auto import tqdm

    from .compute import channels_last

    model.eval()
    out = []
    starts = range(0, len(images), batch_size)
    for s in tqdm(starts, desc=progress, unit="batch", disable=progress is None or len(starts) < 2, leave=False):
        x = channels_last(to_tensor(images[s : s + batch_size]).to(device))
        with training.autocast(device, precision):
            logits = [model(v).float() for v in tta_views(x, tta)]
        out.append(torch.stack([F.softmax(z, dim=1) for z in logits]).mean(0).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(CLASSES)))


#: a frozen teacher: 44 px inputs in [-1, 1] -> logits (for several CNNs: the log of their mean probability)
Teacher = Callable[[torch.Tensor], torch.Tensor]


def mixup_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, alpha: float, smoothing: float, gen: torch.Generator,
               teacher: Teacher | None = None, distill_alpha: float = 0.0, temperature: float = 4.0) -> torch.Tensor:
    """Cross-entropy with label smoothing on a mixup batch (lambda ~ Beta(alpha, alpha); alpha 0: no mixup);
    with a ``teacher``, distilled (:func:`fer_helpers.training.distillation_loss`) on the same mixed faces."""
    if alpha <= 0:
        logits = model(x)
        hard = F.cross_entropy(logits, y, label_smoothing=smoothing)
    else:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))  # drawn from the run's generator: reproducible
        lam = float(np.random.default_rng(seed).beta(alpha, alpha))
        perm = torch.randperm(len(x), generator=gen).to(x.device)
        x = lam * x + (1 - lam) * x[perm]
        logits = model(x)
        hard = lam * F.cross_entropy(logits, y, label_smoothing=smoothing) + (1 - lam) * F.cross_entropy(logits, y[perm], label_smoothing=smoothing)
    if teacher is None or distill_alpha <= 0:
        return hard
    with torch.no_grad():
        teacher_logits = teacher(x)
    return training.distillation_loss(hard, logits, teacher_logits, distill_alpha, temperature)


def teacher_files(spec: str) -> list[Path]:
    """The weights files of a ``--teacher`` value: one path, or several separated by commas."""
    return [Path(p.strip()) for p in spec.split(",") if p.strip()]


def load_teacher(spec: str, device: str = "cpu") -> Teacher:
    """The teacher named by ``spec`` (CNN weights files, comma-separated). Several members teach their mean
    probability, as the ``cnn_ensemble`` classifier predicts; its log is passed on as logits, so a single
    member teaches exactly its own softmax."""
    from .compute import for_inference

    members = [for_inference(load(path, device)[0], device) for path in teacher_files(spec)]

    def teach(x: torch.Tensor) -> torch.Tensor:
        if len(members) == 1:
            return members[0](x)
        return torch.stack([F.softmax(m(x).float(), 1) for m in members]).mean(0).log()

    return teach


def teacher_cache_path(spec: str, images: np.ndarray, precision: str, cache: Path) -> Path:
    """Where :func:`teacher_proba` keeps its result in ``cache``: a key of everything the result depends on (the
    weights files' contents, the faces' pixels, the precision and the code that computes it)."""
    import hashlib

    from .io import files_digest

    here = Path(__file__)
    parts = [files_digest(teacher_files(spec)), hashlib.sha1(np.ascontiguousarray(images)).hexdigest(), precision,
             files_digest([here, here.with_name("compute.py"), here.with_name("training.py")])]
    return Path(cache) / f"teacher_{hashlib.sha256('|'.join(parts).encode()).hexdigest()[:24]}.npy"


def inference_proba(model: nn.Module, images: np.ndarray, device: str = "cpu", **kwargs) -> np.ndarray:
    """:func:`predict_proba` of the model's BatchNorm-folded inference copy (how shipped CNNs are scored)."""
    from .compute import for_inference

    return predict_proba(for_inference(model, device), images, device, **kwargs)


def member_probas(files: Sequence[str | Path], images: np.ndarray, device: str = "cpu", tta: str = "ten_crop",
                  precision: str = "fp32", progress: bool = False) -> list[np.ndarray]:
    """Each CNN weights file's probabilities (N, 7) of ``images``, with its BatchNorm-folded inference copy;
    ``progress``: a bar per file."""
    return [inference_proba(load(f, device)[0], images, device, tta=tta, precision=precision,
                            progress=f"{Path(f).stem} ({i} of {len(files)})" if progress else None)
            for i, f in enumerate(files, 1)]


def teacher_proba(spec: str, images: np.ndarray, device: str = "cpu", precision: str = "bf16",
                  cache: Path | None = None, progress: bool = False) -> np.ndarray:
    """The teacher's ten-crop probabilities (N, 7) of whole faces: for several CNNs their mean, as the
    ``cnn_ensemble`` classifier predicts. For students that cannot take the teacher along (the landmark models
    see points, not pixels), computed once before training. ``cache``: a folder where the result is kept
    (:func:`teacher_cache_path`), so a rerun reuses it."""
    from .io import atomic_path

    path = teacher_cache_path(spec, images, precision, cache) if cache is not None else None
    if path is not None and path.is_file():
        return np.load(path)
    out = np.mean(member_probas(teacher_files(spec), images, device, "ten_crop", precision, progress=progress), axis=0)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, out)
    return out


def teacher_card(spec: str) -> dict:
    """What a student's card says about its teacher: the weights file(s), their width and PublicTest accuracy."""
    from .io import read_card

    files = teacher_files(spec)
    cards = [read_card(f) for f in files]
    one = len(files) == 1
    return {"weights": files[0].name if one else [f.name for f in files], "arch": "CompactCNN",
            "width": cards[0].get("config", {}).get("width"),
            "val_accuracy": cards[0].get("val_accuracy") if one else [c.get("val_accuracy") for c in cards]}


@dataclass
class CNNTrainConfig(training.FitConfig):
    """The recipe: the loop's options (:class:`fer_helpers.training.FitConfig`) and the CNN's own."""

    width: int = 64
    dropout: float = 0.4
    epochs: int = 50
    lr: float = 0.05
    label_smoothing: float = 0.1
    mixup: float = 0.0  # Beta(alpha, alpha); 0 disables (off in the shipped recipe)
    rotate: float = 10.0
    zoom: float = 0.1
    erase: float = 0.5
    degrade_p: float = 0.0  # robust training: each face degraded with this probability (degrade.random_degradations)
    init: str = ""  # fine-tune: start from this CompactCNN weights file (of the same width); "" trains from scratch
    teacher: str = ""  # distil from CNN weights file(s), comma-separated (several: their mean probability); "" none
    alpha: float = 0.7  # weight of the teacher's soft labels in the loss (with a teacher)
    temperature: float = 4.0


@torch.no_grad()
def _centre_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024) -> float:
    """Accuracy on the centre 44 px crop: the cheap check run after every epoch (TTA only at the end)."""
    model.eval()
    o = (48 - CROP) // 2
    hits = 0
    for s in range(0, len(images), batch_size):
        x = to_tensor(images[s : s + batch_size])[..., o : o + CROP, o : o + CROP].to(memory_format=torch.channels_last)
        hits += int((model(x).argmax(1) == labels[s : s + batch_size]).sum())
    return hits / max(1, len(images))


def to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, 48, 48) -> float (N, 1, 48, 48) normalised to [-1, 1] (the model's preprocessing)."""
    x = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
    return x.float().div_(127.5).sub_(1).unsqueeze(1)


def make_recipe(cfg: CNNTrainConfig, val_images: np.ndarray, val_labels: np.ndarray) -> training.Recipe:
    """The CNN's part of the loop: the network, batched augmentation, mixup/label-smoothing loss, centre-crop validation."""
    torch.manual_seed(cfg.seed)
    model = CompactCNN(cfg.width, dropout=cfg.dropout)
    if cfg.init:
        start, start_card = load(cfg.init)
        width = start_card.get("config", {}).get("width")
        if width != cfg.width:
            raise ValueError(f"--init {cfg.init} holds a width-{width} CNN; pass --width {width}")
        model.load_state_dict(start.state_dict())
    device = cfg.resolved_device()
    teacher = load_teacher(cfg.teacher, device) if cfg.teacher and cfg.alpha > 0 else None
    val_x, val_y = torch.from_numpy(val_images), torch.from_numpy(val_labels.astype(np.int64))
    # robust training selects on clean and degraded validation faces alike (one fixed, seeded degraded copy)
    val_degraded = (torch.from_numpy(degrade.random_degradations(val_images, np.random.default_rng(cfg.seed + 1), 1.0)[0])
                    if cfg.degrade_p > 0 else None)

    def prepare(xb: torch.Tensor, yb: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if cfg.degrade_p > 0:  # the study's degradations, drawn on the fly from the epoch's generator
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=gen)))
            faces, _ = degrade.random_degradations(xb.cpu().numpy(), rng, cfg.degrade_p)
            xb = torch.from_numpy(faces).to(xb.device)
        return augment(to_tensor(xb), gen, cfg.rotate, cfg.zoom, cfg.erase), yb

    def loss(m: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return mixup_loss(m, inputs, targets, cfg.mixup, cfg.label_smoothing, gen, teacher, cfg.alpha, cfg.temperature)

    def validate(m: nn.Module) -> dict[str, float]:
        clean = _centre_accuracy(m, val_x.to(device), val_y.to(device))
        if val_degraded is None:
            return {"score": clean}
        degraded = _centre_accuracy(m, val_degraded.to(device), val_y.to(device))
        return {"score": (clean + degraded) / 2, "clean": clean, "degraded": degraded}

    return training.Recipe(model, prepare, loss, validate, training.recipe_options(cfg))


def train(train_images: np.ndarray, train_labels: np.ndarray, val_images: np.ndarray, val_labels: np.ndarray,
          cfg: CNNTrainConfig, out: Path, checkpoint: Path | None = None, resume: bool = False,
          progress: bool = False, log=print, stop_after: int | None = None) -> dict:
    """Train through the project's loop; keep the weights (raw or EMA) with the best centre-crop accuracy
    on the validation set, then score them with ten-crop TTA for the card."""
    from .io import read_card, save_weights
    from .training import card_scores

    recipe = make_recipe(cfg, val_images, val_labels)
    result = training.fit(recipe, torch.from_numpy(train_images), torch.from_numpy(train_labels.astype(np.int64)), cfg,
                          checkpoint=checkpoint, resume=resume, progress=progress, log=log, stop_after=stop_after)
    device = result.device
    proba = predict_proba(result.model.float(), val_images, device, tta="ten_crop")
    pred = proba.argmax(1)
    card = {"config": asdict(cfg), "arch": "CompactCNN", "val_centre_accuracy": result.best_score,
            **card_scores(val_labels, pred, CLASSES), "val_tta": "ten_crop", "train_images": int(len(train_images)), "val_images": int(len(val_images)),
            **training.run_facts(result)}
    if cfg.init:  # fine-tuned: say from what, and how well that model did on the same faces
        start = read_card(Path(cfg.init))
        card["initialised_from"] = {"weights": Path(cfg.init).name, "val_accuracy": start.get("val_accuracy"),
                                    "val_tta": start.get("val_tta")}
    if cfg.teacher and cfg.alpha > 0:
        card["teacher"] = teacher_card(cfg.teacher)
    if cfg.degrade_p > 0:  # what the robust model was trained on, and what it scores on each seed preset
        ranges = degrade.training_ranges()
        card["degradation_mix"] = {"p": cfg.degrade_p, "families": {f: ranges[f] if f in ranges else degrade.PRESETS[f].describe()
                                                                    for f in degrade.AUGMENT_FAMILIES},
                                   "selected_on": "mean of clean and degraded PublicTest centre-crop accuracy"}
        card["val_accuracy_by_preset"] = preset_accuracies(result.model.float(), val_images, val_labels, device, cfg.seed,
                                                           precision=result.precision)
    save_weights(out, result.model.state_dict(), card)
    return card | {"history": result.history}


def preset_accuracies(model: nn.Module, images: np.ndarray, labels: np.ndarray, device: str, seed: int,
                      presets: Sequence[str] = degrade.PRESET_GROUPS["seeds"], precision: str = "fp32") -> dict[str, float]:
    """Ten-crop accuracy on each preset's degraded copy of the validation faces (the study's seeded degradation),
    with the BatchNorm-folded inference copy of ``model`` in ``precision``."""
    from sklearn.metrics import accuracy_score

    from .compute import for_inference

    fast = for_inference(model, device)
    ids = [f"val/{i}" for i in range(len(images))]
    return {p: float(accuracy_score(labels, predict_proba(fast, degrade.apply_preset(images, ids, degrade.PRESETS[p], seed),
                                                          device, tta="ten_crop", precision=precision).argmax(1)))
            for p in presets}


def from_card(card: dict) -> CompactCNN:
    """An untrained CompactCNN of the shape a model card's config names (width 64, dropout 0.4 by default)."""
    cfg = card.get("config", {})
    return CompactCNN(cfg.get("width", 64), dropout=cfg.get("dropout", 0.4))


def load(path: str | Path, device: str = "cpu") -> tuple[CompactCNN, dict]:
    from safetensors.torch import load_file

    from .io import read_card

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CNN weights {path} not found: train them with `python -m fer_helpers.cnn` (see the README)")
    card = read_card(path)
    model = from_card(card)
    try:
        model.load_state_dict(load_file(str(path)))
    except RuntimeError as e:
        raise ValueError(f"{path} does not hold CompactCNN weights of width {card.get('config', {}).get('width')}: "
                         f"{str(e).splitlines()[0]}") from None
    return model.to(device).eval(), card


def main(argv=None) -> int:
    """``python -m fer_helpers.cnn --fer2013 DIR --out models/cnn/cnn.safetensors [--epochs 50 --width 64] [--resume]``.

    Trains on the Training split; selects on PublicTest (the Kaggle test/ folder's PublicTest_* files, with
    Training duplicates and blank faces removed). PrivateTest_* files are never read. A checkpoint is
    written after every epoch (``--checkpoint``, default under ~/.cache/fer-study/train/); after a kill,
    the same command with ``--resume`` continues where it stopped and gives the same weights.
    """
    import argparse

    from . import data
    from .training import add_config_options, config_from_args

    ap = argparse.ArgumentParser(prog="python -m fer_helpers.cnn")
    ap.add_argument("--fer2013", required=True)
    ap.add_argument("--out", type=Path, required=True)
    training.add_run_options(ap, "~/.cache/fer-study/train/<out name>.pt")
    add_config_options(ap, CNNTrainConfig, {"threads": int})
    a = ap.parse_args(argv)
    cfg = config_from_args(CNNTrainConfig, a)
    missing = [str(f) for f in teacher_files(cfg.teacher) + ([Path(cfg.init)] if cfg.init else []) if not f.is_file()]
    if missing:
        ap.error(f"no such weights file: {', '.join(missing)} (--init and --teacher take CNN weights, e.g. "
                 "models/cnn/cnn.safetensors)")
    checkpoint = a.checkpoint or training.CHECKPOINT_ROOT / f"{a.out.stem}.pt"
    tr, val, dropped = data.fer2013_train_val(a.fer2013)
    print(f"train {len(tr)} faces, validate on {len(val)} PublicTest faces ({dropped} dropped by the audit); "
          f"checkpoint {checkpoint}", flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    card = train(tr.images, tr.labels, val.images, val.labels, cfg, a.out, checkpoint=checkpoint, resume=a.resume,
                 progress=True, log=lambda m: print(m, flush=True), stop_after=a.stop_after)
    a.out.with_suffix(".json").write_text(json.dumps(card, indent=2))
    print(f"PublicTest accuracy {card['val_accuracy']:.4f} (ten-crop TTA; centre crop {card['val_centre_accuracy']:.4f}) "
          f"with the {card['kept_weights']} weights of epoch {card['best_epoch']}: {a.out}")
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
