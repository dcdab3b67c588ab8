"""The one training loop of the project: every model contributes its module, its batch preparation
(augmentation) and its loss; this module owns the rest.

- the training set is one tensor on the training device; each step prepares a whole batch with tensor
  ops (no per-sample Python), so the loop runs at the pace of the model's step;
- mixed precision (bf16 autocast, fp32 master weights) and channels-last memory where the device runs
  them natively, all CPU cores by default;
- an exponential moving average (EMA) of the weights, validated beside the raw weights every epoch; the
  better of the two is kept;
- the learning rate is a function of the global step (linear warm-up, then cosine), so a resumed run
  continues the same curve;
- a checkpoint (model, optimizer, EMA, best weights, history, RNG states) after every epoch, written
  atomically; ``resume=True`` continues from it and gives the same weights as an uninterrupted run,
  because every epoch's random draws come from generators seeded by (seed, epoch);
- a progress bar with images/s and ETA; cheap validation every epoch (the caller decides what that is;
  test-time augmentation belongs at the end, on the kept weights).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

#: where long runs keep their checkpoints: outside the work tree, so a fresh checkout does not lose them
CHECKPOINT_ROOT = Path(os.environ.get("FER_STUDY_CACHE", Path.home() / ".cache" / "fer-study")) / "train"


@dataclass
class FitConfig:
    """What the loop needs to know; a model's recipe adds its own options beside these."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.05  # peak learning rate, reached after the warm-up
    min_lr_ratio: float = 0.0  # the cosine ends at lr * min_lr_ratio
    warmup_epochs: float = 1.0
    optimizer: str = "sgd"  # sgd (Nesterov momentum 0.9) | adamw
    weight_decay: float = 5e-4
    ema_decay: float = 0.999  # 0 disables the EMA
    precision: str = "auto"  # auto | bf16 | fp32
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: int | None = None  # CPU threads; default: all cores

    def resolved_device(self) -> str:
        return ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device


class Prepare(Protocol):
    """Turns a batch of stored training examples into the model's inputs and targets (augmentation)."""

    def __call__(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]: ...


class Loss(Protocol):
    def __call__(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, gen: torch.Generator) -> torch.Tensor: ...


#: validation: model -> metrics; ``score`` (higher is better) selects the weights to keep
Validate = Callable[[nn.Module], dict[str, float]]


@dataclass
class Companion:
    """A second network trained beside the model with its own optimizer and objective (a GAN's discriminator):
    the loop calls ``step()`` after each of the model's optimizer steps, moves ``module`` to the device and
    saves it and ``optimizer`` in every checkpoint, so a resumed run continues both."""

    module: nn.Module
    optimizer: torch.optim.Optimizer
    step: Callable[[], None]


@dataclass
class Recipe:
    """What a model contributes to the loop: its module, how a stored batch becomes inputs and targets,
    its loss, how it is validated, its own settings (recorded in checkpoints and cards) and, rarely, a
    network trained beside it (:class:`Companion`)."""

    model: nn.Module
    prepare: Prepare
    loss: Loss
    validate: Validate
    options: dict[str, Any] = field(default_factory=dict)
    companion: Companion | None = None


def recipe_options(cfg: Any) -> dict[str, Any]:
    """The fields of a model's training config that are its own, not the loop's."""
    return {k: v for k, v in asdict(cfg).items() if k not in FitConfig.__dataclass_fields__}


@dataclass
class FitResult:
    model: nn.Module  # holds the kept weights (raw or EMA, whichever validated better), in eval mode
    best_epoch: int
    best_score: float
    best_source: str  # "raw" or "ema"
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    images_per_second: float = 0.0
    precision: str = "fp32"
    device: str = "cpu"


