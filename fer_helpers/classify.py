"""Classifiers: one registry (``name -> factory``), one batched call returning class probabilities in the
project's canonical order (:data:`fer_helpers.data.CLASSES`, the order of ``fer2013.csv``).

Every model declares its own label order (a Hugging Face ``config.id2label``, the alphabetical order of
image folders, the CSV order, ...) and :func:`label_index` maps it onto the canonical order explicitly;
a model whose labels cannot be mapped one-to-one fails with a message naming them. Each model family's
architecture and inference live in its own module (``cnn``, ``vit``, ``transfer``, ``landmarks``); this one
adapts them to the registry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from . import registry
from .data import CLASSES, LABEL_ALIASES
from .images import as_stack
from .paths import MODELS_DIR
from .registry import ClassifierUnavailable, loading, registrar


class ClassifierError(ValueError):
    """A classifier that cannot be used as asked; the message says why and what to do."""


def label_index(model_labels: Sequence[str] | Mapping[int, str], model: str = "model") -> np.ndarray:
    """Indices ``idx`` with ``probs_canonical = probs_model[:, idx]``.

    ``model_labels`` is the model's output order: a sequence, or a mapping from output index to label
    (a Hugging Face ``id2label``). Case and common synonyms are normalised; anything else must match.
    """
    if isinstance(model_labels, Mapping):
        keys = sorted(int(k) for k in model_labels)
        if keys != list(range(len(keys))):
            raise ClassifierError(f"{model}: id2label keys {keys} are not 0..{len(keys) - 1}")
        model_labels = [model_labels[k] if k in model_labels else model_labels[str(k)] for k in keys]  # type: ignore[index]
    names = [LABEL_ALIASES.get(str(l).strip().lower(), str(l).strip().lower()) for l in model_labels]
    unknown = [l for l, n in zip(model_labels, names) if n not in CLASSES]
    dupes = sorted({n for n in names if names.count(n) > 1})
    missing = [c for c in CLASSES if c not in names]
    if unknown or dupes or missing:
        raise ClassifierError(
            f"{model}: labels {list(model_labels)} cannot be mapped one-to-one onto {list(CLASSES)}"
            + (f"; unknown {unknown}" if unknown else "") + (f"; repeated {dupes}" if dupes else "")
            + (f"; missing {missing}" if missing else "")
            + " (a model trained on fewer classes cannot be scored on FER2013's seven)"
        )
    return np.array([names.index(c) for c in CLASSES], dtype=np.int64)


@dataclass
class ClassifyContext:
    device: str = "cpu"
    batch_size: int = 256
    weights: dict[str, str] | None = None  # classifier name -> weights file or folder
    tta: str = "ten_crop"  # the CNNs' test-time augmentation: ten_crop | flip | none
    precision: str = "fp32"  # the CNNs' and ViTs' arithmetic: fp32 | bf16 (autocast)


class Classifier(ABC):
    name: str = ""
    family: str = ""  # cnn | vit | landmarks
    labels: Sequence[str] = CLASSES  # the model's own output order

    @abstractmethod
    def raw_probabilities(self, images: np.ndarray) -> np.ndarray:
        """(N, n_labels) probabilities in the model's own label order."""

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """(N, 7) probabilities in the canonical class order."""
        images = as_stack(images)
        if len(images) == 0:
            return np.zeros((0, len(CLASSES)))
        p = self.raw_probabilities(images)[:, label_index(self.labels, self.name)]
        if not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
            raise RuntimeError(f"classifier {self.name} returned rows that do not sum to 1")
        return p


REGISTRY: dict[str, Callable[[ClassifyContext], Classifier]] = {}


register = registrar(REGISTRY)  # @register("cnn", "cnn") adds a classifier built as cls(ctx)


def create(name: str, ctx: ClassifyContext) -> Classifier:
    """Build a classifier by name; raises :class:`ClassifierUnavailable` where it cannot run here."""
    if not is_known(name):
        raise KeyError(f"unknown classifier {name!r}; known: {', '.join(available_names())}")
    return REGISTRY[name](ctx)


