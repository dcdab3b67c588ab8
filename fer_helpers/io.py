"""Run directories and their files: every write is atomic, every run records its parameters and versions.

A run directory (``reports/<name>/``) holds what each notebook wrote, so a later notebook reads
files, never hidden state. Files are written to a temporary name and renamed into place, so an
interrupted run never leaves a half-written file that a later notebook would trust.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from .paths import PROJECT_ROOT, REPORTS_DIR

#: Packages whose versions are recorded next to every run's outputs.
TRACKED_PACKAGES = (
    "fer-study", "numpy", "scipy", "pandas", "pillow", "scikit-learn", "scikit-image", "PyWavelets", "torch",
    "torchvision", "transformers", "timm", "basicsr", "gfpgan", "facexlib", "mediapipe", "opencv-python",
    "plotly", "papermill", "nbconvert", "pydantic",
)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix or ".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_csv(path: str | os.PathLike, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def save_images(path: str | os.PathLike, ids: Any, images: np.ndarray, **extra: np.ndarray) -> None:
    """Save an image stack with its ids (and any per-image arrays) as a compressed ``.npz``."""
    ids = np.asarray(ids, dtype=str)
    if len(ids) != len(images):
        raise ValueError(f"{len(ids)} ids for {len(images)} images")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, ids=ids, images=images, **extra)


def load_images(path: str | os.PathLike) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the notebook that writes it first (or `fer-study run`)")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def code_digest(*modules: Any) -> str:
    """A hash of the source files of ``modules``: results computed by changed code are never reused."""
    import hashlib

    h = hashlib.sha256()
    for m in modules:
        h.update(Path(m.__file__).read_bytes())
    return h.hexdigest()[:12]


#: the parameter sections each stage reads (a stage also reads everything its upstream stages read)
STAGE_SECTIONS = {
    "data": ("seed", "data"),
    "degradation": ("seed", "data", "degradation"),
    "quality": ("seed", "data", "degradation", "quality"),
    # compute.workers and compute.num_threads change the speed, not the numbers: only the device is part of the key
    "restoration": ("seed", "data", "degradation", "quality", "restoration", "compute.device"),
    "classification": ("seed", "data", "degradation", "quality", "restoration", "compute.device", "classification"),
}


def stage_key(params: Any, stage: str, *modules: Any) -> str:
    """What a stage's cached output is valid for: the parameters it reads and the code that computed it, so a
    change to a later section (a classifier, say) never recomputes an earlier stage."""
    return f"{params.digest(*STAGE_SECTIONS[stage])}-{code_digest(*modules)}"


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def git_commit() -> str | None:
    try:
        r = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        dirty = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return r.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment_record() -> dict[str, Any]:
    return {
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "packages": package_versions(),
    }


class RunDir:
    """The layout of one run's output folder. Notebooks and the runner find files only through this."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    @classmethod
    def for_params(cls, params: Any, run_dir: str | os.PathLike | None = None) -> "RunDir":
        return cls(run_dir if run_dir else REPORTS_DIR / params.name)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    # files the stages share
    @property
    def params_file(self) -> Path:
        return self.path("params.resolved.yaml")

    @property
    def versions_file(self) -> Path:
        return self.path("versions.json")

    @property
    def clean_file(self) -> Path:
        return self.path("data", "clean.npz")

    def degraded_file(self, preset: str) -> Path:
        return self.path("degraded", f"{preset}.npz")

    @property
    def headlines_dir(self) -> Path:
        return self.path("headlines")

    # stage manifests: a stage is done for a parameter digest when its manifest says so
    def stage_file(self, stage: str) -> Path:
        return self.path("stages", f"{stage}.json")

    def stage_done(self, stage: str, digest: str) -> bool:
        f = self.stage_file(stage)
        return f.is_file() and read_json(f).get("params_digest") == digest

    def mark_stage(self, stage: str, digest: str, **info: Any) -> None:
        write_json(self.stage_file(stage), {"params_digest": digest, "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **info})

    def write_provenance(self, params: Any) -> None:
        from .config import save_params

        self.root.mkdir(parents=True, exist_ok=True)
        save_params(params, self.params_file)
        write_json(self.versions_file, environment_record())


def save_weights(path: str | os.PathLike, state_dict: dict, card: dict) -> None:
    """Weights as safetensors with the model card (config, scores) in the header, written atomically."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp), metadata={"fer_study": json.dumps(card)})


def read_card(path: str | os.PathLike) -> dict:
    """The model card stored in a safetensors header by :func:`save_weights` (``{}`` if none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {}).get("fer_study", "{}"))
    except FileNotFoundError:
        raise
    except Exception as e:  # SafetensorError (torn, truncated, foreign file), bad JSON in the header
        raise ValueError(f"{path}: not a readable weights file ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                         "replace it with a file saved by the project's training command") from None
