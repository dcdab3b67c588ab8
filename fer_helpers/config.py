"""Parameter sets: YAML files in ``params/``, validated against a typed schema before anything runs.

An unknown key, a wrong type or an out-of-range value raises :class:`ParamsError` with one line
that names the key, the file and what is allowed. Sections map to notebooks; a later notebook adds
its own section here and nothing in the runner changes.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import re
import typing
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from . import degrade
from .paths import NOTEBOOKS_DIR, PARAMS_DIR, resolve_path
from .quality import QUALITY_PRESETS


class ParamsError(ValueError):
    """A parameter file that cannot be used; the message says which key, which file, and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        """YAML reads ``yes``/``true`` as a boolean, which pydantic would quietly turn into 1: refuse it for numbers."""
        if isinstance(v, bool):
            ann = cls.model_fields[info.field_name].annotation
            if not _accepts_bool(ann) and _accepts_number(ann):
                raise ValueError("expected a number, not a yes/no value (YAML reads yes, no, true and false as booleans)")
        return v


def _args(ann: Any) -> tuple[Any, ...]:
    return typing.get_args(ann) or (ann,)


def _accepts_bool(ann: Any) -> bool:
    return any(a is bool or a is Any for a in _args(ann))


def _accepts_number(ann: Any) -> bool:
    return any(a in (int, float) for a in _args(ann))


class DataParams(_Section):
    source: Literal["folder", "csv"] = "folder"
    """``folder``: Kaggle layout ``<path>/<split>/<class>/*.jpg``; ``csv``: the original ``fer2013.csv``."""
    path: str = "data/sample/fer2013"
    """Folder or CSV file; ``${FER2013_DIR}`` and ``~`` are expanded, relative paths are from the project root."""
    eval_split: str = "test"
    """Split the study is scored on (folder: a sub-folder name; csv: Training, PublicTest or PrivateTest)."""
    eval_subset: Literal["all", "publictest", "privatetest"] = "all"
    """FER2013's protocol: select and tune on PublicTest, report PrivateTest. Folder mode picks the half by file name
    (``PublicTest_*``/``PrivateTest_*``; where it is absent every face is scored and the report says so); CSV mode
    ignores it (``eval_split`` is the Usage)."""
    train_split: Optional[str] = "train"
    """Split used only by the data audit, to find test images that also occur in train; null to skip."""
    per_class: Optional[int] = Field(default=None, ge=1)
    """At most this many images per class from the eval split, drawn with the run's seed; null = all."""
    label_map: Optional[dict[str, str]] = None
    """Folder name -> canonical class, for data sets whose folders are not named like FER2013's."""
    drop_test_duplicates_of_train: bool = True
    """Drop eval images whose pixels also occur in the train split (a leak for any model trained on it)."""
    drop_blank: bool = True
    """Drop blank (near-constant) eval images: they carry no expression."""
    detect_faces: bool = False
    """Find and align the face in each image (MTCNN, as ``fer-study predict`` does) instead of taking its centred
    square: for data sets of full photographs (KDEF portraits, RAF-DB originals). Images where no face is found
    are skipped and listed in the audit (``data/skipped_files.csv``). Folder data only; seconds per 100 photos."""
    blank_std_max: float = Field(default=1.0, ge=0.0, le=128.0)
    """An image whose pixel standard deviation is at most this many grey levels counts as blank."""

    @model_validator(mode="after")
    def _csv_splits(self) -> "DataParams":
        from .data import CSV_USAGES

        if self.source == "csv" and self.detect_faces:
            raise ValueError("detect_faces needs image files (source: folder): fer2013.csv holds 48x48 faces already")
        if self.source == "csv":
            for key in ("eval_split", "train_split"):
                v = getattr(self, key)
                if v is not None and v not in CSV_USAGES:
                    raise ValueError(f"{key} {v!r} is not a Usage of fer2013.csv; allowed: {', '.join(CSV_USAGES)}")
        if self.train_split is not None and self.train_split == self.eval_split:
            raise ValueError(f"train_split and eval_split are both {self.eval_split!r}; they must differ (or train_split: null)")
        return self


