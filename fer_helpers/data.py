"""Data: FER2013 (Kaggle folders or the original CSV), any image-folder data set, subsetting and the audit.

One canonical class order for the whole project, :data:`CLASSES` (the order of ``fer2013.csv``'s
``emotion`` column). Every loader maps its own labels onto it explicitly.

Faces are converted to 48x48 grayscale by one documented rule, :func:`to_face48`: ITU-R 601-2 luma
(Pillow's ``"L"``), a centred square crop of the shorter side, then a Lanczos (anti-aliased) resize
to 48x48. FER2013 images are already 48x48 grey and pass through unchanged. The rule assumes the
images are face crops (KDEF, RAF-DB aligned, CK+ crops); uncropped photos need a face detector first.

Unreadable or corrupt files are never fatal and never silent: each is recorded in
``Dataset.skipped`` with its path and the reason, and counted in the report.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from .images import FACE_SIZE, high_bit_depth_to_grey, stable_hash, to_face48  # noqa: F401  (data.FACE_SIZE, data.to_face48)

#: Canonical class order (index = FER2013 CSV ``emotion`` code).
CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
CLASS_INDEX = {c: i for i, c in enumerate(CLASSES)}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm"}
_IMAGE_ENDINGS = tuple(IMAGE_SUFFIXES)

#: Label spellings seen in FER data sets' folder names and models' outputs, mapped to canonical classes
#: (a data set's ``label_map`` extends it).
LABEL_ALIASES: dict[str, str] = {
    **{c: c for c in CLASSES},
    "anger": "angry", "disgusted": "disgust", "fearful": "fear", "afraid": "fear", "happiness": "happy",
    "joy": "happy", "sadness": "sad", "surprised": "surprise", "neutrality": "neutral", "calm": "neutral",
}
#: FER2013 CSV ``Usage`` values and the Kaggle folder split each corresponds to.
CSV_USAGES = ("Training", "PublicTest", "PrivateTest")


class DataError(ValueError):
    """A data set that cannot be read as asked; the message names the path and the fix."""


@dataclass
class Dataset:
    """A stack of 48x48 grey faces with ids, canonical labels and where each came from."""

    ids: np.ndarray  # str, unique, stable across runs (e.g. "test/angry/PublicTest_123.jpg")
    images: np.ndarray  # uint8 (N, 48, 48)
    labels: np.ndarray  # int64 index into CLASSES
    split: str
    file_sha1: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))  # bytes of the source file ("" for CSV rows)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.images.shape != (n, FACE_SIZE, FACE_SIZE) or len(self.labels) != n:
            raise ValueError(f"inconsistent dataset: {n} ids, images {self.images.shape}, {len(self.labels)} labels")
        if len(self.file_sha1) != n:
            self.file_sha1 = np.full(n, "", dtype=object)

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, idx: Sequence[int] | np.ndarray) -> "Dataset":
        idx = np.asarray(idx, dtype=np.int64)
        return Dataset(self.ids[idx], self.images[idx], self.labels[idx], self.split, self.file_sha1[idx], list(self.skipped))

    @property
    def pixel_sha1(self) -> np.ndarray:
        return np.array([hashlib.sha1(im.tobytes()).hexdigest() for im in self.images])

    def class_counts(self) -> pd.Series:
        return pd.Series(np.bincount(self.labels, minlength=len(CLASSES)), index=list(CLASSES), name=self.split)


def _resolve_class(folder: str, label_map: Mapping[str, str] | None, root: Path) -> int:
    name = (label_map or {}).get(folder, folder)
    name = LABEL_ALIASES.get(name.lower(), name.lower())
    if name not in CLASS_INDEX:
        raise DataError(
            f"class folder {root / folder} does not name a FER2013 class; add it to data.label_map "
            f"(e.g. {{{folder}: neutral}}) with a value in {list(CLASSES)}"
        )
    return CLASS_INDEX[name]


def load_folder(root: str | Path, split: str, label_map: Mapping[str, str] | None = None, progress: bool = False,
                name_prefix: str | None = None, read_face: Callable[[Image.Image], np.ndarray | None] | None = None) -> Dataset:
    """Read ``root/split/<class>/*`` into a :class:`Dataset`; ids are ``split/class/file``. With ``name_prefix``
    only files whose names start with it are opened at all (the others are never read). ``read_face`` turns an
    opened image into the 48x48 face (default :func:`to_face48`, for pre-cropped faces; ``faces.face_from_photo``
    detects it in a photograph) and may return None: no face, the file is skipped with that reason."""
    read_face = read_face or to_face48
    root = Path(root)
    base = root / split
    if not base.is_dir():
        have = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        hint = f"it has: {', '.join(have)}" if have else "the folder does not exist"
        raise DataError(f"no split folder {base} ({hint}); set data.path to a folder with <split>/<class>/ images")
    # os.scandir and plain strings: for a few thousand small files, pathlib's objects cost a sixth of the reading
    split_id = Path(split).as_posix()
    files: list[tuple[str, str, int]] = []  # (path, id, class)
    for d in sorted((e for e in os.scandir(base) if e.is_dir()), key=lambda e: e.name):
        cls = _resolve_class(d.name, label_map, base)
        files += [(e.path, f"{split_id}/{d.name}/{e.name}", cls) for e in sorted(os.scandir(d.path), key=lambda e: e.name)
                  if e.is_file() and not e.name.startswith(".") and (name_prefix is None or e.name.startswith(name_prefix))]
    if not files:
        raise DataError(f"no class folders with images under {base}; expected {base}/<class>/*.jpg")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(files), desc=f"read {split}", leave=False)
    ids, images, labels, shas, skipped = [], [], [], [], []
    # one thread: most of a small file's time is Pillow's Python, which threads would only contend for
    for path, rel, cls in files:
        arr, sha, reason = _read_file(path, rel, read_face)
        if bar is not None:
            bar.update()
        if reason:
            skipped.append((rel, reason))
            continue
        ids.append(rel)
        images.append(arr)
        labels.append(cls)
        shas.append(sha)
    if bar is not None:
        bar.close()
    return _assemble(ids, images, labels, split, skipped, base, shas)


def _read_file(path: str, rel: str, read_face: Callable[[Image.Image], np.ndarray | None]) -> tuple[np.ndarray | None, str, str]:
    """(face, sha1 of the file's bytes, why it is skipped or "") for one file."""
    if not rel.lower().endswith(_IMAGE_ENDINGS):
        return None, "", f"not an image file (suffix {PurePosixPath(rel).suffix or 'none'})"
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        with Image.open(io.BytesIO(raw)) as im:  # the bytes already read (hashed below), not a second read
            arr = read_face(im)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        return None, "", f"unreadable: {type(e).__name__}: {str(e)[:120]}"
    if arr is None:
        return None, "", "no face found by the detector (data.detect_faces)"
    return arr, hashlib.sha1(raw).hexdigest(), ""


def load_csv(path: str | Path, usage: str) -> Dataset:
    """Read one ``Usage`` (Training, PublicTest, PrivateTest) of the original ``fer2013.csv``; ids are ``Usage/row``."""
    path = Path(path)
    if usage not in CSV_USAGES:
        raise DataError(f"split {usage!r} is not a Usage of fer2013.csv; use one of {list(CSV_USAGES)}")
    if not path.is_file():
        raise DataError(f"{path} not found; point data.path at fer2013.csv (columns emotion,pixels,Usage)")
    try:
        df = pd.read_csv(path, dtype={"emotion": "Int64", "pixels": str, "Usage": str})
    except (ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{path} is not a readable CSV ({e}); expected columns emotion,pixels,Usage") from None
    missing = {"emotion", "pixels", "Usage"} - set(df.columns)
    if missing:
        raise DataError(f"{path} lacks column(s) {sorted(missing)}; expected emotion,pixels,Usage (the original fer2013.csv)")
    rows = df.index[df["Usage"] == usage]
    if len(rows) == 0:
        raise DataError(f"{path} has no rows with Usage == {usage!r}; it has {sorted(df['Usage'].dropna().unique())}")
    ids, images, labels, skipped = [], [], [], []
    for r in rows:
        rid = f"{usage}/{r:05d}"
        emo, pix = df.at[r, "emotion"], df.at[r, "pixels"]
        try:
            if pd.isna(emo) or not 0 <= int(emo) < len(CLASSES):
                raise ValueError(f"emotion {emo!r} not in 0..{len(CLASSES) - 1}")
            arr = np.array(str(pix).split(), dtype=np.int64)
            if arr.size != FACE_SIZE * FACE_SIZE or arr.min() < 0 or arr.max() > 255:
                raise ValueError(f"{arr.size} pixel values (need {FACE_SIZE * FACE_SIZE} in 0..255)")
        except ValueError as e:
            skipped.append((f"{path.name} row {r + 2}", f"malformed: {e}"))  # +2: header, 1-based lines
            continue
        ids.append(rid)
        images.append(arr.reshape(FACE_SIZE, FACE_SIZE).astype(np.uint8))
        labels.append(int(emo))
    return _assemble(ids, images, labels, usage, skipped, path)


def _assemble(ids: list[str], images: list[np.ndarray], labels: list[int], split: str, skipped: list[tuple[str, str]],
              where: Path, shas: list[str] | None = None) -> Dataset:
    """Stack what a loader read into a :class:`Dataset`, warning once about what it skipped."""
    if skipped:
        first = "; ".join(f"{p}: {r}" for p, r in skipped[:3])
        warnings.warn(f"skipped {len(skipped)} file(s) under {where}: {first}" + (" ..." if len(skipped) > 3 else ""), stacklevel=3)
    return Dataset(
        np.array(ids, dtype=str),
        np.stack(images) if images else np.zeros((0, FACE_SIZE, FACE_SIZE), np.uint8),
        np.array(labels, dtype=np.int64),
        split,
        np.array(shas, dtype=object) if shas is not None else np.array([], dtype=str),
        skipped,
    )


def load_split(source: str, path: str | Path, split: str, label_map: Mapping[str, str] | None = None, progress: bool = False,
               read_face: Callable[[Image.Image], np.ndarray | None] | None = None) -> Dataset:
    if source == "csv":
        return load_csv(path, split)
    return load_folder(path, split, label_map, progress=progress, read_face=read_face)


def subset_per_class(ds: Dataset, per_class: int | None, seed: int) -> Dataset:
    """At most ``per_class`` images of each class, drawn by a seeded generator; order by id.

    The draw depends only on the seed and the set of ids (not on file-listing order).
    """
    if per_class is None:
        return ds
    order = np.argsort(ds.ids, kind="stable")
    keep: list[int] = []
    for c in range(len(CLASSES)):
        idx = order[ds.labels[order] == c]
        if len(idx) > per_class:
            rng = np.random.default_rng(np.random.SeedSequence([seed, stable_hash("subset_per_class"), c]))
            idx = np.sort(rng.choice(idx, size=per_class, replace=False))
        keep.extend(idx.tolist())
    return ds.take(sorted(keep, key=lambda i: ds.ids[i]))


# ---- audit ------------------------------------------------------------------------------------


@dataclass
class Audit:
    counts: pd.DataFrame  # class x split
    duplicates_within: pd.DataFrame  # one row per image in a within-split duplicate group
    duplicates_across: pd.DataFrame  # one row per eval image whose pixels occur in train
    blank: pd.DataFrame  # eval images with (near) constant pixels
    skipped: pd.DataFrame  # unreadable files, by path and reason

    def summary(self) -> dict[str, int]:
        return {
            "eval images read": int(self.counts.iloc[:, 0].sum()),
            "unreadable files skipped": len(self.skipped),
            "within-split duplicate groups": int(self.duplicates_within["group"].nunique()) if len(self.duplicates_within) else 0,
            "eval images also in train": int(self.duplicates_across["eval_id"].nunique()) if len(self.duplicates_across) else 0,
            "... of which with a different label": int((~self.duplicates_across["same_label"]).sum()) if len(self.duplicates_across) else 0,
            "blank eval images": len(self.blank),
        }


def _dup_groups(ds: Dataset, hashes: np.ndarray) -> pd.DataFrame:
    df = pd.DataFrame({"id": ds.ids, "split": ds.split, "label": [CLASSES[i] for i in ds.labels], "pixel_sha1": hashes})
    df = df[df.duplicated("pixel_sha1", keep=False)].copy()
    df["group"] = pd.factorize(df["pixel_sha1"])[0]
    df["byte_identical"] = False
    if len(df):
        fs = pd.Series(ds.file_sha1, index=ds.ids)
        df["byte_identical"] = df.groupby("group")["id"].transform(lambda s: fs[s].nunique() == 1 and fs[s].iloc[0] != "")
    return df.sort_values(["group", "id"]).reset_index(drop=True)


def audit(eval_ds: Dataset, train_ds: Dataset | None, blank_std_max: float) -> Audit:
    """Class balance, pixel-identical images within and across splits, blank images, skipped files."""
    ev_hash = eval_ds.pixel_sha1
    counts = [eval_ds.class_counts()]
    within = [_dup_groups(eval_ds, ev_hash)]
    across = pd.DataFrame(columns=["eval_id", "eval_label", "train_ids", "train_labels", "same_label"])
    skipped = list(eval_ds.skipped)
    if train_ds is not None:
        tr_hash = train_ds.pixel_sha1
        counts.append(train_ds.class_counts())
        w = _dup_groups(train_ds, tr_hash)
        if len(w) and len(within[0]):
            w["group"] += within[0]["group"].max() + 1
        within.append(w)
        skipped += train_ds.skipped
        tr = pd.DataFrame({"id": train_ds.ids, "label": train_ds.labels, "h": tr_hash})
        by_hash = tr.groupby("h").agg(train_ids=("id", list), train_labels=("label", list))
        hit = pd.DataFrame({"eval_id": eval_ds.ids, "label": eval_ds.labels, "h": ev_hash}).join(by_hash, on="h", how="inner")
        if len(hit):
            across = pd.DataFrame(
                {
                    "eval_id": hit["eval_id"].to_numpy(),
                    "eval_label": [CLASSES[i] for i in hit["label"]],
                    "train_ids": [" ".join(x) for x in hit["train_ids"]],
                    "train_labels": [" ".join(sorted({CLASSES[i] for i in x})) for x in hit["train_labels"]],
                    "same_label": [all(t == l for t in ts) for l, ts in zip(hit["label"], hit["train_labels"])],
                }
            )
    std = eval_ds.images.reshape(len(eval_ds), -1).std(axis=1) if len(eval_ds) else np.zeros(0)
    b = std <= blank_std_max
    blank = pd.DataFrame({"id": eval_ds.ids[b], "label": [CLASSES[i] for i in eval_ds.labels[b]], "pixel_std": std[b]})
    return Audit(
        counts=pd.concat(counts, axis=1).rename_axis("class"),
        duplicates_within=pd.concat(within, ignore_index=True),
        duplicates_across=across.reset_index(drop=True),
        blank=blank.reset_index(drop=True),
        skipped=pd.DataFrame(skipped, columns=["path", "reason"]),
    )


def no_faces_left(read: int, dropped: pd.DataFrame, path: Path, split: str) -> str:
    """Why a run has no evaluation face left: how many were read and which were dropped for what."""
    if read == 0:
        return f"no {split} images in {path}: the folder holds none this run can read"
    shown = "; ".join(f"{i} ({r})" for i, r in dropped.head(3).itertuples(index=False))
    more = f" and {len(dropped) - 3} more" if len(dropped) > 3 else ""
    return (f"no {split} images left from {path}: all {read} were dropped by the audit: {shown}{more}; keep them with "
            "data.drop_blank=false or data.drop_test_duplicates_of_train=false, or use other images")


def drop_flagged(ds: Dataset, audit_: Audit, drop_train_duplicates: bool, drop_blank: bool) -> tuple[Dataset, pd.DataFrame]:
    """Remove eval images the audit flagged (as the parameters ask); return the kept set and what was dropped, with why."""
    reasons: dict[str, str] = {}
    if drop_train_duplicates:
        for i in audit_.duplicates_across["eval_id"]:
            reasons[i] = "also in train"
    if drop_blank:
        for i in audit_.blank["id"]:
            reasons[i] = (reasons[i] + "; " if i in reasons else "") + "blank"
    keep = np.array([i not in reasons for i in ds.ids], dtype=bool)
    dropped = pd.DataFrame({"id": list(reasons), "reason": list(reasons.values())})
    return ds.take(np.flatnonzero(keep)), dropped


#: FER2013's halves of the Kaggle test/ folder, told apart by the file-name prefix
SUBSET_PREFIXES = {"publictest": "PublicTest_", "privatetest": "PrivateTest_"}


def select_subset(ds: Dataset, subset: str, source: str) -> tuple[Dataset, dict]:
    """The evaluation faces of ``subset`` (``all``, ``publictest``, ``privatetest``) and a record of what was
    scored and why. Folder mode tells FER2013's halves apart by file name; a CSV split is one ``Usage`` already.
    Where the asked-for half is not there (another data set, a copy holding one half) every face is scored and
    the record says so. ``selected_on_these`` is true when the scored faces include PublicTest, the half every
    shipped model and tuned setting was selected on."""
    names = [Path(i).name for i in ds.ids]
    public = np.array([n.startswith("PublicTest_") for n in names]) if source == "folder" else None
    if source == "csv":
        note = f"all {len(ds):,} faces of the CSV split {ds.split!r} (in CSV mode the split is the Usage)"
        return ds, {"subset": subset, "scored": "all", "faces": len(ds), "note": note,
                    "selected_on_these": ds.split == "PublicTest"}
    if subset == "all":
        note = f"all {len(ds):,} faces of {ds.split}/"
        return ds, {"subset": "all", "scored": "all", "faces": len(ds), "note": note, "selected_on_these": bool(public.any())}
    prefix = SUBSET_PREFIXES[subset]
    keep = np.array([n.startswith(prefix) for n in names])
    if keep.any():
        out = ds.take(np.flatnonzero(keep))
        note = f"{prefix.rstrip('_')} only: {len(out):,} of the {len(ds):,} faces of {ds.split}/, by file name"
        return out, {"subset": subset, "scored": subset, "faces": len(out), "note": note,
                     "selected_on_these": subset == "publictest"}
    why = ("it holds only the other half" if public.any() or any(n.startswith("PrivateTest_") for n in names)
           else "its file names do not tell FER2013's halves apart")
    note = (f"asked for {prefix.rstrip('_')}, but no file in {ds.split}/ is named {prefix}* ({why}): "
            f"the whole split was scored ({len(ds):,} faces before the audit's drops)")
    return ds, {"subset": subset, "scored": "all", "faces": len(ds), "note": note, "selected_on_these": bool(public.any())}


# ---- stage: the clean evaluation set of a run -------------------------------------------------


#: Below this many scored faces a run is a demonstration: the paired tests can find only very large effects.
DEMONSTRATION_FACES = 300


def fer2013_train_val(root: str | Path) -> tuple[Dataset, Dataset, int]:
    """What every training command uses: the Training split, and PublicTest for selection with Training
    duplicates and blank faces removed. Files named PrivateTest_* (the usual Kaggle test/ folder mixes them
    in) are never read. ``root``: the Kaggle folder, or a file written by :func:`pack_train_val` (one
    compressed array file to carry to a GPU machine). Returns (train, validation, faces dropped from
    PublicTest by the audit)."""
    root = Path(root)
    if root.suffix == ".npz":
        return _unpack_train_val(root)
    train, public = load_folder(root, "train"), load_folder(root, "test", name_prefix="PublicTest_")
    val, dropped = drop_flagged(public, audit(public, train, 1.0), True, True)
    return train, val, len(dropped)


def pack_train_val(root: str | Path, out: str | Path) -> Path:
    """:func:`fer2013_train_val`'s result as one compressed ``.npz`` (uint8 faces, labels, ids), written atomically."""
    from .io import atomic_path

    train, val, dropped = fer2013_train_val(root)
    out = Path(out)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, train_images=train.images, train_labels=train.labels, train_ids=train.ids.astype(str),
                            val_images=val.images, val_labels=val.labels, val_ids=val.ids.astype(str),
                            dropped=np.array(dropped), classes=np.array(CLASSES))
    return out


def _unpack_train_val(path: Path) -> tuple[Dataset, Dataset, int]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if tuple(z["classes"].tolist()) != tuple(CLASSES):
                raise DataError(f"{path}: its classes {z['classes'].tolist()} are not {list(CLASSES)}")
            train = Dataset(z["train_ids"], z["train_images"], z["train_labels"].astype(np.int64), "train")
            val = Dataset(z["val_ids"], z["val_images"], z["val_labels"].astype(np.int64), "test")
            return train, val, int(z["dropped"])
    except (OSError, KeyError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path} is not a file written by `python -m fer_helpers.data pack` ({type(e).__name__}: {e}); "
                        "pack it again from the FER2013 folder") from None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fer_helpers.data pack --fer2013 DIR --out fer2013_train_val.npz``: the training commands'
    data (Training, audited PublicTest; never PrivateTest) as one file, e.g. to carry to a GPU machine;
    every training command's ``--fer2013`` accepts it."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m fer_helpers.data")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="write Training + audited PublicTest as one compressed .npz")
    p.add_argument("--fer2013", required=True)
    p.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    out = pack_train_val(a.fer2013, a.out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
