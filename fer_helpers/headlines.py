"""The tables and paragraphs a notebook records for the run's index page (``headlines/<key>.json``), and the
same tables for papers (``tables/<key>.csv`` and ``.tex``). :mod:`fer_helpers.report` renders them."""

from __future__ import annotations

from typing import Any

import pandas as pd

from .io import RunDir, atomic_write_text, read_json, write_csv, write_json


def write_headline(run: RunDir, key: str, title: str, table: pd.DataFrame, note: str = "", order: int | None = None) -> None:
    """Record a table for the run's index page (``headlines/<key>.json``), computed by the caller's code, and
    the same table for papers: ``tables/<key>.csv`` and ``tables/<key>.tex`` (a booktabs LaTeX tabular)."""
    write_json(
        run.headlines_dir / f"{key}.json",
        {"title": title, "note": note, "order": order, "columns": list(map(str, table.columns)),
         "rows": table.astype(object).where(table.notna(), None).values.tolist()},
    )
    write_csv(run.path("tables", f"{key}.csv"), table)
    atomic_write_text(run.path("tables", f"{key}.tex"), latex_table(table, title))


def latex_table(table: pd.DataFrame, caption: str) -> str:
    """A booktabs LaTeX table (pandas Styler), text escaped, numbers to 3 significant digits."""
    styler = table.style.hide(axis="index").format(precision=3, escape="latex").format_index(escape="latex", axis=1)
    latex = styler.to_latex(hrules=True, caption=caption.replace("%", r"\%"), position="htbp")
    return latex.replace(" < ", " $<$ ").replace(" > ", " $>$ ")  # p < 0.001 in text mode would print inverted marks


def write_paragraph(run: RunDir, key: str, title: str, text: str, order: int | None = None) -> None:
    """Record a paragraph of generated text for the index (a negative ``order`` puts it first, under the title)."""
    write_json(run.headlines_dir / f"{key}.json", {"title": title, "text": text, "order": order})


def read_headlines(run: RunDir) -> list[dict[str, Any]]:
    files = sorted(run.headlines_dir.glob("*.json")) if run.headlines_dir.is_dir() else []
    heads = [read_json(f) | {"key": f.stem} for f in files]
    return sorted(heads, key=lambda h: (h.get("order") if h.get("order") is not None else 1_000, h["key"]))
