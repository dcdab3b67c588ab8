"""Notebook set-up, HTML export (code hidden, plotly offline) and the run's index page, which renders the
headlines the notebooks recorded (:mod:`fer_helpers.headlines`, re-exported here for the notebooks)."""

from __future__ import annotations

import html
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from . import compute
from .config import StudyParams, load_params
from .data import DEMONSTRATION_FACES
from .headlines import latex_table, read_headlines, write_headline, write_paragraph  # noqa: F401  (report.write_headline in notebooks)
from .io import RunDir, atomic_write_text, read_json
from .stages import data as data_stage

#: plotly renderer for notebooks: the mimetype for JupyterLab, plus HTML with plotly.js embedded
#: once per notebook, which nbconvert keeps, so figures draw offline in the exported HTML.
PLOTLY_RENDERER = "plotly_mimetype+notebook"


def setup_notebook() -> None:
    """Make plotly figures survive papermill and nbconvert, offline; tidy pandas output."""
    import plotly.io as pio

    pio.renderers.default = PLOTLY_RENDERER
    pd.set_option("display.max_columns", 40)
    pd.set_option("display.width", 200)
    pd.set_option("display.precision", 3)


def start(params_file: str | os.PathLike | None = None, run_dir: str | os.PathLike | None = None,
          overrides: Mapping[str, Any] | None = None) -> tuple[StudyParams, RunDir]:
    """First call of every notebook: validate parameters, find the run folder, record provenance."""
    setup_notebook()
    params = load_params(params_file, dict(overrides or {}))
    compute.configure(params)
    run = RunDir.for_params(params, run_dir)
    run.write_provenance(params)
    print(f"run: {params.name}  ->  {run.root}\nparameters digest: {params.digest()}")
    return params, run


# ---- HTML export --------------------------------------------------------------------------------


def export_html(notebook: str | os.PathLike, out_html: str | os.PathLike) -> Path:
    """Executed notebook -> HTML with code, prompts and stderr (progress bars) hidden; plotly kept."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import Preprocessor

    class DropStderr(Preprocessor):
        def preprocess_cell(self, cell, resources, index):  # noqa: D401 - nbconvert API
            if cell.get("cell_type") == "code":
                cell.outputs = [o for o in cell.get("outputs", []) if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
            return cell, resources

    nb = nbformat.read(str(notebook), as_version=4)
    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    exporter.register_preprocessor(DropStderr(), enabled=True)
    body, _ = exporter.from_notebook_node(nb)
    atomic_write_text(out_html, share_plotlyjs(body, Path(out_html).parent))
    return Path(out_html)


PLOTLY_MIME = "application/vnd.plotly.v1+json"
IMAGE_FORMATS = ("png", "svg")


def export_figures(notebook: str | os.PathLike, folder: Path, prefix: str) -> dict[str, Any]:
    """Every plotly figure an executed notebook drew, for papers: ``<prefix>_<k>_<title>.json`` (the figure spec;
    ``plotly.io.read_json`` redraws it anywhere) and, where kaleido and a Chrome/Chromium are installed, ``.png``
    (2x) and ``.svg``. Returns how many figures and images, and why there are no images when there are none."""
    import json
    import re

    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    specs = [o["data"][PLOTLY_MIME] for c in nb.cells if c.get("cell_type") == "code"
             for o in c.get("outputs", []) if PLOTLY_MIME in o.get("data", {})]
    names = []
    for k, spec in enumerate(specs, 1):
        title = (spec.get("layout") or {}).get("title") or ""
        title = title.get("text", "") if isinstance(title, dict) else str(title)
        slug = re.sub(r"[^a-z0-9]+", "-", re.sub(r"<[^>]+>", " ", title).lower()).strip("-")[:60]
        names.append(f"{prefix}_{k:02d}" + (f"_{slug}" if slug else ""))
        atomic_write_text(folder / f"{names[-1]}.json", json.dumps(spec))
    images, reason = 0, ""
    if not specs:
        return {"figures": 0, "images": 0, "reason": ""}
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return {"figures": len(specs), "images": 0,
                "reason": "PNG/SVG not written: kaleido is not installed (pip install kaleido; it also needs a Chrome or Chromium)"}
    import plotly.io as pio

    figs = [pio.from_json(json.dumps(spec)) for spec in specs]
    try:  # one browser for all of a notebook's figures (about 0.5 s a figure on 2 cores), not one each
        for fmt in IMAGE_FORMATS:
            pio.write_images(figs, [folder / f"{name}.{fmt}" for name in names], format=fmt, scale=2 if fmt == "png" else 1)
            images += len(figs)
    except Exception as e:  # the browser kaleido drives is missing or failed: say so, keep the JSON specs
        reason = (f"PNG/SVG not written ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}); "
                  "kaleido needs a Chrome or Chromium (apt-get install chromium, or kaleido.get_chrome_sync())")
    return {"figures": len(specs), "images": images, "reason": reason}


PLOTLY_JS = "plotly.min.js"


def share_plotlyjs(page: str, folder: Path) -> str:
    """Replace the copy of plotly.js that the notebook renderer embeds (3.5 MB per page) by a reference to one
    ``plotly.min.js`` beside the pages, written once per run folder: the report stays offline and a few MB."""
    from plotly.offline import get_plotlyjs


    js = get_plotlyjs()
    embedded = f"<script>{js}</script>"
    if embedded not in page:
        return page
    target = folder / PLOTLY_JS
    if not target.is_file() or target.stat().st_size != len(js.encode()):
        atomic_write_text(target, js)
    return page.replace(embedded, f'<script src="{PLOTLY_JS}"></script>')


_INDEX_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} .meta{color:#666;font-size:.9em} table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right} th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
.ok{color:#1a7f37}.failed{color:#cf222e}.skipped{color:#9a6700} .note{color:#555;font-size:.9em;margin-top:-1em}
ul.nb li{margin:.2em 0} .demo{background:#fff8c5;border:1px solid #d4a72c;padding:.5em .8em}
.verdict{font-size:1.05em;line-height:1.5;background:#f6f8fa;border-left:4px solid #0969da;padding:.6em 1em}
"""


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return html.escape(str(v))


