"""``fer-study predict``: emotions of the faces in one's own photos, optionally restored first.

For every image file (folders are searched recursively): find the faces (:mod:`fer_helpers.faces`), crop
each to the 48x48 grey face, run each asked-for restorer on it, and score every restored version with
each asked-for classifier. Writes ``predictions.csv`` (one row per file x face x restorer x classifier:
box, detection confidence, the seven class probabilities, the predicted class) and one contact sheet PNG
per image (``sheets/``): each face as detected and as each restorer returned it, with every classifier's
answer underneath. Files that cannot be read, and images without a face, are listed in ``skipped.csv``
with the reason; nothing else is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .data import CLASSES, IMAGE_SUFFIXES

CELL = 144  # pixels per face in a contact sheet (48 x 3)


@dataclass
class Prediction:
    rows: pd.DataFrame
    skipped: pd.DataFrame
    sheets: list[Path] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)


def image_files(paths: Sequence[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The image files named or found (recursively) under the given paths, and what was passed over and why."""
    files, skipped = [], []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))
            files += found
            if not found:
                skipped.append((str(p), f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder"))
        elif p.is_file():
            files.append(p)
        else:
            skipped.append((str(p), "no such file or folder"))
    return files, skipped


def run(paths: Sequence[str | Path], out: Path, restorers: Sequence[str] = ("none",), classifiers: Sequence[str] = ("cnn",),
        cropped: bool = False, device: str = "cpu", progress: bool = True, landmarker: str | None = None) -> Prediction:
    """Detect, crop, restore and classify; write ``predictions.csv``, ``skipped.csv`` and ``sheets/*.png`` under ``out``."""
    from PIL import UnidentifiedImageError
    from tqdm.auto import tqdm

    from . import classify, faces, restore
    from .io import write_csv

    restorers = ["none"] + [r for r in restorers if r != "none"]
    rctx, cctx = restore.RestoreContext(device=device), classify.ClassifyContext(device=device, tta="flip",
                                                                              weights={"landmarker": landmarker} if landmarker else None)
    built_r, built_c, unavailable = {}, {}, []
    for name in restorers[1:]:  # "none" is the detected face itself
        try:
            built_r[name] = restore.create(name, rctx)
        except restore.RestorerUnavailable as e:
            unavailable.append(f"restorer {e}")
    for name in classifiers:
        try:
            built_c[name] = classify.create(name, cctx)
        except classify.ClassifierUnavailable as e:
            unavailable.append(f"classifier {e}")
    files, skipped = image_files(paths)
    rows, sheets = [], []
    for f in tqdm(files, desc="images", unit="img", disable=not progress or len(files) < 2):
        try:
            photo = faces.open_photo(f)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            skipped.append((str(f), f"unreadable: {type(e).__name__}: {str(e)[:120]}"))
            continue
        found, crops = faces.faces_in(photo, device, cropped)
        if not found:
            skipped.append((str(f), "no face found"))
            continue
        versions = {"none": crops} | {r: restorer(crops) for r, restorer in built_r.items()}
        answers: dict[tuple[str, str], np.ndarray] = {}
        for r, faces_r in versions.items():
            for c, clf in built_c.items():
                answers[r, c] = clf.predict_proba(faces_r)
                for k, face in enumerate(found):
                    p = answers[r, c][k]
                    answered = not np.isnan(p).any()
                    rows.append({"file": str(f), "face": k, "x0": face.box[0], "y0": face.box[1], "x1": face.box[2],
                                 "y1": face.box[3], "confidence": face.confidence, "restorer": r, "classifier": c,
                                 **{f"p_{cls}": v for cls, v in zip(CLASSES, p)},
                                 "predicted": CLASSES[int(np.nanargmax(p))] if answered else "",
                                 "probability": float(np.nanmax(p)) if answered else np.nan})
        sheets.append(contact_sheet(versions, answers, f, out / "sheets"))
    table = pd.DataFrame(rows)
    skipped_table = pd.DataFrame(skipped, columns=["path", "reason"])
    write_csv(out / "predictions.csv", table)
    write_csv(out / "skipped.csv", skipped_table)
    return Prediction(table, skipped_table, sheets, unavailable)


def contact_sheet(versions: dict[str, np.ndarray], answers: dict[tuple[str, str], np.ndarray], source: Path, folder: Path) -> Path:
    """One PNG per image: a row per face, a column per restorer, each classifier's answer under each face."""
    from PIL import Image, ImageDraw

    from .io import atomic_path

    restorers = list(versions)
    classifiers = sorted({c for _, c in answers}, key=[c for _, c in answers].index)
    n_faces = len(next(iter(versions.values())))
    text_h = 14 * (len(classifiers) + 1)
    sheet = Image.new("RGB", (CELL * len(restorers), (CELL + text_h) * n_faces), "white")
    draw = ImageDraw.Draw(sheet)
    for j, r in enumerate(restorers):
        for k in range(n_faces):
            x, y = j * CELL, k * (CELL + text_h)
            sheet.paste(Image.fromarray(versions[r][k]).resize((CELL, CELL), Image.Resampling.NEAREST), (x, y))
            draw.text((x + 3, y + CELL + 1), f"face {k}: {r}", fill="black")
            for i, c in enumerate(classifiers):
                p = answers[r, c][k]
                label = f"{c}: no answer" if np.isnan(p).any() else f"{c}: {CLASSES[int(np.argmax(p))]} {np.max(p):.0%}"
                draw.text((x + 3, y + CELL + 1 + 14 * (i + 1)), label, fill="black")
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{source.stem}.png"
    k = 1
    while out.exists():  # two inputs with the same name in different folders
        out, k = folder / f"{source.stem}_{k}.png", k + 1
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return out