class DegradationParams(_Section):
    custom: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Extra presets: ``name: {steps: [{op: jpeg, value: 30}, ...], family: ..., severity: ...}``."""
    presets: list[str] = Field(default_factory=lambda: ["seeds"], min_length=1)
    """Preset names or groups (``seeds``, ``noise_sweep``, ``blur_sweep``, ``jpeg_sweep``, ``lowres_sweep``, ``sp_sweep``)."""
    batch_size: int = Field(default=512, ge=1, le=65536)
    """Images per batch."""
    gallery_images: int = Field(default=6, ge=1, le=50)
    """Faces shown per preset in the example grid."""

    @field_validator("custom")
    @classmethod
    def _check_custom(cls, custom: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, spec in custom.items():
            if name in degrade.PRESETS or name in degrade.PRESET_GROUPS:
                raise ValueError(f"custom preset {name!r} would shadow a built-in preset; rename it")
            try:
                unknown = set(spec) - {"steps", "family", "severity"}
                if unknown:
                    raise ValueError(f"unknown key(s) {sorted(unknown)}; allowed: steps, family, severity")
                degrade.make_preset(name, spec.get("steps", []), spec.get("family"), float(spec.get("severity", 1.0)))
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise ValueError(f"custom preset {name!r}: {e} (steps look like [{{op: jpeg, value: 30}}])") from None
        return custom

    @field_validator("presets")
    @classmethod
    def _check_presets(cls, presets: list[str], info: ValidationInfo) -> list[str]:
        custom = info.data.get("custom") or {}
        allowed = set(degrade.PRESETS) | set(degrade.PRESET_GROUPS) | set(custom)
        for n in presets:
            if n not in allowed:
                hint = difflib.get_close_matches(n, allowed, n=1)
                raise ValueError(
                    f"unknown preset {n!r}"
                    + (f" (did you mean {hint[0]!r}?)" if hint else "")
                    + f"; allowed: groups {', '.join(degrade.PRESET_GROUPS)}; presets {', '.join(degrade.PRESETS)}"
                    + "; or a name defined in degradation.custom (`fer-study presets` lists them)"
                )
        return presets

    def resolved_presets(self) -> list[degrade.Preset]:
        out = []
        for n in degrade.expand_preset_names(self.presets):
            if n in self.custom:
                spec = self.custom[n]
                out.append(degrade.make_preset(n, spec["steps"], spec.get("family"), float(spec.get("severity", 1.0))))
            else:
                out.append(degrade.PRESETS[n])
        return out


class QualityThresholds(_Section):
    laplacian_var_min: Optional[float] = Field(default=None, ge=0)
    """Blur: flag when the variance of the Laplacian is below this (null: no blur check)."""
    snr_db_min: Optional[float] = None
    """Noise: flag when the SNR (dB, from the estimated noise sigma) is below this (null: no noise check)."""
    blockiness_max: Optional[float] = Field(default=None, gt=0)
    """JPEG: flag when the 8x8 block-boundary ratio is above this (null: no blockiness check)."""


class QualityParams(_Section):
    preset: Literal["seed000", "project"] = "project"
    """Named thresholds: ``seed000`` (Laplacian variance >= 150, SNR >= 10) or ``project``."""
    thresholds: QualityThresholds = Field(default_factory=QualityThresholds)
    """The thresholds in force: the preset's, with any key given here replacing it (null disables that check)."""

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        if isinstance(data, dict):
            preset = data.get("preset", "project")
            given = data.get("thresholds") or {}
            if preset in QUALITY_PRESETS and isinstance(given, dict):
                data = {**data, "thresholds": {**QUALITY_PRESETS[preset], **given}}
        return data


