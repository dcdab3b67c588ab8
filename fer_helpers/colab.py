"""Colab support: badges and the Colab-only install cell, built from the one repository URL setting
(``[project.urls] Repository`` in ``pyproject.toml``)."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

from .paths import NOTEBOOKS_DIR, PROJECT_ROOT

BADGE_RE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
REPO_LINE_RE = re.compile(r'^(\s*REPO_URL\s*=\s*)"[^"]*"', re.M)


def repo_url() -> str:
    meta = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    return meta["project"]["urls"]["Repository"].rstrip("/")


def badge(notebook: str, url: str | None = None, branch: str = "main") -> str:
    url = url or repo_url()
    gh = url.replace("https://github.com/", "")
    return (
        "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"(https://colab.research.google.com/github/{gh}/blob/{branch}/notebooks/{notebook}.ipynb)"
    )


def sync_badges(notebooks_dir: Path = NOTEBOOKS_DIR, check: bool = False) -> list[str]:
    """Rewrite (or, with ``check``, only list) notebooks whose badge or Colab cell disagree with the setting."""
    import nbformat

    url = repo_url()
    stale = []
    for path in sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        changed = False
        for cell in nb.cells:
            new = cell.source
            if cell.cell_type == "markdown":
                new = BADGE_RE.sub(badge(path.stem, url), new)
            elif "google.colab" in new:
                new = REPO_LINE_RE.sub(rf'\g<1>"{url}"', new)
            if new != cell.source:
                cell.source, changed = new, True
        if changed:
            stale.append(path.name)
            if not check:
                nbformat.write(nb, path)
    return stale