def cpu_name() -> str:
    """The CPU's model name (for model cards), or the platform's processor string."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def card_scores(y_true: np.ndarray, pred: np.ndarray, classes: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """The scores a model card records on PublicTest (scikit-learn): accuracy, macro-F1, the confusion matrix and
    the class order (``classes``) of its rows."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    return {"val_accuracy": accuracy_score(y_true, pred), "val_macro_f1": f1_score(y_true, pred, average="macro"),
            "confusion_matrix": confusion_matrix(y_true, pred, labels=range(len(classes))).tolist(),
            "labels": list(classes)}


def run_facts(result: "FitResult") -> dict[str, Any]:
    """What a model card records about how a run went: where, how fast, how long, which epoch was kept."""
    return {"best_epoch": result.best_epoch, "kept_weights": result.best_source, "epochs_run": len(result.history),
            "device": result.device, "precision": result.precision, "threads": torch.get_num_threads(),
            "hardware": cpu_name() if result.device == "cpu" else torch.cuda.get_device_name(),
            "torch": torch.__version__, "train_seconds": result.train_seconds,
            "images_per_second": result.images_per_second}


def bf16_native(device: str) -> bool:
    """True where bf16 matrix maths runs in hardware (AVX512-BF16/AMX CPUs, Ampere+ GPUs)."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: str) -> str:
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision {precision!r}: use auto, bf16 or fp32")
    if precision == "auto":
        return "bf16" if bf16_native(device) else "fp32"
    return precision


def autocast(device: str, precision: str) -> torch.autocast:
    return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float, min_ratio: float = 0.0) -> float:
    """Linear warm-up to ``peak``, then a half cosine down to ``peak * min_ratio``: a function of the
    global step only, so a resumed run continues the same curve."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch's draws (order, augmentation, mixup): a function of (seed, epoch)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def make_optimizer(model: nn.Module, cfg: FitConfig) -> torch.optim.Optimizer:
    # no weight decay on biases and normalisation weights (1-D parameters)
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    rest = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise ValueError(f"optimizer {cfg.optimizer!r}: use sgd or adamw")