def _headline_html(h: dict[str, Any]) -> str:
    if "text" in h:
        return f"<h2>{html.escape(h['title'])}</h2><p class='verdict'>{html.escape(h['text'])}</p>"
    rows = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in h["rows"])
    note = f"<p class='note'>{html.escape(h['note'])}</p>" if h.get("note") else ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in h["columns"])
    return f"<h2>{html.escape(h['title'])}</h2><table><tr>{head}</tr>{rows}</table>{note}"


#: notebook statuses whose pages and headline tables belong to this run (a failed notebook's partial page does too)
SHOWN_STATUSES = ("done", "skipped (unchanged)")


def build_index(run: RunDir, params: StudyParams, statuses: Mapping[str, str], hidden: Iterable[str] = ()) -> Path:
    """Write ``index.html``: the verdict, links to the pages this run's notebooks produced, then the headline
    tables the notebooks recorded, except ``hidden`` ones (those of notebooks that did not run this time)."""

    versions = read_json(run.versions_file) if run.versions_file.exists() else {}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>FER restoration study: {html.escape(params.name)}</title><style>{_INDEX_CSS}</style></head><body>",
        f"<h1>Does face restoration rescue emotion recognition? Run <code>{html.escape(params.name)}</code></h1>",
        "<p class='meta'>"
        f"built {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} &middot; data <code>{html.escape(params.data.path)}</code> "
        f"({html.escape(params.data.eval_split)}) &middot; seed {params.seed} &middot; parameters digest <code>{params.digest()}</code>"
        f" &middot; git <code>{html.escape(str(versions.get('git_commit')))}</code> &middot; "
        "<a href='params.resolved.yaml'>parameters</a> &middot; <a href='versions.json'>versions</a></p>",
    ]
    heads = [h for h in read_headlines(run) if h["key"] not in set(hidden)]
    first = [h for h in heads if "text" in h and (h.get("order") or 0) < 0]  # the verdict opens the page
    parts[3:3] = [_headline_html(h) for h in first]
    evaluation = data_stage.read_evaluation(run)
    faces = evaluation.get("faces_after_audit_and_subsetting", evaluation.get("faces", 0)) if evaluation else 0
    if evaluation and faces < DEMONSTRATION_FACES:
        parts.append(f"<p class='demo'><b>A demonstration, not a result:</b> {faces:,} faces are too few for the tests "
                     "to find anything but very large effects. The study itself: <code>FER2013_DIR=/path/to/fer2013 "
                     "fer-study run params/fer2013.yaml</code>.</p>")
    if evaluation:
        selected = ("yes: they include PublicTest, where the shipped models were selected and the settings tuned, so "
                    "accuracies are optimistic" if evaluation.get("selected_on_these") else "no")
        parts.append(f"<p class='meta'><b>Scored faces:</b> {html.escape(evaluation['note'])}; after the audit and "
                     f"subsetting {evaluation.get('faces_after_audit_and_subsetting', evaluation['faces']):,} faces. "
                     f"<b>Models selected on them:</b> {html.escape(selected)}.</p>")
    lead = [h for h in heads if h not in first and (h.get("order") if h.get("order") is not None else 1_000) < 10]
    parts += [_headline_html(h) for h in lead]
    parts.append("<h2>Notebooks</h2><ul class='nb'>")
    for nb, status in statuses.items():
        cls = "ok" if status in SHOWN_STATUSES else "failed" if status.startswith("failed") else "skipped"
        produced = cls != "skipped" and run.path(f"{nb}.html").exists()  # an older page is not this run's
        link = f"<a href='{nb}.html'>{nb}</a>" if produced else nb
        parts.append(f"<li>{link} <span class='{cls}'>{html.escape(status)}</span></li>")
    parts.append("</ul>")
    figures, tables = run.path("figures"), run.path("tables")
    if figures.is_dir() or tables.is_dir():
        n_json, n_png = len(list(figures.glob("*.json"))), len(list(figures.glob("*.png")))
        images = f"PNG and SVG of {n_png}" if n_png else "no PNG/SVG: they need <code>pip install kaleido</code> and a Chrome or Chromium"
        parts.append(f"<p class='meta'><b>For papers:</b> <a href='figures/'>figures/</a> ({n_json} plotly figure specs; {images}) "
                     f"&middot; <a href='tables/'>tables/</a> (every table above as CSV and LaTeX)</p>")
    parts += [_headline_html(h) for h in heads if h not in lead and h not in first]
    parts.append("</body></html>")
    out = run.path("index.html")
    atomic_write_text(out, "\n".join(parts))
    return out


def browser_check(html_file: str | os.PathLike, chromium: str = "chromium", budget_ms: int = 20000) -> dict[str, Any]:
    """Open a report page in headless Chromium (offline) and report what a reader would see.

    Returns the number of plotly figures on the page, how many plotly actually drew (it marks each drawn
    figure ``js-plotly-plot``), and any console errors (uncaught exceptions, ``console.error``).
    """
    import re
    import shutil
    import subprocess
    import tempfile

    exe = shutil.which(chromium)
    if exe is None:
        raise FileNotFoundError(f"{chromium} not found (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        r = subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
             "--enable-logging=stderr", "--v=0", f"--virtual-time-budget={budget_ms}", "--dump-dom",
             Path(html_file).resolve().as_uri()],
            capture_output=True, text=True, timeout=180,
        )
    dom = r.stdout
    console = [l for l in r.stderr.splitlines() if ":CONSOLE" in l]
    return {
        "figures": len(re.findall(r'class="plotly-graph-div', dom)),
        "drawn": len(re.findall(r'class="plotly-graph-div[^"]*js-plotly-plot', dom)),
        "errors": [l for l in console if re.search(r"Uncaught|Error|error", l)],
        "dom_bytes": len(dom),
    }
