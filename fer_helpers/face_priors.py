"""Face-prior restorers: GFPGAN v1.3 / v1.4 and CodeFormer, run on aligned 48x48 grey faces.

Both networks take an aligned 512x512 RGB face in [-1, 1] and return one. FER2013 faces are already
aligned crops, so the architectures are built directly and only their weights are loaded:
``gfpgan.GFPGANer`` (and CodeFormer's own inference script) would first download face-detection and
face-parsing weights that aligned crops never use.

Path per batch: grey uint8 -> 3 equal channels -> bicubic upscale to 512 -> network -> clamp -> grey by
ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B) -> anti-aliased bicubic downscale to 48 -> uint8. The
luma step is needed because the priors were trained on colour faces and may tint a grey input.

Caveats the study reports: GFPGAN was trained for up to 8x degradation, and 48 -> 512 px is 10.7x, so
FER2013 is outside its range (CodeFormer was trained up to 30x). GFPGAN's decoder injects noise; its
stock inference draws fresh noise per call, here the noise maps stored in the weights file are used
so that a face's restoration does not depend on the random state or on its batch neighbours.

Weights come from ``restoration.weights.<name>`` when set, else from the cache
(``<cache_dir>/weights/<file>``), else are downloaded once from the official release (fails in
seconds offline). Every failure is a one-line :class:`RestorerUnavailable` naming the file and the fix.

CodeFormer's architecture comes from the PyPI package ``codeformer-pip`` (it vendors CodeFormer's own
basicsr copy as ``codeformer.basicsr``). Install it with ``--no-deps``: its declared requirements
(unpinned torch, tb-nightly, gdown, ...) would otherwise replace the pinned stack; only ``lpips``
(pure Python, imported by the vendored basicsr) is needed besides what requirements.txt installs.
"""

from __future__ import annotations

import http.client
import importlib.util
import os
import shutil
import sys
import urllib.request
import warnings
from abc import abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .images import as_stack
from .registry import one_line
from .restore import RestoreContext, Restorer, RestorerUnavailable, register

SIZE = 512  # the networks' input and output side
LUMA_601 = (0.299, 0.587, 0.114)
DOWNLOAD_TIMEOUT_S = 5.0  # per socket operation: an offline machine fails at once, not after minutes
CODEFORMER_INSTALL = "pip install --no-deps --no-build-isolation lpips==0.1.4 codeformer-pip==0.0.4"
GFPGAN_INSTALL = "pip install --no-build-isolation basicsr==1.4.2 facexlib==0.3.0 gfpgan==1.3.8 (after torch)"


@dataclass(frozen=True)
class WeightsFile:
    """An official weights file: its cache name, release URL and exact size (None where not pinned)."""

    file: str
    url: str
    size: int | None


WEIGHTS: dict[str, WeightsFile] = {
    "gfpgan_v1.3": WeightsFile("GFPGANv1.3.pth", "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.3.pth", 348_632_874),
    "gfpgan_v1.4": WeightsFile("GFPGANv1.4.pth", "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.4/GFPGANv1.4.pth", 348_632_874),
    # size not pinned: a damaged file still fails torch.load or the strict key check
    "codeformer": WeightsFile("codeformer.pth", "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth", None),
}


def _fix(name: str) -> str:
    w = WEIGHTS[name]
    return f"get it with `curl -L -o {w.file} {w.url}` and set restoration.weights.{name} to that file"


def locate_weights(name: str, ctx: RestoreContext) -> tuple[Path, bool]:
    """The weights path and whether the user gave it; raises at once when no file can be had.

    Only the project's own cache file is held to the official size: a user's file is trusted to be
    whatever they point at, and is checked by ``torch.load`` and the strict key match instead.
    """
    w = WEIGHTS[name]
    if name in ctx.weights:
        path = Path(ctx.weights[name]).expanduser()
        if not path.is_file():
            raise RestorerUnavailable(name, f"weights file {path} (restoration.weights.{name}) not found", _fix(name))
        return path, True
    path = Path(ctx.cache_dir).expanduser() / "weights" / w.file
    if path.is_file():
        if w.size is not None and path.stat().st_size != w.size:
            raise RestorerUnavailable(name, f"{path} has {path.stat().st_size:,} bytes, not the official {w.size:,} "
                                            "(an interrupted copy?)", f"delete it and re-run, or {_fix(name)}")
    elif not ctx.allow_download:
        raise RestorerUnavailable(name, f"weights file {path} not found and restoration.allow_download is false", _fix(name))
    return path, False


