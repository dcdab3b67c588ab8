"""The learned denoiser: seed 003's Attention U-Net, trained by the project on FER2013 Training pairs.

Architecture (seed 003): encoder 16-32-64-128 (two 3x3 conv + BN + ReLU per level, 2x2 max-pool),
bottleneck 256, decoder with transposed-conv upsampling and additive attention gates on the skips
(Oktay et al. 2018: ``sigmoid(psi(relu(W_g g + W_x x))) * x``). One change for restoration: the net
predicts a residual that is added to its input (output = clip(input + net(input))), which trains
faster and never does worse than the identity at initialisation.

Optional PatchGAN discriminator (seed 003): MSE reconstruction + ``adv_weight`` x least-squares
adversarial loss.

Training runs through the project's one loop (:func:`fer_helpers.training.fit`: checkpoint every epoch,
exact ``--resume``, bf16 autocast; the discriminator is the loop's :class:`~fer_helpers.training.Companion`).
Training pairs are made on the fly from clean Training faces with the project's own degradation
presets (a new random draw every step); validation pairs are fixed (seeded) and come from a held-out
part of Training, never from the evaluation split. Training images whose pixels also occur in the
evaluation split are excluded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import degrade, training

CHANNELS = (16, 32, 64, 128)
BOTTLENECK = 256


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class AttentionGate(nn.Module):
    """Additive attention: weights the skip features ``x`` by what the coarser gating signal ``g`` attends to."""

    def __init__(self, g_ch: int, x_ch: int, inter: int):
        super().__init__()
        self.wg = nn.Sequential(nn.Conv2d(g_ch, inter, 1, bias=False), nn.BatchNorm2d(inter))
        self.wx = nn.Sequential(nn.Conv2d(x_ch, inter, 1, bias=False), nn.BatchNorm2d(inter))
        self.psi = nn.Sequential(nn.Conv2d(inter, 1, 1), nn.BatchNorm2d(1), nn.Sigmoid())

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x * self.psi(F.relu(self.wg(g) + self.wx(x)))


class AttentionUNet(nn.Module):
    """``impulse_switch``: only pixels at 0 or 255 (where salt-and-pepper puts its impulses) take the net's
    output; every other pixel keeps its input value (the switching scheme of classical impulse filters)."""

    def __init__(self, channels: Sequence[int] = CHANNELS, bottleneck: int = BOTTLENECK, in_ch: int = 1,
                 impulse_switch: bool = False):
        super().__init__()
        self.impulse_switch = impulse_switch
        self.enc = nn.ModuleList()
        c_prev = in_ch
        for c in channels:
            self.enc.append(_block(c_prev, c))
            c_prev = c
        self.mid = _block(channels[-1], bottleneck)
        self.up, self.gate, self.dec = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        c_prev = bottleneck
        for c in reversed(channels):
            self.up.append(nn.ConvTranspose2d(c_prev, c, 2, stride=2))
            self.gate.append(AttentionGate(c, c, max(c // 2, 8)))
            self.dec.append(_block(2 * c, c))
            c_prev = c
        self.head = nn.Conv2d(channels[0], in_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in [0, 1], shape (N, 1, H, W) with H, W divisible by 16; returns the restored image in [0, 1]."""
        skips, h = [], x
        for enc in self.enc:
            h = enc(h)
            skips.append(h)
            h = F.max_pool2d(h, 2)
        h = self.mid(h)
        for up, gate, dec, skip in zip(self.up, self.gate, self.dec, reversed(skips)):
            h = up(h)
            h = dec(torch.cat([gate(h, skip), h], dim=1))
        out = (x + self.head(h)).clamp(0, 1)
        if self.impulse_switch:
            out = torch.where((x == 0) | (x == 1), out, x)
        return out


