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
import zipfile
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import numpy as np
import pandas as pd

from .paths import PROJECT_ROOT, REPORTS_DIR

T = TypeVar("T")
#: what reading a damaged cache file raises (truncated zip/npz, garbled CSV or JSON, a missing column or array)
CACHE_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)

#: Packages whose versions are recorded next to every run's outputs.
TRACKED_PACKAGES = (
    "fer-study", "numpy", "scipy", "pandas", "pillow", "scikit-learn", "scikit-image", "PyWavelets", "torch",
    "torchvision", "transformers", "timm", "basicsr", "gfpgan", "facexlib", "mediapipe", "opencv-python",
    "plotly", "papermill", "nbconvert", "pydantic",
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix or ".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600: a report shared on a group server must stay readable
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as e:
        if e.filename is None and e.errno is not None:  # a failed write (full disk) names no file: name the target
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_yaml(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as block-style YAML in its own key order, written atomically (parameter files)."""
    import yaml

    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False))


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


def describe_os_error(e: OSError) -> str:
    """One line for a filesystem fault: the path, the cause, and what to do."""
    import errno

    path = e.filename if e.filename is not None else "a file"
    if e.errno is None:  # raised by the project with its own message
        return str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"{path}: {e.strerror} while writing; free some space, or write elsewhere (--run-dir / --out)"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{path}: {e.strerror}; write elsewhere (--run-dir / --out) or make the folder writable"
    if e.errno in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
        return f"{path}: {e.strerror} (a file is where a folder should be, or the reverse); choose another path or move it"
    if e.errno == errno.ENOENT:
        return f"{path}: {e.strerror}; check the path"
    return f"{path}: {e.strerror}"


def read_if_computed_for(path: str | os.PathLike, digest: str) -> dict[str, np.ndarray] | None:
    """A saved stack when it exists, loads, and was computed for ``digest``; None otherwise (then recompute it)."""
    if not Path(path).is_file():
        return None
    try:
        z = load_images(path)
    except CACHE_ERRORS:
        return None
    return z if str(z.get("params_digest", "")) == digest else None


def check_archive(path: str | os.PathLike) -> None:
    """Raise when a saved ``.npz`` is missing, truncated or corrupt (zip CRCs checked, arrays not decoded)."""
    with zipfile.ZipFile(path) as z:
        bad = z.testzip()
    if bad is not None:
        raise zipfile.BadZipFile(f"{path}: member {bad} fails its CRC check")


PACKAGE_DIR = Path(__file__).resolve().parent
#: set by ``fer-study run --force``: a stage counts as done only if it was computed under this token
FORCE_ENV = "FER_STUDY_FORCE_TOKEN"
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def _file_hash(path: Path) -> str:
    """Content hash of one file, remembered per (path, size, mtime) within the process."""
    import hashlib

    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _FILE_HASHES[key] = h.hexdigest()
    return _FILE_HASHES[key]


def files_digest(paths: Any) -> str:
    """A hash of the contents of files and of every file under folders (names included); a missing path
    counts as missing, so creating it later changes the digest."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted({Path(p) for p in paths}, key=str):
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            h.update(str(f).encode())
            h.update(_file_hash(f).encode() if f.is_file() else b"missing")
    return h.hexdigest()[:12]


def listing_digest(paths: Any) -> str:
    """A hash of the names, sizes and modification times of files and of every file under folders: cheap
    enough for a data set of many thousands of images (an edited image gets a new size or time)."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted({Path(p) for p in paths}, key=str):
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            st = f.stat() if f.exists() else None
            h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode() if st else f"{f}:missing".encode())
    return h.hexdigest()[:12]


def weights_files(weights: dict[str, str]) -> list[Path]:
    """The files a ``*.weights`` parameter map points at (comma-separated lists split), for a stage key; hub ids
    resolve to paths that do not exist and count as missing."""
    from .paths import resolve_path

    return [resolve_path(part.strip()) for v in weights.values() for part in str(v).split(",") if part.strip()]


def code_digest() -> str:
    """A hash of every source file of the package: a result computed by any other code is never reused.
    (Coarse on purpose: which function a stage reaches through which import is not worth guessing.)"""
    return files_digest(PACKAGE_DIR.rglob("*.py"))


#: the parameter sections each stage reads (a stage also reads everything its upstream stages read)
STAGE_SECTIONS = {
    "data": ("seed", "data"),
    "degradation": ("seed", "data", "degradation"),
    "quality": ("seed", "data", "degradation", "quality"),
    # compute.workers and compute.num_threads change the speed, not the numbers: only the device is part of the key
    "restoration": ("seed", "data", "degradation", "quality", "restoration", "compute.device"),
    "classification": ("seed", "data", "degradation", "quality", "restoration", "compute.device", "classification"),
}


def stage_key(params: Any, stage: str, upstream: Any = (), inputs: Any = (), data_inputs: Any = ()) -> str:
    """What a stage's cached output is valid for: the parameter sections it reads, the keys of the upstream
    stages whose outputs it reads, the package's code, the contents of the weights and model files it reads
    (``inputs``) and the listing of the data files it reads (``data_inputs``). A change to a later section (a
    classifier, say) never recomputes an earlier stage; any change upstream does."""
    import hashlib

    parts = [params.digest(*STAGE_SECTIONS[stage]), *map(str, upstream), code_digest(), files_digest(inputs),
             listing_digest(data_inputs)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


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

    def _mark(self, stage: str) -> dict:
        """The stage's manifest (what :meth:`mark_stage` wrote); ``{}`` when there is none or it is torn (recompute)."""
        f = self.stage_file(stage)
        try:
            return read_json(f) if f.is_file() else {}
        except (OSError, ValueError):
            return {}

    def stage_done(self, stage: str, digest: str) -> bool:
        """True when the stage's output was computed for ``digest`` (and, under ``--force``, during this run)."""
        mark = self._mark(stage)
        force = os.environ.get(FORCE_ENV)
        return mark.get("params_digest") == digest and (not force or mark.get("force_token") == force)

    def cached(self, stage: str, digest: str, load: Callable[[], T]) -> T | None:
        """``load()`` the stage's cached outputs when they were computed for ``digest``; None when they were not,
        or when a cache file fails to load (truncated, edited into nonsense): the caller then recomputes."""
        if not self.stage_done(stage, digest):
            self._say_why_recomputed(stage, digest)
            return None
        try:
            return load()
        except CACHE_ERRORS as exc:  # an unreadable cache file: recompute rather than crash or serve it
            print(f"[{stage}] a cached output could not be read ({type(exc).__name__}: {str(exc)[:160]}); recomputing the stage")
            self.stage_file(stage).unlink(missing_ok=True)
            return None

    def _say_why_recomputed(self, stage: str, digest: str) -> None:
        """One line when outputs computed for other inputs are about to be replaced: a run after an edit of the
        package (``--only 06_...`` included) recomputes every stage, which should not look like a hang."""
        mark = self._mark(stage)
        if not mark or mark.get("params_digest") == digest:
            return  # never computed here, or recomputed because of --force
        why = ("the package's code changed" if mark.get("code") not in (None, code_digest())
               else "its parameters, model files or an upstream stage changed")
        print(f"[{stage}] computed before for other inputs ({why}): recomputing it", flush=True)

    def stage_digest(self, stage: str) -> str:
        """The key the stage's output was last computed for ("" when it has none): what downstream keys include."""
        return str(self._mark(stage).get("params_digest", ""))

    def mark_stage(self, stage: str, digest: str, **info: Any) -> None:
        token = {"force_token": os.environ[FORCE_ENV]} if os.environ.get(FORCE_ENV) else {}
        write_json(self.stage_file(stage), {"params_digest": digest, "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                            "code": code_digest(), **token, **info})

    def write_provenance(self, params: Any) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_yaml(self.params_file, params.to_dict())
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