def download(name: str, dest: Path) -> None:
    """Fetch the official file to a temporary name, check its size, then rename it into place.

    A partial download never lands at ``dest``, so an interrupted run cannot leave a bad cache file.
    """
    w = WEIGHTS[name]
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.part{os.getpid()}")
    try:
        with urllib.request.urlopen(w.url, timeout=DOWNLOAD_TIMEOUT_S) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f, 1 << 20)
        if w.size is not None and tmp.stat().st_size != w.size:
            raise OSError(f"got {tmp.stat().st_size:,} bytes, expected {w.size:,}")
        os.replace(tmp, dest)
    except (OSError, ValueError, http.client.HTTPException) as e:  # URLError, HTTPError, timeouts are OSErrors
        raise RestorerUnavailable(name, f"could not download {w.url} ({one_line(e)})",
                                  f"on a machine online, {_fix(name)} (or copy it to {dest})") from None
    finally:
        tmp.unlink(missing_ok=True)


def load_weights(name: str, net: Any, path: Path, arch: str) -> None:
    """Load ``params_ema`` (else ``params``) from ``path`` into ``net`` with every key matched."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged file raises RuntimeError, UnpicklingError, EOFError, ... by where it breaks
        raise RestorerUnavailable(name, f"cannot read {path} ({one_line(e)}); truncated or not a torch file", _fix(name)) from None
    state = ckpt.get("params_ema", ckpt.get("params")) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise RestorerUnavailable(name, f"{path} has no 'params_ema' or 'params' entry: not {arch} weights", _fix(name))
    try:
        keys = net.load_state_dict(state, strict=False)
    except (RuntimeError, TypeError, AttributeError) as e:  # shape mismatches raise even when not strict
        raise RestorerUnavailable(name, f"{path} is not {arch} weights ({one_line(e)})", _fix(name)) from None
    if keys.missing_keys or keys.unexpected_keys:
        example = (keys.missing_keys + keys.unexpected_keys)[0]
        raise RestorerUnavailable(name, f"{path} is not {arch} weights ({len(keys.missing_keys)} keys missing, "
                                        f"{len(keys.unexpected_keys)} unexpected, e.g. {example!r})", _fix(name))


@contextmanager
def legacy_imports() -> Iterator[None]:
    """Context for importing basicsr, gfpgan or CodeFormer's copy of basicsr on today's torchvision.

    basicsr imports ``torchvision.transforms.functional_tensor``, which torchvision has removed (its
    functions live in ``functional``), and these packages use deprecated scipy/torch names at import:
    warnings about code that is not the project's are silenced.
    """
    import torchvision.transforms.functional

    sys.modules.setdefault("torchvision.transforms.functional_tensor", torchvision.transforms.functional)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


class FacePrior(Restorer):
    """Shared 48 px <-> 512 px handling; subclasses build the network and run it on [-1, 1] RGB."""

    arch = ""
    package = ""  # the module that provides the architecture
    install = ""  # how to install it

    def __init__(self, ctx: RestoreContext):
        # weights first, heavy imports last: offline, a missing file is reported in milliseconds
        path, user_given = locate_weights(self.name, ctx)
        if ctx.device == "cpu" and not ctx.face_priors_on_cpu:
            raise RestorerUnavailable(self.name, "a face prior takes seconds per face on a CPU (about 3 s for GFPGAN on 2 cores)",
                                      "run on a GPU (params/fer2013-gpu.yaml, or Colab) or set restoration.face_priors_on_cpu: true")
        if not user_given and not path.is_file():
            if importlib.util.find_spec(self.package) is None:  # cheap: no 349 MB download for a missing package
                raise RestorerUnavailable(self.name, f"package {self.package} is not installed", self.install)
            download(self.name, path)
        net = self.build_net()
        load_weights(self.name, net, path, self.arch)
        self.net, self.device, self.batch_size = net.to(ctx.device).eval(), ctx.device, max(1, ctx.batch_size)

    @abstractmethod
    def build_net(self) -> Any:
        """Import the architecture (a missing package raises :class:`RestorerUnavailable`) and build it."""

    @abstractmethod
    def forward(self, x: Any) -> Any:
        """``x``: (n, 3, 512, 512) in [-1, 1]; returns the restored faces, same shape, roughly in [-1, 1]."""

    def _rgb512(self, batch: np.ndarray) -> Any:
        """One batch of 48 px grey faces through the network: (n, 3, 512, 512) in [0, 1] on the run's device."""
        import torch
        import torch.nn.functional as F

        with torch.no_grad():
            x = torch.from_numpy(batch).to(self.device).float().div_(255).unsqueeze(1)
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bicubic", align_corners=False).clamp_(0, 1)
            return self.forward(x.expand(-1, 3, -1, -1).mul(2).sub(1)).clamp(-1, 1).add_(1).div_(2)

    def restore(self, images: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        out = np.empty_like(images)
        for s in range(0, len(images), self.batch_size):
            rgb = self._rgb512(images[s : s + self.batch_size])
            luma = (rgb * torch.tensor(LUMA_601, device=rgb.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
            small = F.interpolate(luma, size=images.shape[1:], mode="bicubic", align_corners=False, antialias=True)
            out[s : s + len(small)] = small.squeeze(1).mul_(255).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
        return out

    def restore_hires(self, images: np.ndarray) -> np.ndarray:
        """The networks' own 512 px RGB output, uint8 (N, 512, 512, 3), for a gallery of a few faces."""
        import torch

        images = as_stack(images)
        out = np.empty((len(images), SIZE, SIZE, 3), np.uint8)
        for s in range(0, len(images), self.batch_size):
            rgb = self._rgb512(images[s : s + self.batch_size])
            out[s : s + len(rgb)] = rgb.permute(0, 2, 3, 1).mul(255).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
        return out


class GFPGAN(FacePrior):
    """GFPGAN (GFPGANv1Clean, 86.4 M parameters), with the noise maps stored in its weights."""

    arch = "GFPGANv1Clean"
    package, install = "gfpgan", GFPGAN_INSTALL

    def build_net(self) -> Any:
        try:
            with legacy_imports():
                from gfpgan.archs.gfpganv1_clean_arch import GFPGANv1Clean
        except ImportError as e:
            raise RestorerUnavailable(self.name, f"package gfpgan is not importable ({one_line(e)})", GFPGAN_INSTALL) from None
        return GFPGANv1Clean(out_size=SIZE, num_style_feat=512, channel_multiplier=2, decoder_load_path=None,
                             fix_decoder=False, num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)

    def forward(self, x: Any) -> Any:
        return self.net(x, return_rgb=False, randomize_noise=False)[0]


@register("gfpgan_v1.3", "face prior")
class GFPGANv13(GFPGAN):
    """GFPGAN v1.3 (official weights), 48 px grey face up to 512 px and back, luma of its RGB output."""


@register("gfpgan_v1.4", "face prior")
class GFPGANv14(GFPGAN):
    """GFPGAN v1.4 (official weights), 48 px grey face up to 512 px and back, luma of its RGB output."""


@register("codeformer", "face prior")
class CodeFormer(FacePrior):
    """CodeFormer (official weights) with fidelity weight w (0: the codebook's face, 1: closest to the input)."""

    arch = "CodeFormer"
    package, install = "codeformer", CODEFORMER_INSTALL

    def __init__(self, ctx: RestoreContext, w: float = 0.8):
        if not 0.0 <= w <= 1.0:
            raise ValueError(f"restoration.options.codeformer.w = {w}: the fidelity weight lies in [0, 1] (seed 001 used 0.8)")
        self.w = w
        super().__init__(ctx)

    def build_net(self) -> Any:
        try:
            with legacy_imports():
                from codeformer.basicsr.archs.codeformer_arch import CodeFormer as Arch
        except ImportError as e:
            raise RestorerUnavailable(self.name, f"package codeformer-pip is not installed/importable ({one_line(e)})",
                                      CODEFORMER_INSTALL) from None
        return Arch(dim_embd=512, codebook_size=1024, n_head=8, n_layers=9, connect_list=["32", "64", "128", "256"])

    def forward(self, x: Any) -> Any:
        return self.net(x, w=self.w, adain=True)[0]

    def describe(self) -> str:
        return f"{super().describe()}; w = {self.w}"