class PatchGAN(nn.Module):
    """A small PatchGAN discriminator for 48x48 grey faces (6x6 patch scores)."""

    def __init__(self, ch: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, ch, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ch, 2 * ch, 4, 2, 1), nn.BatchNorm2d(2 * ch), nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * ch, 4 * ch, 4, 2, 1), nn.BatchNorm2d(4 * ch), nn.LeakyReLU(0.2, True),
            nn.Conv2d(4 * ch, 1, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ---- weights on disk: safetensors + a JSON card ---------------------------------------------------


def save_model(model: AttentionUNet, path: Path, meta: dict, half: bool = True) -> None:
    """Save weights as safetensors (fp16 by default: a few MB) with ``meta`` in the header."""
    from safetensors.torch import save_file

    from .io import atomic_path

    sd = {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(sd, str(tmp), metadata={"fer_study": json.dumps(meta)})


def load_model(path: str | Path, device: str = "cpu") -> tuple[AttentionUNet, dict]:
    """Load weights written by :func:`save_model`; a missing or foreign file gets a one-line error."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"U-Net weights {path} not found: train them with `python -m fer_helpers.unet train` "
                                f"(see models/unet_denoiser/README.md) or point restoration.weights.unet at the file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("fer_study", "{}"))
        sd = load_file(str(path))
    except Exception as e:  # safetensors raises several types for a bad header
        raise ValueError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e}); re-download or retrain it") from None
    model = AttentionUNet(tuple(meta.get("channels", CHANNELS)), meta.get("bottleneck", BOTTLENECK),
                          impulse_switch=meta.get("impulse_switch", False))
    try:
        model.load_state_dict({k: v.float() for k, v in sd.items()})
    except RuntimeError as e:
        raise ValueError(f"{path} does not hold Attention U-Net weights of this architecture: {str(e).splitlines()[0]}") from None
    return model.to(device).eval(), meta


TTA = ("none", "flip")


def to_batch(images: np.ndarray, device: str = "cpu") -> torch.Tensor:
    """uint8 (N, 48, 48) faces -> float (N, 1, 48, 48) in [0, 1], channels-last (the layout the convolutions run fastest in)."""
    from .compute import channels_last

    return channels_last(torch.from_numpy(np.ascontiguousarray(images)).to(device).float().div_(255).unsqueeze(1))


def check_tta(tta: str) -> str:
    """``tta`` itself if it names a U-Net test-time augmentation, else a ValueError naming those there are."""
    if tta not in TTA:
        raise ValueError(f"U-Net test-time augmentation {tta!r}: use one of {', '.join(TTA)}")
    return tta


@torch.no_grad()
def denoise(model: AttentionUNet, images: np.ndarray, device: str = "cpu", batch_size: int = 256, tta: str = "none") -> np.ndarray:
    """Run the U-Net over a uint8 (N, 48, 48) stack (give it a :func:`~fer_helpers.compute.for_inference` copy for speed).

    ``tta="flip"``: the self-ensemble of the face and its mirror image (the mirrored output flipped back and
    averaged before rounding), at twice the cost.
    """
    check_tta(tta)
    out = np.empty_like(images)
    for s in range(0, len(images), batch_size):
        x = to_batch(images[s : s + batch_size], device)
        y = model(x)
        if tta == "flip":
            y = (y + model(x.flip(-1)).flip(-1)) / 2
        out[s : s + batch_size] = y.squeeze(1).mul_(255).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
    return out


# ---- training: the U-Net's recipe for the project's one loop (fer_helpers.training) -------------------


@dataclass
class TrainConfig(training.FitConfig):
    """The U-Net recipe: the loop's options (AdamW, warm-up then cosine down to ``lr * min_lr_ratio``, no EMA
    unless asked) and the U-Net's own."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    min_lr_ratio: float = 0.005
    warmup_epochs: float = 1.0
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    ema_decay: float = 0.0
    precision: str = "fp32"  # fp32 | bf16 (autocast; about 2x faster on CPUs with AVX512-BF16 or AMX, and on GPUs)
    presets: list[str] = field(default_factory=lambda: ["seed003_low", "seed003_high", "seed003_sp"])
    loss: str = "l1"  # l1 | mse | psnr (per-face -PSNR, as NAFNet's PSNRLoss: mild degradations weigh as much as heavy ones)
    adv_weight: float = 0.0  # > 0 adds the PatchGAN (seed 003: 0.001 with MSE)
    val_images: int = 1000
    init: str | None = None  # fine-tune from these weights
    max_train_images: int | None = None
    impulse_switch: bool = False  # salt-and-pepper fine-tunes: replace only the 0/255 pixels (see AttentionUNet)


def training_faces(train, eval_) -> np.ndarray:
    """Clean, non-blank faces of the ``train`` Dataset whose pixels do not occur in ``eval_`` (no leak into the scores)."""
    leak = np.isin(train.pixel_sha1, eval_.pixel_sha1)
    blank = train.images.reshape(len(train), -1).std(axis=1) <= 1.0
    return train.images[~leak & ~blank]


def _degrade_batch(clean: np.ndarray, presets: Sequence[degrade.Preset], rng: np.random.Generator, step_seed: int) -> np.ndarray:
    which = rng.integers(0, len(presets), size=len(clean))
    out = np.empty_like(clean)
    for k, p in enumerate(presets):
        idx = np.flatnonzero(which == k)
        if len(idx):
            out[idx] = degrade.apply_preset(clean[idx], [f"train{step_seed}:{i}" for i in idx], p, seed=step_seed)
    return out


def evaluate(model: AttentionUNet, clean: np.ndarray, noisy: np.ndarray, device: str) -> tuple[float, float]:
    """Mean PSNR / SSIM (scikit-image, data_range 255) of the model's output against ``clean``."""
    psnr, ssim = degrade.pair_metrics(clean, denoise(model, noisy, device))
    return float(np.mean(psnr)), float(np.mean(ssim))


LOSSES = ("l1", "mse", "psnr")


def pixel_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Training loss on [0, 1] images. ``psnr`` is the mean per-face 10 log10(MSE), i.e. minus the mean PSNR in dB:

    with L1 or MSE the heavy presets dominate the batch loss and the net learns to leave mild ones (blur 0.5,
    noise 5) nearly as they are; in dB every face counts the same, which is also what the scores average.
    """
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "psnr":
        return 10 * torch.log10(((pred - target) ** 2).mean(dim=(1, 2, 3)) + 1e-8).mean()
    raise ValueError(f"loss {kind!r}: use one of {', '.join(LOSSES)}")


def _patchgan(fake_and_real: list) -> training.Companion:
    """Seed 003's least-squares PatchGAN, trained after each U-Net step on that step's (restored, clean) faces."""
    disc = PatchGAN()
    opt = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def step() -> None:
        fake, real = fake_and_real.pop()
        d_real, d_fake = disc(real), disc(fake)
        loss = 0.5 * (F.mse_loss(d_real, torch.ones_like(d_real)) + F.mse_loss(d_fake, torch.zeros_like(d_fake)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return training.Companion(disc, opt, step)


def make_recipe(cfg: TrainConfig, faces: np.ndarray) -> tuple[training.Recipe, np.ndarray]:
    """The U-Net's part of the loop and its training faces: ``faces`` split (seeded) into fixed validation pairs
    (the study's seeded degradation, the presets taking turns) and training faces, degraded afresh every step."""
    if cfg.loss not in LOSSES:
        raise ValueError(f"loss {cfg.loss!r}: use one of {', '.join(LOSSES)}")
    training.resolve_precision(cfg.precision, cfg.resolved_device())  # a bad name fails here, before any work
    torch.manual_seed(cfg.seed)
    perm = np.random.default_rng(cfg.seed).permutation(len(faces))
    val, tr = faces[perm[: cfg.val_images]], faces[perm[cfg.val_images :]]
    if cfg.max_train_images:
        tr = tr[: cfg.max_train_images]
    presets = [degrade.PRESETS[p] for p in cfg.presets]
    parts = [(val[k :: len(presets)], p) for k, p in enumerate(presets)]
    val_clean = np.concatenate([v for v, _ in parts])
    val_noisy = np.concatenate([degrade.apply_preset(v, [f"val:{p.name}:{i}" for i in range(len(v))], p, seed=cfg.seed) for v, p in parts])
    model = load_model(cfg.init)[0].train() if cfg.init else AttentionUNet()
    model.impulse_switch = cfg.impulse_switch
    device = cfg.resolved_device()
    fake_and_real: list = []  # the last step's (restored, clean) faces, for the discriminator's own step
    companion = _patchgan(fake_and_real) if cfg.adv_weight > 0 else None

    def prepare(xb: torch.Tensor, yb: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        step_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))  # from the epoch's generator: resumable
        clean = xb.cpu().numpy()
        noisy = _degrade_batch(clean, presets, np.random.default_rng(step_seed), step_seed)
        return to_batch(noisy, device), to_batch(clean, device)

    def loss(m: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        pred = m(inputs).float()  # the residual sum is already fp32 (fp32 input + bf16 residual)
        value = pixel_loss(pred, targets, cfg.loss)
        if companion is not None:
            d_pred = companion.module(pred)
            value = value + cfg.adv_weight * F.mse_loss(d_pred.float(), torch.ones_like(d_pred, dtype=torch.float32))
            fake_and_real[:] = [(pred.detach(), targets)]
        return value

    def validate(m: nn.Module) -> dict[str, float]:
        m.eval()
        with torch.autocast(torch.device(device).type, enabled=False):  # PSNR of the fp32 network, as inference runs it
            vpsnr, vssim = evaluate(m, val_clean, val_noisy, device)
        return {"score": vpsnr, "ssim": vssim}

    options = training.recipe_options(cfg) | {"train_faces": int(len(tr)), "val_faces": int(len(val_clean))}
    return training.Recipe(model, prepare, loss, validate, options, companion), tr


def _log(msg: str) -> None:
    print(msg, flush=True)  # flushed: training logs are usually redirected to a file


def train(faces: np.ndarray, cfg: TrainConfig, out: Path, log=_log, checkpoint: Path | None = None, resume: bool = False,
          progress: bool = False, stop_after: int | None = None) -> dict:
    """Train (or fine-tune) through the project's loop on ``faces``; keeps the weights with the best validation
    PSNR (raw or, with ``ema_decay``, their moving average) and returns the card dict."""
    recipe, tr = make_recipe(cfg, faces)
    result = training.fit(recipe, torch.from_numpy(tr), torch.zeros(len(tr), dtype=torch.int64), cfg, checkpoint=checkpoint,
                          resume=resume, progress=progress, log=log, stop_after=stop_after)
    best = next(h for h in result.history if h["epoch"] == result.best_epoch)
    meta = {"config": asdict(cfg), "channels": list(CHANNELS), "bottleneck": BOTTLENECK, "impulse_switch": cfg.impulse_switch,
            "val_psnr": result.best_score, "val_ssim": best[f"{result.best_source}_ssim"], "train_images": int(len(tr)),
            "torch": torch.__version__, **training.run_facts(result)}
    save_model(result.model, out, meta)
    return load_model(out)[1] | {"history": result.history}


if __name__ == "__main__":  # `python -m fer_helpers.unet ...`: the commands live above the restorers, in unet_cli
    from .unet_cli import main

    raise SystemExit(main())