def is_known(name: str) -> bool:
    """A built-in classifier, an installed plug-in (entry point ``fer_study.classifiers``) or ``package.module:Class``."""
    return registry.known(REGISTRY, name, registry.CLASSIFIER_PLUGINS, Classifier)


def available_names() -> list[str]:
    return registry.names(REGISTRY, registry.CLASSIFIER_PLUGINS, Classifier)


# ---- the classifiers ----------------------------------------------------------------------------

#: the ensemble's members (CNNs of different seeds or recipes), in models/cnn/: of the combinations of the shipped
#: CNNs, this three-member mean scored best on PublicTest (70.26%, ten-crop; models/README.md)
ENSEMBLE_MEMBERS = ("cnn_long.safetensors", "cnn_long_robust.safetensors", "cnn_seed1.safetensors")

DEFAULT_WEIGHTS = {
    "cnn": MODELS_DIR / "cnn" / "cnn_long.safetensors",  # 120 epochs; cnn.safetensors (50) taught the older students
    "cnn_robust": MODELS_DIR / "cnn" / "cnn_long_robust.safetensors",
    "cnn_ensemble": ",".join(str(MODELS_DIR / "cnn" / f) for f in ENSEMBLE_MEMBERS),  # comma-separated files
    "vit_fer2013": MODELS_DIR / "vit_fer2013",
    "vit_hub": "trpakov/vit-face-expression",
    "landmark_mlp": MODELS_DIR / "landmarks" / "landmark_mlp.safetensors",
    "landmark_transformer": MODELS_DIR / "landmarks" / "landmark_transformer.safetensors",
    "landmark_gcn": MODELS_DIR / "landmarks" / "landmark_gcn.safetensors",
    "efficientnet_b0": MODELS_DIR / "transfer" / "efficientnet_b0.safetensors",
    "resnet18": MODELS_DIR / "transfer" / "resnet18.safetensors",
}


def card_of(name: str, weights: str | Path | None = None) -> dict:
    """The model card that ``name``'s weights (default: the shipped ones) carry, ``{}`` where there is none:
    the safetensors header of a weights file, ``training.json`` in a model folder, ``ensemble.json`` beside
    an ensemble's first member."""
    import json

    from .io import read_card

    target = str(weights if weights is not None else DEFAULT_WEIGHTS.get(name, ""))
    if name == "cnn_ensemble":
        target = str(Path(target.split(",")[0]).with_name("ensemble.json"))
    path = Path(target)
    try:
        if path.is_dir() and (path / "training.json").is_file():
            return json.loads((path / "training.json").read_text())
        if path.suffix == ".json" and path.is_file():
            return json.loads(path.read_text())
        if path.suffix == ".safetensors" and path.is_file():
            return read_card(path)
    except (OSError, ValueError):  # unreadable: the loader says why when the model is used
        pass
    return {}


def card_summary(name: str) -> str:
    """One line for ``fer-study classifiers``: the shipped model's PublicTest accuracy from its card."""
    card = card_of(name)
    if "val_accuracy" not in card:
        return "no card (not trained or not shipped)"
    tta = f", {card['val_tta']} TTA" if card.get("val_tta") else ""
    return f"PublicTest {card['val_accuracy']:.1%}{tta}"


def _weights(name: str, ctx: ClassifyContext) -> str:
    return str((ctx.weights or {}).get(name, DEFAULT_WEIGHTS[name]))


_CNN_MEMO: dict[tuple[str, str, str], np.ndarray] = {}


def _cnn_probabilities(weights: str, fast, images: np.ndarray, device: str, batch_size: int, tta: str,
                       precision: str) -> np.ndarray:
    """One CNN's probabilities, remembered for the last batch: the ensemble's members include the shipped ``cnn``,
    which the study scores on the same faces just before, so its pass is not paid twice."""
    import hashlib

    from . import cnn

    st = Path(weights).stat()  # a file rewritten in place is another model
    key = (f"{Path(weights).resolve()}:{st.st_size}:{st.st_mtime_ns}", tta, precision, hashlib.sha1(np.ascontiguousarray(images).tobytes()).hexdigest())
    if key not in _CNN_MEMO:
        if len(_CNN_MEMO) >= 4:  # a few weights files x one batch
            _CNN_MEMO.pop(next(iter(_CNN_MEMO)))
        _CNN_MEMO[key] = cnn.predict_proba(fast, images, device, batch_size, tta, precision)
    return _CNN_MEMO[key]