class EMA:
    """Exponential moving average of the parameters and buffers (BatchNorm statistics included)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._pairs: tuple[list, list, list] | None = None  # (EMA floats, model floats, other (EMA, model)), paired once

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        # warm-up of the decay (as in timm/TF): early averages do not drag in the random initialisation
        d = min(self.decay, (1 + step) / (10 + step))
        if self._pairs is None:  # state_dict tensors share storage with the modules: pairing them once is enough
            pairs = [(e, m) for e, m in zip(self.module.state_dict().values(), model.state_dict().values())
                     if not e.is_sparse]  # sparse buffers are constants (e.g. a graph's adjacency)
            floats = [(e, m) for e, m in pairs if e.dtype.is_floating_point]
            self._pairs = ([e for e, _ in floats], [m for _, m in floats], [p for p in pairs if not p[0].dtype.is_floating_point])
        ema_floats, model_floats, others = self._pairs
        torch._foreach_lerp_(ema_floats, model_floats, 1 - d)  # one fused call, not one per tensor
        for e, m in others:
            e.copy_(m)


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _config_mismatch(saved: dict, cfg: dict, defaults: dict | None = None) -> list[str]:
    """The settings that differ between a checkpoint and this run (where it ran does not count). A setting the
    checkpoint lacks matches when this run leaves it at its default: an option added to the recipe later, unused."""
    defaults = defaults or {}
    out = []
    for k, v in cfg.items():
        if k in ("device", "threads"):
            continue
        if isinstance(v, dict) and isinstance(saved.get(k), dict):
            out += [f"{k}.{m}" for m in _config_mismatch(saved[k], v, defaults)]
        elif (saved.get(k) != v) and not (k not in saved and k in defaults and defaults[k] == v):
            out.append(f"{k}: {saved.get(k)!r} -> {v!r}")
    return out


def fit(recipe: Recipe, train_x: torch.Tensor, train_y: torch.Tensor, cfg: FitConfig, checkpoint: Path | None = None,
        resume: bool = False, progress: bool = True, log: Callable[[str], None] = print,
        stop_after: int | None = None) -> FitResult:
    """Train ``recipe.model`` on (``train_x``, ``train_y``) and return it holding the best validated weights.

    ``checkpoint``: file written after every epoch; with ``resume`` an existing one is continued (its
    configuration, the recipe's options included, must be the same as this run's).
    """
    model, prepare, loss, validate, companion = recipe.model, recipe.prepare, recipe.loss, recipe.validate, recipe.companion
    from tqdm.auto import tqdm

    device = cfg.resolved_device()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    precision = resolve_precision(cfg.precision, device)
    image_model = any(p.ndim == 4 for p in model.parameters())  # convolutions: channels-last pays off
    memory = torch.channels_last if image_model and (device == "cpu" or precision == "bf16") else torch.contiguous_format
    model = model.to(device)
    if image_model:
        model = model.to(memory_format=memory)
    train_x, train_y = train_x.to(device), train_y.to(device)
    opt = make_optimizer(model, cfg)
    if companion is not None:
        companion.module.to(device)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    steps_per_epoch = math.ceil(len(train_x) / cfg.batch_size)
    total_steps, warmup_steps = cfg.epochs * steps_per_epoch, round(cfg.warmup_epochs * steps_per_epoch)
    run_config = {**asdict(cfg), "recipe": recipe.options, "train_examples": len(train_x)}
    best: dict[str, Any] = {"score": -math.inf, "epoch": 0, "source": "raw", "state": None}
    history: list[dict[str, Any]] = []
    start_epoch, seconds_before = 0, 0.0

    if resume and checkpoint is not None and checkpoint.is_file():
        try:
            ck = torch.load(checkpoint, map_location=device, weights_only=True)
        except Exception as e:  # a torn or foreign file: say which, and how to start over
            raise RuntimeError(f"cannot resume from {checkpoint}: {type(e).__name__}: {e} "
                               f"(delete it to start over)") from None
        diff = _config_mismatch(ck["config"], run_config, asdict(type(cfg)()))
        if diff:
            raise ValueError(f"cannot resume from {checkpoint}: it was made with other settings ({'; '.join(diff)}); "
                             f"rerun with the same options, or delete it to start over")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if ema is not None:
            ema.module.load_state_dict(ck["ema"])
        if companion is not None:
            companion.module.load_state_dict(ck["companion"]["module"])
            companion.optimizer.load_state_dict(ck["companion"]["optimizer"])
        best, history, start_epoch = ck["best"], ck["history"], ck["epoch"]
        seconds_before = ck["seconds"]
        torch.set_rng_state(ck["torch_rng"])
        log(f"resumed {checkpoint} after epoch {start_epoch}/{cfg.epochs} (best {best['source']} "
            f"{best['score']:.4f} at epoch {best['epoch']})")

    t_start = time.perf_counter()
    images_seen, train_time = 0, 0.0
    # stop_after ends the run early (the schedule stays the planned one, so a later --resume can still continue it)
    for epoch in range(start_epoch, min(cfg.epochs, stop_after) if stop_after else cfg.epochs):
        gen = epoch_generator(cfg.seed, epoch)
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout and other global draws: per epoch too
        order = torch.randperm(len(train_x), generator=gen).to(device)
        model.train()
        total_loss, t_epoch = torch.zeros((), device=device), time.perf_counter()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False,
                   disable=not progress, mininterval=2.0)
        for k in bar:
            step = epoch * steps_per_epoch + k
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total_steps, warmup_steps, cfg.lr, cfg.min_lr_ratio)
            idx = order[k * cfg.batch_size : (k + 1) * cfg.batch_size]
            inputs, targets = prepare(train_x[idx], train_y[idx], gen)
            if inputs.ndim == 4:
                inputs = inputs.contiguous(memory_format=memory)
            with autocast(device, precision):
                batch_loss = loss(model, inputs, targets, gen)
            opt.zero_grad(set_to_none=True)
            batch_loss.backward()
            opt.step()
            if companion is not None:
                companion.step()
            if ema is not None:
                ema.update(model, step)
            total_loss += batch_loss.detach()
            if k % 20 == 0:
                bar.set_postfix(img_s=f"{(k + 1) * cfg.batch_size / (time.perf_counter() - t_epoch):.0f}")
        epoch_seconds = time.perf_counter() - t_epoch
        images_seen += len(train_x)
        train_time += epoch_seconds

        with autocast(device, precision):
            scores = {"raw": validate(model)} | ({"ema": validate(ema.module)} if ema is not None else {})
        source = max(scores, key=lambda s: scores[s]["score"])
        row = {"epoch": epoch + 1, "train_loss": float(total_loss) / steps_per_epoch, "lr": opt.param_groups[0]["lr"],
               "images_per_second": round(len(train_x) / epoch_seconds, 1),
               **{f"{s}_{k}": v for s, m in scores.items() for k, v in m.items()},
               "seconds": round(seconds_before + time.perf_counter() - t_start, 1)}
        history.append(row)
        if scores[source]["score"] > best["score"]:
            kept = ema.module if source == "ema" else model
            best = {"score": scores[source]["score"], "epoch": epoch + 1, "source": source,
                    "state": {k: v.detach().clone() for k, v in kept.state_dict().items()}}
        log(f"epoch {epoch + 1}/{cfg.epochs}: loss {row['train_loss']:.4f}  "
            + "  ".join(f"{s} {m['score']:.4f}" for s, m in scores.items())
            + f"  {row['images_per_second']:.0f} img/s  best {best['source']} {best['score']:.4f} (epoch {best['epoch']})")
        if checkpoint is not None:
            _atomic_save({"config": run_config, "epoch": epoch + 1, "model": model.state_dict(),
                          "optimizer": opt.state_dict(), "ema": ema.module.state_dict() if ema is not None else {},
                          "best": best, "history": history, "seconds": row["seconds"],
                          "companion": ({"module": companion.module.state_dict(), "optimizer": companion.optimizer.state_dict()}
                                        if companion is not None else {}),
                          "torch_rng": torch.get_rng_state()}, checkpoint)

    kept = copy.deepcopy(model)
    if best["state"] is not None:
        kept.load_state_dict(best["state"])
    return FitResult(model=kept.eval(), best_epoch=best["epoch"], best_score=best["score"], best_source=best["source"],
                     history=history, train_seconds=round(seconds_before + time.perf_counter() - t_start, 1),
                     images_per_second=round(images_seen / train_time, 1) if train_time else  # only resumed to finish:
                     round(float(np.mean([h["images_per_second"] for h in history])), 1) if history else 0.0,
                     precision=precision, device=device)


def distillation_loss(hard_loss: torch.Tensor, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
                      alpha: float, temperature: float) -> torch.Tensor:
    """Hinton et al.'s soft distillation: ``(1 - alpha) hard_loss + alpha T^2 KL(teacher_T || student_T)``;
    ``hard_loss`` (the loss on the true labels) alone when there is no teacher or ``alpha`` is 0."""
    if alpha <= 0 or teacher_logits is None:
        return hard_loss
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits.float() / t, 1), F.log_softmax(teacher_logits.float() / t, 1),
                  reduction="batchmean", log_target=True)
    return (1 - alpha) * hard_loss + alpha * t * t * kl


# --- batched augmentation of image batches -------------------------------------------------------

def _uniform(n: int, lo: float, hi: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return (lo + (hi - lo) * torch.rand(n, generator=gen)).to(device)


def random_affine_crop(x: torch.Tensor, size: int, gen: torch.Generator, shift: float = 2.0, rotate: float = 10.0,
                       scale: tuple[float, float] = (1.0, 1.0), flip: bool = True) -> torch.Tensor:
    """A random ``size`` px view of every image in a (N, C, H, W) float batch, in one ``grid_sample``:
    translation by up to ``shift`` px around the centre, rotation by up to ``rotate`` degrees, zoom by a
    factor in ``scale``, mirror with probability 0.5. Borders are reflected."""
    n, _, h, w = x.shape
    dev = x.device
    angle = _uniform(n, -math.radians(rotate), math.radians(rotate), gen, dev)
    zoom = _uniform(n, *scale, gen, dev)
    mirror = torch.where(torch.rand(n, generator=gen) < (0.5 if flip else 0.0), -1.0, 1.0).to(dev)
    tx, ty = (_uniform(n, -shift, shift, gen, dev) * 2 / w, _uniform(n, -shift, shift, gen, dev) * 2 / h)
    ax, ay = size / w / zoom, size / h / zoom  # the output covers size/H of the input at zoom 1
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([ax * cos * mirror, -ax * sin, tx], 1),
                         torch.stack([ay * sin * mirror, ay * cos, ty], 1)], 1)
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_erase(x: torch.Tensor, gen: torch.Generator, p: float = 0.5, area: tuple[float, float] = (0.02, 0.2),
                 aspect: tuple[float, float] = (0.3, 3.3)) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020), batched: with probability ``p`` a rectangle of ``area`` of the
    image, aspect ratio in ``aspect``, is replaced by unit Gaussian noise."""
    n, c, h, w = x.shape
    dev = x.device
    a = _uniform(n, *area, gen, dev) * h * w
    r = torch.exp(_uniform(n, math.log(aspect[0]), math.log(aspect[1]), gen, dev))
    eh = torch.sqrt(a * r).round().clamp(1, h)
    ew = (a / eh).round().clamp(1, w)
    y0 = (_uniform(n, 0, 1, gen, dev) * (h - eh + 1)).floor()
    x0 = (_uniform(n, 0, 1, gen, dev) * (w - ew + 1)).floor()
    apply = (torch.rand(n, generator=gen) < p).to(dev)
    ys, xs = torch.arange(h, device=dev), torch.arange(w, device=dev)
    in_y = (ys >= y0[:, None]) & (ys < (y0 + eh)[:, None])
    in_x = (xs >= x0[:, None]) & (xs < (x0 + ew)[:, None])
    mask = (in_y[:, :, None] & in_x[:, None, :] & apply[:, None, None])[:, None]
    noise = torch.randn(x.shape, generator=gen).to(dev, x.dtype)
    return torch.where(mask, noise, x)


# ---- command-line options for a training config (the model modules' entry points) -----------------


def add_run_options(parser: argparse.ArgumentParser, checkpoint_default: str) -> None:
    """``--checkpoint``, ``--resume`` and ``--stop-after``: how a training command saves, continues and ends early."""
    parser.add_argument("--checkpoint", type=Path, help=f"default: {checkpoint_default}")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint if there is one")
    parser.add_argument("--stop-after", type=int, metavar="EPOCH",
                        help="end after this epoch and ship the best weights so far (with --resume at or past it: no "
                             "more training); the card records the epochs run")


def add_config_options(parser: argparse.ArgumentParser, config_cls: type, types: dict | None = None) -> None:
    """One ``--option`` per field of a training-config dataclass: the type comes from the default (``types``
    gives it for fields whose default is None); list fields take several values."""
    import dataclasses

    for f in dataclasses.fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):  # type=bool would read "False" as True
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif isinstance(default, list):
            parser.add_argument(flag, nargs="+", default=default)
        else:
            parser.add_argument(flag, type=(types or {}).get(f.name, type(default)), default=default)


def config_from_args(config_cls: type, args: argparse.Namespace):
    """The dataclass built from the options :func:`add_config_options` added."""
    import dataclasses

    return config_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)})