class UNetTrainParams(_Section):
    epochs: int = Field(default=1, ge=1, le=500)
    """Epochs when the notebook trains the U-Net itself (``restoration.train_unet: true``)."""
    presets: list[str] = Field(default_factory=lambda: ["seeds", "noise_sweep", "blur_sweep", "jpeg_sweep", "sp_sweep"])
    """Degradations the blind model learns (groups allowed)."""
    max_train_images: Optional[int] = Field(default=None, ge=64)
    """Cap on Training faces (null: all)."""
    batch_size: int = Field(default=64, ge=1, le=4096)
    loss: Literal["l1", "mse", "psnr"] = "psnr"
    """``psnr`` (minus each face's PSNR, averaged) weighs mild and heavy degradations alike; L1 neglects the mild ones."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """``bf16``: mixed precision, about 2x faster on GPUs and on CPUs with AVX512-BF16 or AMX (slower on others)."""

    @field_validator("presets")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [n for n in degrade.expand_preset_names(v) if n not in degrade.PRESETS]
        if bad:
            raise ValueError(f"unknown preset(s) {bad}; `fer-study presets` lists them")
        return v


def _preset_names_or_null(v: Optional[list[str]]) -> Optional[list[str]]:
    """A list of preset or group names (or null for all); an unknown name is an error naming it."""
    if v is not None:
        bad = [n for n in v if n not in degrade.PRESETS and n not in degrade.PRESET_GROUPS]
        if bad:
            raise ValueError(f"unknown preset(s) {bad}; use names from degradation.presets or a group (or null for all)")
    return v


class RestorationParams(_Section):
    restorers: list[str] = Field(default_factory=lambda: ["none", "median", "switching_median", "nlm", "unsharp", "wiener", "auto", "unet", "unet_auto", "gfpgan_v1.4", "codeformer"])
    """Restorers to run (``none`` is always added: it is the baseline); ``fer-study restorers`` lists them."""
    gate: list[str] = Field(default_factory=lambda: ["auto", "unet"])
    """Restorers also run behind the quality gate (restore only the faces the check flags), as ``<name>+gate``."""
    presets: Optional[list[str]] = None
    """Degradation presets to restore (null: every preset of the run)."""
    batch_size: int = Field(default=64, ge=1, le=4096)
    """Faces per restorer call."""
    weights: dict[str, str] = Field(default_factory=dict)
    """Restorer -> weights file, e.g. ``{gfpgan_v1.4: ~/models/GFPGANv1.4.pth, unet: models/unet_denoiser/blind.safetensors}``."""
    allow_download: bool = True
    """Fetch missing face-prior weights once from their official release URLs (fails fast offline)."""
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Restorer -> its keyword options, e.g. ``{codeformer: {w: 0.8}, unet: {tta: flip}, nlm: {h_factor: 0.9}}``
    (``fer-study restorers`` lists each one's). A filter's options hold wherever it runs: alone, gated, inside ``auto``."""
    face_priors_on_cpu: bool = False
    """Run GFPGAN/CodeFormer even without a GPU (seconds per face: hours for a whole test split)."""
    train_unet: bool = False
    """Train the U-Net in the notebook (on data.path's train split) instead of loading the shipped weights."""
    unet_training: UNetTrainParams = Field(default_factory=UNetTrainParams)
    gallery_faces: int = Field(default=3, ge=1, le=20)
    """Faces per gallery (best, median and worst PSNR gain, in turn)."""

    @field_validator("restorers", "gate")
    @classmethod
    def _known_restorers(cls, v: list[str]) -> list[str]:
        return _restorer_names(v)

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        """Keys of older parameter files that became restorer options: say where they went."""
        moved = {"codeformer_w": "options: {codeformer: {w: VALUE}}", "unet_tta": "options: {unet: {tta: VALUE}, unet_auto: {tta: VALUE}}"}
        old = [k for k in moved if isinstance(data, dict) and k in data]
        if old:
            raise ValueError("; ".join(f"{k} is now restoration.{moved[k].replace('VALUE', str(data[k]))}" for k in old))
        return data

    @field_validator("options")
    @classmethod
    def _known_options(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from .restore import check_options

        _restorer_names(list(v))
        for name, kw in v.items():
            check_options(name, kw)
        return v

    @field_validator("presets")
    @classmethod
    def _known_presets(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        return _preset_names_or_null(v)

    @field_validator("weights")
    @classmethod
    def _known_weights(cls, v: dict[str, str]) -> dict[str, str]:
        from .restore import UNET_SPECIALISTS, available_names

        return _known_weight_keys(v, available_names() + [f"unet_{n}" for n in UNET_SPECIALISTS], "restoration")


def _known_weight_keys(v: dict[str, str], known: list[str], section: str) -> dict[str, str]:
    """A weights map's keys must name something that reads it: a typo would silently leave the default in use."""
    for n in v:
        if n not in known:
            hint = difflib.get_close_matches(n, known, n=1)
            raise ValueError(f"{section}.weights: unknown name {n!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                             + f"; allowed: {', '.join(sorted(known))}")
    return v


class ClassificationParams(_Section):
    vit: list[str] = Field(default_factory=lambda: ["vit_fer2013", "vit_hub"])
    """Classifiers notebook 04 scores (``fer-study classifiers`` lists them)."""
    baselines: list[str] = Field(default_factory=lambda: ["cnn", "cnn_ensemble", "cnn_robust", "landmark_mlp", "landmark_transformer",
                                                          "landmark_gcn"])
    """Classifiers notebook 05 scores."""
    restorers: Optional[list[str]] = None
    """Restored versions to score (null: every restorer notebook 03 ran; the unrestored faces are always scored)."""
    presets: Optional[list[str]] = None
    """Degradation presets to score (null: all; groups allowed; the clean faces are always scored)."""
    restored_presets: Optional[list[str]] = None
    """Presets whose *restored* versions are scored (null: the same as ``presets``); the unrestored faces of
    every preset in ``presets`` are always scored, so the degradation curves stay whole on a smaller grid."""
    weights: dict[str, str] = Field(default_factory=dict)
    """Classifier -> weights file, model folder or hub id, e.g. ``{vit_hub: trpakov/vit-face-expression}``."""
    landmarker: Optional[str] = None
    """MediaPipe ``face_landmarker.task`` (null: the official file, downloaded once into ~/.cache/fer-study)."""
    batch_size: int = Field(default=256, ge=1, le=8192)
    tta: Literal["ten_crop", "flip", "none"] = "ten_crop"
    """The CNNs' deterministic test-time augmentation: ``ten_crop`` (5 fixed 44 px crops and their mirrors, as in
    the model cards), ``flip`` (centre crop and mirror: 5x less work), ``none`` (centre crop)."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """The CNNs' and ViTs' arithmetic: ``bf16`` runs them under bf16 autocast, about 2x faster on CPUs with
    AVX512-BF16 or AMX and on recent GPUs; a few faces in a thousand may change their answer against ``fp32``."""

    @field_validator("vit", "baselines")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        from .classify import available_names, is_known

        return _model_names(v, is_known, available_names, "classifier")

    @field_validator("presets", "restored_presets")
    @classmethod
    def _known_presets(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        return _preset_names_or_null(v)

    @field_validator("weights")
    @classmethod
    def _known_weights(cls, v: dict[str, str]) -> dict[str, str]:
        from .classify import available_names

        return _known_weight_keys(v, available_names(), "classification")


def _model_names(v: list[str], is_known, available, what: str) -> list[str]:
    """Every name must be a built-in model, an installed plug-in or an importable ``module:Class``."""
    for n in v:
        if not is_known(n):
            known = available()
            hint = difflib.get_close_matches(n, known, n=1)
            raise ValueError(f"unknown {what} {n!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "") + f"; allowed: {', '.join(known)}"
                             " (or a plug-in: package.module:Class)")
    return v


def _restorer_names(v: list[str]) -> list[str]:
    from .restore import available_names, is_known

    return _model_names(v, is_known, available_names, "restorer")


class StatisticsParams(_Section):
    n_boot: int = Field(default=1000, ge=100, le=100_000)
    """Bootstrap resamples (faces) for the 95% confidence intervals."""
    showcase_preset: str = "seed000_chain"
    """The degradation shown in the galleries (prediction flips, Grad-CAM, ROC, calibration)."""
    gallery_faces: int = Field(default=6, ge=1, le=30)
    """Faces per gallery."""
    comparison_restorer: str = "unet_auto"
    """The restorer in "restore or train robust" (cnn + restorer vs cnn_robust), fixed in advance: unet_auto beat
    every classical filter on all 26 presets of PublicTest. If the run did not score it, the best one for the
    clean CNN on the run's faces is used, and the report says it was selected on them."""

    @field_validator("comparison_restorer")
    @classmethod
    def _known_restorer(cls, v: str) -> str:
        return _restorer_names([v])[0]


class ComputeParams(_Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where models run: ``auto`` uses a GPU when torch sees one."""
    num_threads: Optional[int] = Field(default=None, ge=1, le=256)
    """torch CPU threads (null: torch's default)."""
    workers: Optional[int] = Field(default=None, ge=1, le=256)
    """Worker processes for per-face work that runs on one core (non-local means, Wiener, PSNR/SSIM, MediaPipe
    landmarks), and threads for the batched degradation and quality measures; null: one per CPU. Results do not
    depend on it."""
    backend: Literal["loky", "dask"] = "loky"
    """Where that per-face work runs: ``loky`` (joblib worker processes on this machine) or ``dask`` (a
    dask.distributed cluster, through joblib's dask backend; needs ``dask[distributed]``). Results do not depend on it."""
    scheduler: Optional[str] = None
    """With backend ``dask``: a running scheduler's address (``tcp://host:8786``, workers with this project
    installed); null starts a local cluster of ``compute.workers`` processes once per notebook."""


class StudyParams(_Section):
    name: str = Field(default="default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Run name: outputs go to ``reports/<name>/``."""
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    """Master seed: subsetting and every random degradation derive from it."""
    notebooks: list[str] = Field(default_factory=lambda: ["01_degradation", "02_quality_check", "03_restoration", "04_vit", "05_baselines", "06_visualization"], min_length=1)
    """Notebooks the runner executes, in this order (names in ``notebooks/`` without ``.ipynb``)."""
    show_progress: bool = True
    """Progress bars inside the notebooks."""
    data: DataParams = Field(default_factory=DataParams)
    degradation: DegradationParams = Field(default_factory=DegradationParams)
    quality: QualityParams = Field(default_factory=QualityParams)
    restoration: RestorationParams = Field(default_factory=RestorationParams)
    classification: ClassificationParams = Field(default_factory=ClassificationParams)
    statistics: StatisticsParams = Field(default_factory=StatisticsParams)
    compute: ComputeParams = Field(default_factory=ComputeParams)

    @field_validator("notebooks")
    @classmethod
    def _notebooks_exist(cls, v: list[str]) -> list[str]:
        have = sorted(p.stem for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
        for n in v:
            if n not in have:
                raise ValueError(f"no notebook {n!r} in notebooks/; allowed: {', '.join(have)}")
        if len(set(v)) != len(v):
            raise ValueError("a notebook is listed twice")
        if v != sorted(v):
            raise ValueError(f"notebooks must be listed in their numbered order: {sorted(v)}")
        return v

    @model_validator(mode="after")
    def _showcase_is_scored(self) -> "StudyParams":
        """statistics.showcase_preset must be a preset the run degrades and scores: checked before anything runs,
        not found missing in notebook 06 after all the compute."""
        name = self.statistics.showcase_preset
        run = [p.name for p in self.degradation.resolved_presets()]
        scored = self.classification.presets
        candidates = [n for n in run if scored is None or n in degrade.expand_preset_names(scored)]
        explicit = "showcase_preset" in self.statistics.model_fields_set
        if not explicit and name not in candidates and (candidates or run):
            # the default names a preset this run does not score: show the run's first scored preset instead
            self.statistics.showcase_preset = name = (candidates or run)[0]
        if name not in run:
            hint = difflib.get_close_matches(name, run, n=1)
            raise ValueError(f"statistics.showcase_preset {name!r} is not among degradation.presets"
                             + (f" (did you mean {hint[0]!r}?)" if hint else "") + f"; use one of {run} or add it there")
        if explicit and scored is not None and name not in degrade.expand_preset_names(scored):
            raise ValueError(f"statistics.showcase_preset {name!r} is not among classification.presets; add it there "
                             f"or choose one of {degrade.expand_preset_names(scored)}")
        return self

    # ---- derived -------------------------------------------------------------------------
    def data_path(self) -> Path:
        """``data.path`` with variables expanded; a clear error when ``$FER2013_DIR`` is needed but unset."""
        raw = self.data.path
        if "$" in raw and Path(raw).is_absolute() and Path(raw).exists():
            return Path(raw)  # an already-resolved path whose folder name holds a '$': not a variable to expand
        for var in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", raw):
            if var not in os.environ:
                raise ParamsError(
                    f"data.path is {raw!r} but ${var} is not set: export {var}=/path/to/fer2013 "
                    f"(a folder with train/ and test/, or set data.path to it)"
                )
        return resolve_path(raw)

    def quality_thresholds(self) -> QualityThresholds:
        return self.quality.thresholds

    def device(self) -> str:
        """``compute.device`` resolved: ``auto`` is ``cuda`` when torch sees a GPU, else ``cpu``."""
        if self.compute.device != "auto":
            return self.compute.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def restoration_presets(self) -> list[degrade.Preset]:
        """The run's presets that notebook 03 restores (all of them unless restoration.presets narrows it)."""
        run = self.degradation.resolved_presets()
        if self.restoration.presets is None:
            return run
        want = degrade.expand_preset_names(self.restoration.presets)
        missing = [n for n in want if n not in {p.name for p in run}]
        if missing:
            raise ParamsError(f"restoration.presets {missing} are not in degradation.presets; add them there first")
        return [p for p in run if p.name in want]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def digest(self, *sections: str) -> str:
        """A hash of the resolved parameters, or of some sections only (what one stage reads); a dotted name
        (``compute.device``) takes one key of a section."""
        d = self.to_dict()
        if sections:
            picked: dict[str, Any] = {}
            for name in sections:
                value = d
                for part in name.split("."):
                    value = value[part]
                picked[name] = value
            d = picked
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# ---- loading ---------------------------------------------------------------------------------


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ParamsError(f"override {key!r}: {p!r} is not a section")
        cur = nxt
    cur[parts[-1]] = value


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel]:
    """The schema section at a key path (the deepest section the path reaches)."""
    model: type[BaseModel] = StudyParams
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = field.annotation if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            break
        model = ann
    return model


def _explain(err: dict[str, Any], source: str) -> str:
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        allowed = list(parent.model_fields)
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        return (
            f"{source}: unknown key {key!r}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f"; allowed keys here: {', '.join(allowed)}"
        )
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    got = err.get("input")
    got_s = "" if isinstance(got, dict) or repr(got) in msg or str(got) in msg else f" (got {got!r})"
    prefix = "" if key == "(top level)" or msg.startswith(key) else f"{key}: "  # a cross-section check names its keys
    return f"{source}: {prefix}{msg}{got_s}"


def parse_params(raw: dict[str, Any] | None, source: str = "<params>", overrides: dict[str, Any] | None = None) -> StudyParams:
    raw = copy.deepcopy(raw or {})
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of keys to values at the top level, got {type(raw).__name__}")
    for k, v in (overrides or {}).items():
        _set_dotted(raw, k, v)
    try:
        return StudyParams(**raw)
    except ValidationError as e:
        errs = e.errors()
        lines = [_explain(errs[0], source)]
        if len(errs) > 1:
            lines.append(f"(and {len(errs) - 1} more problem(s): " + "; ".join(_explain(x, source) for x in errs[1:4]) + ")")
        raise ParamsError(" ".join(lines)) from None


def load_params(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> StudyParams:
    """Read and validate a parameter file (default ``params/default.yaml``); ``overrides`` use dotted keys."""
    p = Path(path) if path else PARAMS_DIR / "default.yaml"
    if not p.is_file():
        alt = PARAMS_DIR / p.name
        if not p.is_absolute() and alt.is_file():
            p = alt
        else:
            have = ", ".join(sorted(x.name for x in PARAMS_DIR.glob("*.yaml")))
            raise ParamsError(f"parameter file {p} not found; the sets in params/ are: {have}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ParamsError(f"{p}: not UTF-8 text (byte {e.start}); save the parameter file as UTF-8") from None
    raw = read_yaml(text, str(p))
    if raw is None:
        raise ParamsError(f"{p}: the file is empty; copy params/default.yaml and change what you need")
    return parse_params(raw, source=str(p), overrides=overrides)


class _StrictLoader(yaml.SafeLoader):
    """safe_load, but a duplicated key or an empty value (``per_class:``, which YAML reads as null) is an error:
    either would silently change the study."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicated key {key!r} (first at line {seen[key].line + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark
            if isinstance(value_node, yaml.ScalarNode) and value_node.tag == "tag:yaml.org,2002:null" and value_node.value == "":
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} has no value; write null for 'none' or give a value", value_node.start_mark)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictLoader.construct_mapping)


def read_yaml(text: str, source: str) -> Any:
    """Parse YAML strictly (see :class:`_StrictLoader`); errors name the source, line and column."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ParamsError(f"{source}: not valid YAML{where}: {problem}") from None


def save_params(params: StudyParams, path: Path) -> None:
    from .io import write_yaml

    write_yaml(path, params.to_dict())