def _load_cnn(name: str, path: str, ctx: ClassifyContext):
    """(model for Grad-CAM, fused inference copy, card) of one CNN weights file, or :class:`ClassifierUnavailable`."""
    from . import cnn
    from .compute import for_inference

    fix = "train it: python -m fer_helpers.cnn --help" + (" (with --degrade-p 0.5)" if name == "cnn_robust" else "")
    if not Path(path).is_file():
        raise ClassifierUnavailable(name, f"weights file {path} not found", fix)
    with loading(ClassifierUnavailable, name, path, "CompactCNN weights file", fix):
        model, card = cnn.load(path, ctx.device)
    return model, for_inference(model, ctx.device), card


@register("cnn", "cnn")
class CNNClassifier(Classifier):
    """The project's compact CNN (trained from scratch on FER2013 Training), deterministic TTA (ten views by default)."""

    labels = CLASSES

    def __init__(self, ctx: ClassifyContext):
        # self.model stays unfused for Grad-CAM; self.fast is the BatchNorm-folded inference copy
        self.weights = _weights(self.name, ctx)
        self.model, self.fast, self.card = _load_cnn(self.name, self.weights, ctx)
        self.device, self.batch_size, self.tta, self.precision = ctx.device, ctx.batch_size, ctx.tta, ctx.precision

    def raw_probabilities(self, images: np.ndarray) -> np.ndarray:
        return _cnn_probabilities(self.weights, self.fast, images, self.device, self.batch_size, self.tta, self.precision)


@register("cnn_robust", "cnn")
class RobustCNNClassifier(CNNClassifier):
    """The project's CNN trained with the study's degradations as augmentation (the alternative to restoring)."""


@register("cnn_ensemble", "cnn")
class CNNEnsemble(Classifier):
    """Mean probability of several project CNNs (different seeds or widths), each with the same TTA."""

    labels = CLASSES

    def __init__(self, ctx: ClassifyContext):
        paths = [p.strip() for p in _weights("cnn_ensemble", ctx).split(",") if p.strip()]
        if len(paths) < 2:
            raise ClassifierUnavailable("cnn_ensemble", f"an ensemble needs at least two CNN weights files, got {paths}",
                                        "set classification.weights.cnn_ensemble to a comma-separated list of files")
        loaded = [_load_cnn("cnn_ensemble", p, ctx) for p in paths]
        self.members = list(zip(paths, [fast for _, fast, _ in loaded]))
        self.model, self.card = loaded[0][0], {"members": [c for _, _, c in loaded], "files": paths}
        self.device, self.batch_size, self.tta, self.precision = ctx.device, ctx.batch_size, ctx.tta, ctx.precision

    def raw_probabilities(self, images: np.ndarray) -> np.ndarray:
        return np.mean([_cnn_probabilities(w, m, images, self.device, self.batch_size, self.tta, self.precision)
                        for w, m in self.members], axis=0)


class _Transfer(Classifier):
    """Seed 002's recipe on a torchvision network (fer_helpers.transfer)."""

    labels = CLASSES

    def __init__(self, ctx: ClassifyContext):
        from . import transfer

        path, fix = _weights(self.name, ctx), f"train it on a GPU: python -m fer_helpers.transfer --arch {self.name} ..."
        if not Path(path).is_file():
            raise ClassifierUnavailable(self.name, f"weights file {path} not found", fix)
        with loading(ClassifierUnavailable, self.name, path, f"{self.name} weights file", fix):
            self.model, self.card = transfer.load(path, ctx.device)
        self.device, self.batch_size, self.tta = ctx.device, ctx.batch_size, ctx.tta

    def raw_probabilities(self, images: np.ndarray) -> np.ndarray:
        from . import transfer

        return transfer.predict_proba(self.model, images, self.card["config"]["input_size"], self.device, self.batch_size, self.tta)


