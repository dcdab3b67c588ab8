"""Landmark baselines: 478 MediaPipe FaceMesh landmarks per face, and three classifiers over them.

Extraction uses the current MediaPipe Tasks ``FaceLandmarker`` (the legacy ``solutions.face_mesh`` API
is gone) with a ``face_landmarker.task`` model file given as a path: the official file where it can be
downloaded, ``../shared/models/face_landmarker.task`` in this project's tests. About 6% of FER2013 faces
get no landmarks at all; they are kept, counted, and scored as failures (never dropped).

Normalisation, identical in training and inference (:func:`normalise`): subtract the landmarks' mean,
divide by their RMS distance from it in the image plane (x, y; z scaled the same), so the features do
not depend on where the face sits or how large it is.

Models (all over the normalised (478, 3) points):

- ``LandmarkMLP``: the flattened points through two hidden layers;
- ``LandmarkTransformer``: one token per landmark (a linear embedding of its coordinates plus a learned
  per-landmark embedding), a transformer encoder, mean pooling;
- ``LandmarkGCN``: graph convolutions over the FaceMesh tesselation (2,556 edges) and iris rings, with
  self-loops, so no landmark is isolated; symmetric normalisation ``D^-1/2 (A + I) D^-1/2``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import cnn, training
from .data import CLASSES
from .images import as_stack
from .registry import Unavailable, one_line

N_POINTS = 478


class LandmarkerUnavailable(Unavailable):
    """MediaPipe or its face landmarker bundle is missing (see :class:`fer_helpers.registry.Unavailable`)."""


def _task_digest(model_path: Path) -> str:
    return hashlib.sha256(model_path.read_bytes()).hexdigest()[:12]


def extract(images: np.ndarray, model_path: str | Path, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks of each face: (N, 478, 3) float32 in MediaPipe's normalised image units (NaN where no face was
    found) and the (N,) boolean "found". The grey face is given to MediaPipe as three equal RGB channels.
    Large stacks are split over worker processes (``compute.workers``)."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise LandmarkerUnavailable(
            "landmarker", f"MediaPipe model {model_path} not found",
            "download the official face_landmarker.task "
            "(https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task) "
            "and set classification.landmarker to its path")
    try:
        import mediapipe  # noqa: F401
    except ImportError as e:
        raise LandmarkerUnavailable("landmarker", f"mediapipe is not importable ({one_line(e)})", "pip install mediapipe==1.2.2") from None
    from .compute import map_chunks, workers

    out = map_chunks(_extract, as_stack(images), min_chunk=64, model_path=str(model_path.resolve()),
                     progress=progress and workers() == 1)  # worker processes' bars would interleave
    return out, ~np.isnan(out[:, 0, 0])


_CHECKED_TASKS: set[tuple[str, int, int]] = set()


def check_task(model_path: str | Path) -> None:
    """Open the MediaPipe bundle once (about 0.05 s) so that a corrupt or foreign file fails here, naming
    the file, rather than in the middle of a study; raises what MediaPipe raises (RuntimeError, ValueError)."""
    st = Path(model_path).stat()
    key = (str(Path(model_path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _CHECKED_TASKS:
        _extract(np.zeros((0, 48, 48), np.uint8), str(model_path))
        _CHECKED_TASKS.add(key)


def _extract(images: np.ndarray, model_path: str, progress: bool = False) -> np.ndarray:
    """The landmarks of each face, in this process."""
    import mediapipe as mp
    from mediapipe.tasks import python as mpt
    from mediapipe.tasks.python import vision
    from tqdm.auto import tqdm

    out = np.full((len(images), N_POINTS, 3), np.nan, dtype=np.float32)
    opts = vision.FaceLandmarkerOptions(base_options=mpt.BaseOptions(model_asset_path=model_path),
                                        running_mode=vision.RunningMode.IMAGE, num_faces=1)
    # opened and closed per call (about 0.05 s): a landmarker left open fails in mediapipe's __del__ at exit
    with _native_stderr_silenced():  # its C++ side logs a few lines each time one is opened
        lm = vision.FaceLandmarker.create_from_options(opts)
    with lm:
        for i, im in enumerate(tqdm(images, desc="landmarks", disable=not progress, leave=False)):
            rgb = np.ascontiguousarray(np.repeat(im[:, :, None], 3, axis=2))
            res = lm.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
            if res.face_landmarks:
                out[i] = [(p.x, p.y, p.z) for p in res.face_landmarks[0]]
    return out


@contextlib.contextmanager
def _native_stderr_silenced():
    """MediaPipe's C++ side logs to file descriptor 2 on every landmarker it opens (TFLite's XNNPACK line, glog
    warnings about feedback tensors): point fd 2 at /dev/null while one is opened. Its errors still reach Python
    as exceptions; nothing of the project's own is written meanwhile."""
    import sys

    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (some embedded interpreters): nothing to silence
        yield
        return
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_MEMO: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def extract_memo(images: np.ndarray, model_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """:func:`extract` that remembers the last batch it saw, so several landmark models share one extraction."""
    key = hashlib.sha1(as_stack(images).tobytes()).hexdigest() + str(model_path)
    if key not in _MEMO:
        _MEMO.clear()
        _MEMO[key] = extract(images, model_path)
    return _MEMO[key]


def extract_cached(images: np.ndarray, model_path: str | Path, cache: str | Path, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """:func:`extract`, computed once per (pixels, model file) and kept in ``cache`` (a .npz) by pixel hash."""
    from .io import atomic_path

    cache, model_path = Path(cache), Path(model_path)
    keys = np.array([hashlib.sha1(im.tobytes()).hexdigest() for im in as_stack(images)])
    digest = _task_digest(model_path) if model_path.is_file() else ""
    known: dict[str, np.ndarray] = {}
    if cache.is_file():
        with np.load(cache) as z:
            if str(z["model"]) == digest:
                known = dict(zip(z["keys"].tolist(), z["points"]))
    todo = [i for i, k in enumerate(keys) if k not in known]
    if todo:
        pts, _ = extract(images[todo], model_path, progress)
        known.update(zip(keys[todo].tolist(), pts))
        all_keys = np.array(list(known))
        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, keys=all_keys, points=np.stack([known[k] for k in all_keys]), model=np.array(digest))
    points = np.stack([known[k] for k in keys]) if len(keys) else np.zeros((0, N_POINTS, 3), np.float32)
    return points, ~np.isnan(points[:, 0, 0])


def normalise(points: np.ndarray) -> np.ndarray:
    """Centre on the mean landmark and scale by the RMS in-plane distance to it; NaN faces stay NaN."""
    p = np.asarray(points, dtype=np.float32)
    centred = p - p.mean(axis=1, keepdims=True)
    scale = np.sqrt((centred[..., :2] ** 2).sum(-1).mean(-1))[:, None, None]
    return centred / np.maximum(scale, 1e-6)


def facemesh_adjacency() -> torch.Tensor:
    """``D^-1/2 (A + I) D^-1/2`` over MediaPipe's FaceMesh tesselation and iris rings (478 x 478, dense).

    The tesselation covers landmarks 0-467; the iris rings join 469-472 and 474-477; the two iris
    centres (468, 473) have only their self-loop, which keeps them in the graph.
    """
    from mediapipe.tasks.python import vision

    conn = vision.FaceLandmarksConnections
    a = torch.eye(N_POINTS)
    for c in conn.FACE_LANDMARKS_TESSELATION + conn.FACE_LANDMARKS_LEFT_IRIS + conn.FACE_LANDMARKS_RIGHT_IRIS:
        a[c.start, c.end] = a[c.end, c.start] = 1.0
    d = a.sum(1).rsqrt()
    return (d[:, None] * a * d[None, :]).to_sparse()  # about 5,600 non-zeros of 228,484


class LandmarkMLP(nn.Module):
    def __init__(self, hidden: int = 512, dropout: float = 0.3):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(N_POINTS * 3, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden // 2), nn.BatchNorm1d(hidden // 2), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden // 2, len(CLASSES)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LandmarkTransformer(nn.Module):
    """Transformer over region tokens: the 478 landmarks fall into ``regions`` spatial groups (k-means on the
    mean training face, :meth:`set_regions`; saved with the weights); each group's points are embedded as one
    token by a per-landmark linear map (a block-diagonal embedding of the group's concatenated coordinates,
    so no point is averaged away), then ``layers`` pre-norm encoder layers. ``readout="mean"``: a head on the
    mean token; ``readout="tokens"``: a head on all tokens in region order, which keeps which region said what.
    Attention over 32 tokens instead of 478 makes it trainable on a CPU in minutes."""

    def __init__(self, dim: int = 64, layers: int = 2, heads: int = 4, regions: int = 32, dropout: float = 0.1,
                 readout: str = "mean"):
        super().__init__()
        if readout not in ("mean", "tokens"):
            raise ValueError(f"unknown readout {readout!r}; use 'mean' or 'tokens'")
        self.readout = readout
        self.n_regions = regions
        self.register_buffer("region", torch.arange(N_POINTS) % regions)  # placeholder until set_regions
        self.point_embed = nn.Parameter(torch.randn(N_POINTS, 3, dim) * (N_POINTS / regions * 3) ** -0.5)
        self.region_pos = nn.Parameter(torch.zeros(1, regions, dim))
        nn.init.normal_(self.region_pos, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)  # no padding: nothing to nest
        if readout == "mean":
            self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, len(CLASSES)))
        else:
            self.head = nn.Sequential(nn.LayerNorm(dim), nn.Flatten(), nn.Dropout(0.3), nn.Linear(regions * dim, len(CLASSES)))

    def set_regions(self, mean_face: np.ndarray, seed: int = 0) -> None:
        """Group the landmarks by k-means (scikit-learn) on the in-plane positions of a mean normalised face."""
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=self.n_regions, n_init=4, random_state=seed).fit(np.asarray(mean_face)[:, :2])
        self.region.copy_(torch.from_numpy(km.labels_.astype(np.int64)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.einsum("bpc,pcd->bpd", x, self.point_embed)  # (B, 478, dim)
        tokens = h.new_zeros(h.shape[0], self.n_regions, h.shape[2]).index_add_(1, self.region, h) + self.region_pos
        encoded = self.encoder(tokens)
        return self.head(encoded.mean(1) if self.readout == "mean" else encoded)


class LandmarkGCN(nn.Module):
    """Residual graph convolutions over the FaceMesh graph; each node's input is its coordinates plus a learned
    embedding of which landmark it is. ``readout="pool"``: mean- and max-pooling over the nodes;
    ``readout="nodes"``: each node's features projected to ``node_features`` numbers and read in landmark order
    by a small MLP, so the head knows which landmark moved (pooling over 478 nodes blurs a raised brow into a
    lowered lip)."""

    def __init__(self, dim: int = 64, layers: int = 3, dropout: float = 0.2, node_embedding: bool = False,
                 readout: str = "pool", node_features: int = 8, hidden: int = 256):
        super().__init__()
        if readout not in ("pool", "nodes"):
            raise ValueError(f"unknown readout {readout!r}; use 'pool' or 'nodes'")
        self.register_buffer("adj", facemesh_adjacency(), persistent=False)  # a constant: not saved with the weights
        self.inp = nn.Linear(3, dim)
        self.node = nn.Parameter(torch.randn(N_POINTS, dim) * 0.02) if node_embedding else None
        self.convs = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.drop = nn.Dropout(dropout)
        self.readout = readout
        if readout == "pool":
            self.head = nn.Linear(2 * dim, len(CLASSES))
        else:
            self.node_out = nn.Linear(dim, node_features)
            self.head = nn.Sequential(nn.Linear(N_POINTS * node_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                      nn.Dropout(0.3), nn.Linear(hidden, len(CLASSES)))

    def propagate(self, h: torch.Tensor) -> torch.Tensor:
        """``A_hat @ h`` for node-major features (478, B, D): one sparse product, no transposes."""
        n, b, d = h.shape
        return torch.sparse.mm(self.adj, h.reshape(n, b * d).float()).reshape(n, b, d).to(h.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # node-major (478, B, D) throughout: the graph products then need no copies
        h = self.inp(x.transpose(0, 1))
        h = F.relu(h + self.node[:, None, :] if self.node is not None else h)
        for conv, norm in zip(self.convs, self.norms):
            h = h + self.drop(F.relu(norm(self.propagate(conv(h)))))  # residual graph convolution
        if self.readout == "pool":
            return self.head(torch.cat([h.mean(0), h.amax(0)], dim=1))
        return self.head(self.node_out(h).transpose(0, 1).flatten(1))


ARCHS = {"landmark_mlp": LandmarkMLP, "landmark_transformer": LandmarkTransformer, "landmark_gcn": LandmarkGCN}
#: each model's size options (keyword arguments of its class), as trained for the shipped weights
MODEL_OPTIONS: dict[str, dict[str, int | float]] = {
    "landmark_mlp": {"hidden": 512, "dropout": 0.3},
    "landmark_transformer": {"dim": 96, "layers": 3, "heads": 4, "regions": 32, "dropout": 0.1, "readout": "tokens"},
    # dropout on (478, B, D) costs a fifth of a step; the node readout's head has its own
    "landmark_gcn": {"dim": 64, "layers": 3, "dropout": 0.0, "node_embedding": True, "readout": "nodes"},
}
DEFAULT_EPOCHS = {"landmark_mlp": 60, "landmark_transformer": 60, "landmark_gcn": 40}


@dataclass
class LandmarkTrainConfig(training.FitConfig):
    arch: str = "landmark_mlp"
    epochs: int = 60
    batch_size: int = 256
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    precision: str = "fp32"  # the models are small; bf16 gains little and sparse products need fp32
    label_smoothing: float = 0.1
    mirror: bool = True  # mirror faces (x -> -x with the left/right landmarks swapped)
    teacher: str = ""  # CNN weights file(s), comma-separated: distil their ten-crop probability of each face; empty: none
    alpha: float = 0.7
    temperature: float = 4.0


def mirror_permutation(mean_face: np.ndarray) -> np.ndarray:
    """``perm`` with ``points[:, perm] * (-1, 1, 1)`` the mirror image of a face: each landmark's partner is
    the landmark nearest to its reflection across the vertical axis of the mean (normalised) face, matched
    one-to-one (Hungarian assignment, scikit-learn's SciPy); landmarks on the midline map to themselves."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    xy = np.asarray(mean_face, dtype=np.float64)[:, :2]
    xy = xy - xy.mean(0)
    reflected = xy * np.array([-1.0, 1.0])
    _, perm = linear_sum_assignment(cdist(reflected, xy))
    return perm


def _augment(x: torch.Tensor, gen: torch.Generator, mirror: torch.Tensor | None = None) -> torch.Tensor:
    """Small in-plane rotation (about 10 degrees), scale (5%), coordinate jitter and, where ``mirror`` (a
    landmark permutation) is given, mirroring of half the faces. A mirrored face's landmarks are a permutation
    of the indices as well as a sign flip, hence the permutation."""
    n = x.shape[0]
    ang = (torch.rand(n, generator=gen) * 2 - 1) * 0.17  # about 10 degrees
    scale = 1 + (torch.rand(n, generator=gen) * 2 - 1) * 0.05
    flip = torch.rand(n, generator=gen) < 0.5
    sign = torch.ones(n)
    if mirror is not None:  # mirrored faces: landmarks re-ordered (one gather), x negated (in the map below)
        order = torch.where(flip[:, None], mirror[None, :], torch.arange(x.shape[1])[None, :])
        x = torch.gather(x, 1, order[..., None].expand(-1, -1, x.shape[2]))
        sign = torch.where(flip, -1.0, 1.0)
    cos, sin, zero = torch.cos(ang) * scale, torch.sin(ang) * scale, torch.zeros(n)
    # each face's 3x3 map (transposed: points are rows): mirror sign, rotation and scale in-plane, scale in depth;
    # one batched product that also adds the jitter, instead of a dozen passes over the points
    maps = torch.stack([torch.stack([cos * sign, sin * sign, zero], 1), torch.stack([-sin, cos, zero], 1),
                        torch.stack([zero, zero, scale], 1)], 1)
    return torch.baddbmm(torch.randn(x.shape, generator=gen), x, maps, beta=0.01)


@torch.no_grad()
def predict_proba(model: nn.Module, points: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """(N, 7) probabilities from raw landmarks; faces without landmarks get NaN rows (the caller scores them as failures).

    Small batches: the GCN's (478, batch x 64) activations and the transformer's stay in cache (4x and 2x faster
    than batches of 1,024 on the CPU; the MLP does not care)."""
    return _proba_of_normalised(model, normalise(points), batch_size)


@torch.no_grad()
def _proba_of_normalised(model: nn.Module, norm: np.ndarray, batch_size: int = 64) -> np.ndarray:
    model.eval()
    found = ~np.isnan(norm[:, 0, 0])
    out = np.full((len(norm), len(CLASSES)), np.nan)
    idx = np.flatnonzero(found)
    for s in range(0, len(idx), batch_size):
        sel = idx[s : s + batch_size]
        out[sel] = F.softmax(model(torch.from_numpy(norm[sel])).float(), dim=1).numpy()
    return out


def _accuracy_counting_missing(model: nn.Module, normalised: np.ndarray, labels: np.ndarray) -> float:
    proba = _proba_of_normalised(model, normalised)
    pred = np.where(np.isnan(proba[:, 0]), -1, np.nan_to_num(proba).argmax(1))  # no landmarks: a wrong answer
    return float((pred == labels).mean())


def make_recipe(cfg: LandmarkTrainConfig, points: np.ndarray, val_points: np.ndarray, val_labels: np.ndarray,
                teacher_proba: np.ndarray | None = None) -> training.Recipe:
    """A landmark model's part of the loop; ``points``: the training faces' landmarks (all found).

    With ``teacher_proba`` (the teacher's probabilities of the same faces, :func:`fer_helpers.cnn.teacher_proba`)
    and ``cfg.alpha > 0``, the loss is :func:`fer_helpers.training.distillation_loss`; the stored targets are then
    (label, row) pairs, so that the loss can look up each face's teacher output after the loop shuffles them."""
    if cfg.arch not in ARCHS:
        raise ValueError(f"unknown landmark model {cfg.arch!r}; use one of {sorted(ARCHS)}")
    torch.manual_seed(cfg.seed)
    options = MODEL_OPTIONS[cfg.arch]
    model = ARCHS[cfg.arch](**options)
    mean_face = normalise(points).mean(0)
    if hasattr(model, "set_regions"):  # the transformer's tokens: regions of the mean training face
        model.set_regions(mean_face, cfg.seed)
    mirror = torch.from_numpy(mirror_permutation(mean_face)) if cfg.mirror else None
    if teacher_proba is not None and len(teacher_proba) != len(points):
        raise ValueError(f"teacher_proba has {len(teacher_proba)} rows for {len(points)} faces")
    teacher_logits = (torch.from_numpy(np.log(np.clip(teacher_proba, 1e-8, 1.0))).float()
                      if teacher_proba is not None and cfg.alpha > 0 else None)

    def prepare(xb, yb, gen):
        return _augment(xb, gen, mirror), yb

    def loss(m, inputs, targets, gen):
        logits = m(inputs)
        labels = targets if teacher_logits is None else targets[:, 0]
        hard = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
        teacher = None if teacher_logits is None else teacher_logits[targets[:, 1]]
        return training.distillation_loss(hard, logits, teacher, cfg.alpha, cfg.temperature)

    val_normalised = normalise(val_points)  # once, not every epoch (normalising costs as much as the MLP's validation)

    def validate(m):
        return {"score": _accuracy_counting_missing(m, val_normalised, val_labels)}

    return training.Recipe(model, prepare, loss, validate, training.recipe_options(cfg) | {"model": options})


def train(points: np.ndarray, labels: np.ndarray, val_points: np.ndarray, val_labels: np.ndarray, cfg: LandmarkTrainConfig,
          out: Path, checkpoint: Path | None = None, resume: bool = False, progress: bool = False, log=print,
          teacher_proba: np.ndarray | None = None) -> dict:
    """Train through the project's loop on the faces with landmarks; select by validation accuracy counting
    faces without landmarks as wrong. ``teacher_proba``: the teacher's probabilities of all training faces
    (distillation when ``cfg.alpha > 0``)."""
    from sklearn.metrics import confusion_matrix, f1_score

    from .io import save_weights

    found = ~np.isnan(points[:, 0, 0])
    distilled = teacher_proba is not None and cfg.alpha > 0
    recipe = make_recipe(cfg, points[found], val_points, val_labels, teacher_proba[found] if distilled else None)
    y = torch.from_numpy(labels[found].astype(np.int64))
    targets = torch.stack([y, torch.arange(len(y))], 1) if distilled else y
    result = training.fit(recipe, torch.from_numpy(normalise(points[found])), targets,
                          cfg, checkpoint=checkpoint, resume=resume, progress=progress, log=lambda m: log(f"{cfg.arch} {m}"))
    options = recipe.options["model"]
    proba = predict_proba(result.model, val_points)
    pred = np.where(np.isnan(proba[:, 0]), -1, np.nan_to_num(proba).argmax(1))
    card = {"config": asdict(cfg), "model": options, "val_accuracy": float((pred == val_labels).mean()),
            "val_macro_f1": f1_score(val_labels, pred, labels=range(len(CLASSES)), average="macro"),
            "confusion_matrix": confusion_matrix(val_labels, np.where(pred < 0, len(CLASSES), pred),
                                                 labels=range(len(CLASSES) + 1))[: len(CLASSES)].tolist(),
            "confusion_last_column": "faces without landmarks",
            "train_faces": int(found.sum()), "train_faces_without_landmarks": int((~found).sum()),
            "val_faces": int(len(val_labels)), "val_faces_without_landmarks": int(np.isnan(val_points[:, 0, 0]).sum()),
            "labels": list(CLASSES), **training.run_facts(result)}
    if distilled:
        card["teacher"] = cnn.teacher_card(cfg.teacher) | {"targets": "ten-crop probability of each whole training face"}
    save_weights(out, result.model.state_dict(), card)
    return card | {"history": result.history}


def load(path: str | Path, arch: str | None = None) -> tuple[nn.Module, dict]:
    """The model in ``path`` and its card; with ``arch``, the file must hold that model (never another one
    scored under the requested name)."""
    from safetensors.torch import load_file

    from .io import read_card

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"landmark model weights {path} not found: train them with `python -m fer_helpers.landmarks`")
    card = read_card(path)
    held = card.get("config", {}).get("arch")
    if held not in ARCHS:
        raise ValueError(f"{path}: not a landmark model file of this project (its card names no known model)")
    if arch is not None and held != arch:
        raise ValueError(f"{path}: holds {held} weights, not {arch}; point the weights of {arch} at a {arch} file")
    model = ARCHS[held](**card.get("model", {}))
    missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    if unexpected or missing:
        raise ValueError(f"{path}: does not hold {held} weights (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval(), card


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fer_helpers.landmarks --fer2013 DIR --task face_landmarker.task --out-dir models/landmarks``:
    extract (cached) and train the three landmark models, selecting on PublicTest."""
    import argparse

    from . import data

    ap = argparse.ArgumentParser(prog="python -m fer_helpers.landmarks")
    ap.add_argument("--fer2013", required=True)
    ap.add_argument("--task", required=True, help="face_landmarker.task")
    ap.add_argument("--out-dir", type=Path, default=Path("models/landmarks"))
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "fer-study" / "landmarks_fer2013.npz")
    ap.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS), metavar="ARCH",
                    help=f"which models to train (default: all of {', '.join(ARCHS)})")
    ap.add_argument("--epochs", type=int, default=None, help=f"default per model: {DEFAULT_EPOCHS}")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=LandmarkTrainConfig.seed)
    ap.add_argument("--resume", action="store_true", help="continue each model from its checkpoint under ~/.cache/fer-study/train/")
    ap.add_argument("--teacher", default="", help="CNN weights file(s), comma-separated: distil their ten-crop probability "
                                                   "of each training face (several: their mean, as cnn_ensemble predicts)")
    ap.add_argument("--alpha", type=float, default=LandmarkTrainConfig.alpha, help="weight of the teacher's term")
    ap.add_argument("--temperature", type=float, default=LandmarkTrainConfig.temperature)
    a = ap.parse_args(argv)
    missing = [str(f) for f in cnn.teacher_files(a.teacher) if not f.is_file()]
    if missing:
        ap.error(f"--teacher: no such weights file {', '.join(missing)} (CNN weights, e.g. models/cnn/cnn.safetensors)")
    tr, val, _ = data.fer2013_train_val(a.fer2013)
    p_tr, f_tr = extract_cached(tr.images, a.task, a.cache, progress=True)
    p_va, f_va = extract_cached(val.images, a.task, a.cache, progress=True)
    print(f"landmarks found: train {f_tr.mean():.1%} of {len(tr)}, PublicTest {f_va.mean():.1%} of {len(val)}", flush=True)
    teacher_proba = None
    if a.teacher and a.alpha > 0:
        print(f"teacher: ten-crop probabilities of the {len(tr)} training faces from {a.teacher}", flush=True)
        teacher_proba = cnn.teacher_proba(a.teacher, tr.images, cache=a.cache.parent, progress=True)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    for arch in a.archs:
        cfg = LandmarkTrainConfig(arch=arch, epochs=a.epochs or DEFAULT_EPOCHS[arch], threads=a.threads, seed=a.seed,
                                  teacher=a.teacher, alpha=a.alpha, temperature=a.temperature)
        card = train(p_tr, tr.labels, p_va, val.labels, cfg, a.out_dir / f"{arch}.safetensors",
                     checkpoint=training.CHECKPOINT_ROOT / f"{arch}.pt", resume=a.resume, progress=True,
                     log=lambda m: print(m, flush=True), teacher_proba=teacher_proba)
        (a.out_dir / f"{arch}.json").write_text(json.dumps(card, indent=2))
        print(f"{arch}: best PublicTest accuracy {card['val_accuracy']:.4f} (epoch {card['best_epoch']})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
