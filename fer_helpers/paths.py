"""Every path the project uses, in one place.

The project root is found from this file, so the package works from a clone (editable install),
from the notebooks folder, from papermill and from tests alike.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
PARAMS_DIR = PROJECT_ROOT / "params"
REPORTS_DIR = PROJECT_ROOT / "reports"
DATA_DIR = PROJECT_ROOT / "data"
MODELS_DIR = PROJECT_ROOT / "models"
#: FER2013 sample bundled with the project (Kaggle folder layout, a few images per class).
SAMPLE_FER2013_DIR = DATA_DIR / "sample" / "fer2013"
#: Development/CI resources that sit beside the checkout (not part of the project).
SHARED_DIR = PROJECT_ROOT.parent / "shared"
SHARED_FER2013_DIR = SHARED_DIR / "data" / "fer2013"

#: Environment variable that points at a Kaggle-style FER2013 folder (train/<class>, test/<class>).
FER2013_ENV = "FER2013_DIR"


def resolve_path(value: str | os.PathLike, base: Path | None = None) -> Path:
    """Expand ``~`` and ``$VARS``; make a relative path absolute against ``base`` (default: project root)."""
    p = Path(os.path.expandvars(os.path.expanduser(str(value))))
    if not p.is_absolute():
        p = (base or PROJECT_ROOT) / p
    return p