@register("efficientnet_b0", "cnn")
class EfficientNetB0(_Transfer):
    """EfficientNet-B0 (torchvision) with seed 002's three-phase recipe, deterministic TTA."""


@register("resnet18", "cnn")
class ResNet18(_Transfer):
    """ResNet-18 (torchvision) with seed 002's three-phase recipe, deterministic TTA."""


class _HFViT(Classifier):
    source = ""

    def __init__(self, ctx: ClassifyContext):
        from . import vit

        path = _weights(self.name, ctx)
        with loading(ClassifierUnavailable, self.name, path, "Hugging Face ViT model", "check the folder or hub id, or retrain: python -m fer_helpers.vit train --help"):
            self.model, self.processor = vit.load(path, ctx.device)
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        label_index(self.labels, self.name)  # fail now, with the labels named, if they cannot be mapped
        self.device, self.batch_size, self.precision = ctx.device, ctx.batch_size, ctx.precision

    def raw_probabilities(self, images: np.ndarray) -> np.ndarray:
        from . import vit

        return vit.predict_proba(self.model, self.processor, images, self.device, self.batch_size, self.precision)


@register("vit_fer2013", "vit")
class ProjectViT(_HFViT):
    """A small ViT trained by the project on FER2013 Training (a Hugging Face model folder)."""


@register("vit_hub", "vit")
class HubViT(_HFViT):
    """trpakov/vit-face-expression (ViT-B/16 fine-tuned on FER2013), from the Hugging Face hub."""


class _Landmarks(Classifier):
    """A landmark model: MediaPipe landmarks (cached per run), then the model; faces without landmarks are failures."""

    labels = CLASSES
    task: str | None = None

    def __init__(self, ctx: ClassifyContext):
        from . import landmarks

        path, fix = _weights(self.name, ctx), "train them: python -m fer_helpers.landmarks --help"
        if not Path(path).is_file():
            raise ClassifierUnavailable(self.name, f"weights file {path} not found", fix)
        with loading(ClassifierUnavailable, self.name, path, f"{self.name} weights file", fix):
            self.model, self.card = landmarks.load(path, self.name)
        self.task = (ctx.weights or {}).get("landmarker")
        task_fix = "download the official face_landmarker.task and set classification.landmarker to it"
        if not self.task or not Path(self.task).is_file():
            raise ClassifierUnavailable(self.name, f"MediaPipe face_landmarker.task not found ({self.task})", task_fix)
        with loading(ClassifierUnavailable, self.name, self.task, "MediaPipe face landmarker bundle", task_fix):
            landmarks.check_task(self.task)

    def raw_probabilities(self, images: np.ndarray) -> np.ndarray:
        """Probabilities; rows of faces without landmarks are NaN (see :func:`predictions`).

        The landmark models score the same batch in turn, so they share one extraction (a one-batch memo)."""
        from . import landmarks

        pts, _ = landmarks.extract_memo(images, self.task)
        return landmarks.predict_proba(self.model, pts)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        images = as_stack(images)
        return self.raw_probabilities(images)[:, label_index(self.labels, self.name)] if len(images) else np.zeros((0, 7))


@register("landmark_mlp", "landmarks")
class LandmarkMLPClassifier(_Landmarks):
    """MLP over the 478 normalised MediaPipe landmarks."""


@register("landmark_transformer", "landmarks")
class LandmarkTransformerClassifier(_Landmarks):
    """Transformer over landmark tokens."""


@register("landmark_gcn", "landmarks")
class LandmarkGCNClassifier(_Landmarks):
    """Graph network over the FaceMesh edges (with self-loops)."""


def predictions(proba: np.ndarray) -> np.ndarray:
    """Predicted class per face; -1 (always wrong) where the classifier gave no answer (NaN row: no landmarks)."""
    return np.where(np.isnan(proba).any(axis=1), -1, np.nan_to_num(proba).argmax(axis=1))
