"""The runner end to end on the bundled sample: report, offline plotly, resume, --force, failure handling."""

import json
import re
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from fer_helpers import runner
from fer_helpers.io import RunDir, load_images
from fer_helpers.paths import NOTEBOOKS_DIR, PARAMS_DIR

pytestmark = pytest.mark.notebook


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("default_run")
    res = runner.run_study(PARAMS_DIR / "default.yaml", run_dir=run_dir, progress=False)
    return res


def test_default_run_writes_report_params_and_versions(default_run):
    assert default_run.statuses == {nb: "done" for nb in ("01_degradation", "02_quality_check", "03_restoration", "04_vit", "05_baselines", "06_visualization")}
    run = RunDir(default_run.run_dir)
    for f in ("index.html", "01_degradation.html", "02_quality_check.html", "params.resolved.yaml", "versions.json"):
        assert run.path(f).is_file(), f
    versions = json.loads(run.versions_file.read_text())
    assert versions["packages"]["numpy"] == np.__version__ and versions["python"]


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="peak memory is read from Linux's /proc")
def test_each_notebook_records_its_kernels_peak_memory(default_run):
    """A kernel that imports numpy, pandas and torch holds well over 100 MiB; a parent's or a stale figure would
    be the same for every notebook, and the sample's restoration and classification kernels load models."""
    state = json.loads((default_run.run_dir / runner.STATE_FILE).read_text())
    peaks = {nb: s["peak_rss_mib"] for nb, s in state.items()}
    assert all(isinstance(p, float) and 100 < p < 16_000 for p in peaks.values()), peaks
    assert len(set(peaks.values())) > 1, peaks


def test_report_pages_share_one_offline_plotly_js_and_hide_code(default_run):
    html = (default_run.run_dir / "01_degradation.html").read_text()
    assert '<script src="plotly.min.js"></script>' in html and not re.search(r"plotly\.js v\d", html)
    assert re.search(r"plotly\.js v\d", (default_run.run_dir / "plotly.min.js").read_text()[:2000])
    assert len(html) < 1_000_000, "a page holds its figures, not a copy of plotly.js"
    assert html.count("Plotly.newPlot") >= 4
    assert not re.search(r"<script[^>]+src=[\"']https?://[^\"']*plotly", html), "no plotly from a CDN"
    assert "report.start(PARAMS_FILE" not in html, "code cells must be hidden"


def test_index_shows_headline_numbers_from_the_run_files(default_run):
    run = RunDir(default_run.run_dir)
    index = run.path("index.html").read_text()
    summary = json.loads(run.path("data", "summary.json").read_text())
    assert "Data audit" in index and f"<td>{summary['eval images in the study']}</td>" in index
    # the bundled sample holds 14 test faces that also occur in train, and one blank face: the run drops them
    assert summary["eval images also in train"] == 14 and summary["blank eval images"] == 1
    assert summary["eval images in the study"] == 56 - 15
    det = pd.read_csv(run.path("quality", "detector.csv"))
    for auc in det["auc_verdict"].round(4).head(3):
        assert f"{auc:.4g}" in index


def test_written_metrics_match_recomputation_and_pairs(default_run):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    run = RunDir(default_run.run_dir)
    clean = load_images(run.clean_file)
    metrics = pd.read_csv(run.path("degradation", "metrics.csv"))
    deg = load_images(run.degraded_file("seed000_chain"))
    assert deg["ids"].tolist() == clean["ids"].tolist()
    m = metrics[metrics.preset == "seed000_chain"].set_index("id").loc[clean["ids"]]
    for k in (0, 7, 20):
        a, b = clean["images"][k], deg["images"][k]
        assert m["psnr"].iloc[k] == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255))
        assert m["ssim"].iloc[k] == pytest.approx(structural_similarity(a, b, data_range=255))


def test_rerun_skips_unchanged_and_force_reruns(default_run):
    before = (default_run.run_dir / "02_quality_check.html").stat().st_mtime_ns
    res = runner.run_study(PARAMS_DIR / "default.yaml", run_dir=default_run.run_dir, progress=False)
    assert set(res.statuses.values()) == {"skipped (unchanged)"}
    assert (default_run.run_dir / "02_quality_check.html").stat().st_mtime_ns == before
    res = runner.run_study(PARAMS_DIR / "default.yaml", run_dir=default_run.run_dir, progress=False, only=["02_quality_check"], force=True)
    assert res.statuses["01_degradation"] == "skipped (unchanged)" and res.statuses["02_quality_check"] == "done"
    assert all(res.statuses[nb].startswith("stale") for nb in ("03_restoration", "04_vit", "05_baselines", "06_visualization"))
    res = runner.run_study(PARAMS_DIR / "default.yaml", run_dir=default_run.run_dir, progress=False)
    assert res.statuses["02_quality_check"] == "skipped (unchanged)" and res.statuses["06_visualization"] == "done"


def test_failing_notebook_names_cell_and_partial_output_and_keeps_earlier_outputs(tmp_path, monkeypatch):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    shutil.copy(NOTEBOOKS_DIR / "01_degradation.ipynb", nbdir)
    for later in ("03_restoration", "04_vit", "05_baselines", "06_visualization"):
        shutil.copy(NOTEBOOKS_DIR / f"{later}.ipynb", nbdir)
    broken = nbformat.read(NOTEBOOKS_DIR / "02_quality_check.ipynb", as_version=4)
    broken.cells.insert(4, nbformat.v4.new_code_cell("raise RuntimeError('deliberate failure for the test')"))
    nbformat.write(broken, nbdir / "02_quality_check.ipynb")
    monkeypatch.setattr(runner, "NOTEBOOKS_DIR", nbdir)
    monkeypatch.setattr("fer_helpers.config.NOTEBOOKS_DIR", nbdir)
    run_dir = tmp_path / "run"
    with pytest.raises(runner.NotebookFailed) as e:
        runner.run_study(PARAMS_DIR / "default.yaml", run_dir=run_dir, progress=False)
    msg = str(e.value)
    assert "02_quality_check" in msg and "RuntimeError: deliberate failure" in msg and "cell" in msg
    assert str(run_dir / "notebooks" / "02_quality_check.ipynb") in msg and e.value.partial.is_file()
    assert (run_dir / "01_degradation.html").is_file() and (run_dir / "degraded" / "seed000_chain.npz").is_file()
    state = json.loads((run_dir / runner.STATE_FILE).read_text())
    assert state["01_degradation"]["status"] == "done" and state["02_quality_check"]["status"] == "failed"
    assert state["02_quality_check"]["peak_rss_mib"] or not Path("/proc/self/status").is_file()
    assert "failed" in (run_dir / "index.html").read_text()
    assert "03_restoration" not in state and not (run_dir / "03_restoration.html").exists()


def test_report_pages_draw_every_figure_without_javascript_errors_in_chromium(default_run):
    """The report opens offline in a real browser: every plotly figure draws and nothing throws."""
    import shutil

    from fer_helpers.report import browser_check

    if shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); .ci/run installs it")
    pages = ["index.html"] + [f"{nb}.html" for nb in default_run.statuses]
    for page in pages:
        r = browser_check(default_run.run_dir / page)
        assert r["dom_bytes"] > 1000, page
        assert r["errors"] == [], (page, r["errors"][:3])
        assert r["drawn"] == r["figures"], (page, r)
        if page != "index.html":
            assert r["figures"] >= 1, page


def test_index_links_and_shows_only_what_this_run_produced(tmp_path):
    """A notebook that did not run this time is listed as such: no link to an older page, no older tables."""
    from fer_helpers import report, runner
    from fer_helpers.config import load_params
    from fer_helpers.io import RunDir

    run, params = RunDir(tmp_path), load_params(None)
    for nb in ("01_degradation", "02_quality_check", "03_restoration"):
        run.path(f"{nb}.html").write_text("<html></html>")
    report.write_paragraph(run, "00_verdict", "The answer", "Restoration helped nobody.", order=-1)
    report.write_headline(run, "10_old", "Old degradation table", pd.DataFrame({"x": [1]}), order=10)
    report.write_headline(run, "20_new", "Fresh quality table", pd.DataFrame({"x": [2]}), order=20)
    state = {"01_degradation": {"headlines": ["10_old"]}, "02_quality_check": {"headlines": ["20_new"]},
             "06_visualization": {"headlines": ["00_verdict"]}}
    statuses = {"01_degradation": "stale (an earlier notebook reran; run without --only)", "02_quality_check": "done",
                "03_restoration": "not run (--only)", "06_visualization": "skipped (unchanged)"}
    page = report.build_index(run, params, statuses, runner._hidden_headlines(state, statuses)).read_text()
    assert "href='02_quality_check.html'" in page
    assert "href='01_degradation.html'" not in page and "href='03_restoration.html'" not in page
    assert "Fresh quality table" in page and "Old degradation table" not in page
    assert page.index("Restoration helped nobody.") < page.index("<h2>Notebooks</h2>")


def test_readme_findings_block_is_regenerated_from_the_run(default_run, tmp_path):
    import importlib.util

    from fer_helpers import scoring
    from fer_helpers.stages import classification
    from fer_helpers.stages import data as data_stage
    from fer_helpers.paths import PROJECT_ROOT

    spec = importlib.util.spec_from_file_location("readme_findings", PROJECT_ROOT / "scripts" / "readme_findings.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{script.START}\nold text\n{script.END}\n\nrest\n")
    assert script.main([str(default_run.run_dir), "--readme", str(readme)]) == 0
    text = readme.read_text()
    run = RunDir(default_run.run_dir)
    verdict = json.loads(run.path("statistics", "findings.json").read_text())["verdict"]
    assert "old text" not in text and text.endswith("\n\nrest\n") and verdict in text
    head = scoring.headline(classification.read_metrics(run), data_stage.load_clean(run).labels).set_index("classifier")
    assert f"| cnn | {head.loc['cnn', 'clean accuracy']:.1%} |" in text
    assert script.main([str(tmp_path / "nowhere"), "--readme", str(readme)]) == 2


def test_headline_tables_are_also_written_as_csv_and_latex(tmp_path):
    from fer_helpers import report
    from fer_helpers.io import RunDir

    run = RunDir(tmp_path)
    table = pd.DataFrame({"classifier": ["cnn_robust"], "accuracy": [0.68431], "best": ["unet (p < 0.001)"]})
    report.write_headline(run, "01_headline", "Headline: 95% intervals", table)
    pd.testing.assert_frame_equal(pd.read_csv(run.path("tables", "01_headline.csv")), table)
    tex = run.path("tables", "01_headline.tex").read_text()
    assert r"\caption{Headline: 95\% intervals}" in tex and r"cnn\_robust & 0.684 & unet (p $<$ 0.001) \\" in tex
    assert r"\toprule" in tex and r"\bottomrule" in tex


def test_every_figure_is_kept_for_papers(default_run):
    """figures/ holds each notebook's plotly figures as specs plotly redraws; PNG/SVG where kaleido can render."""
    import plotly.io as pio

    run = RunDir(default_run.run_dir)
    specs = sorted(run.path("figures").glob("01_degradation_*.json"))
    html = run.path("01_degradation.html").read_text()
    assert len(specs) == html.count("Plotly.newPlot") and len(specs) >= 4
    fig = pio.read_json(specs[0])
    assert fig.data and specs[0].stem.startswith("01_degradation_01")
    assert "For papers:" in run.path("index.html").read_text()
    pngs = list(run.path("figures").glob("*.png"))
    try:
        import kaleido  # noqa: F401
    except ImportError:
        assert not pngs  # and the index says why
        assert "they need <code>pip install kaleido</code>" in run.path("index.html").read_text()


def test_figures_become_png_and_svg_where_kaleido_and_a_browser_are_installed(tmp_path):
    import shutil

    import nbformat
    import plotly.graph_objects as go

    from fer_helpers import report

    pytest.importorskip("kaleido", reason="kaleido is optional (pip install kaleido); without it figures stay JSON specs")
    if not (shutil.which("chromium") or shutil.which("google-chrome")):
        pytest.skip("kaleido needs a Chrome or Chromium")
    fig = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]), layout={"title": {"text": "Accuracy <b>per</b> class"}})
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("fig", outputs=[nbformat.v4.new_output(
        "display_data", data={report.PLOTLY_MIME: fig.to_plotly_json()})])])
    nbformat.write(nb, tmp_path / "nb.ipynb")
    got = report.export_figures(tmp_path / "nb.ipynb", tmp_path / "figures", "06_visualization")
    assert got == {"figures": 1, "images": 2, "reason": ""}
    stem = tmp_path / "figures" / "06_visualization_01_accuracy-per-class"
    assert stem.with_suffix(".png").read_bytes()[:4] == b"\x89PNG" and b"<svg" in stem.with_suffix(".svg").read_bytes()[:400]


def test_a_replaced_weights_file_makes_the_notebooks_that_read_it_stale(tmp_path, monkeypatch):
    """The runner's skip looks at the files a notebook reads as well as at its source and parameters: a
    classifier's weights replaced under the same name rerun the classification notebook and leave the quality
    check skipped (the report once kept an old landmark model's numbers after its file was replaced)."""
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    names = ["02_quality_check", "05_baselines"]
    for name in names:  # notebooks that only take the runner's parameters: the test is about the runner's skip
        nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
        nb.cells = [nbformat.v4.new_code_cell("PARAMS_FILE = RUN_DIR = OVERRIDES = None", metadata={"tags": ["parameters"]}),
                    nbformat.v4.new_code_cell("assert PARAMS_FILE")]
        nbformat.write(nb, nbdir / f"{name}.ipynb")
    monkeypatch.setattr(runner, "NOTEBOOKS_DIR", nbdir)
    monkeypatch.setattr("fer_helpers.config.NOTEBOOKS_DIR", nbdir)
    weights = tmp_path / "mine.safetensors"
    weights.write_bytes(b"first weights")
    options = {"run_dir": tmp_path / "run", "progress": False,
               "overrides": {"notebooks": names, "classification.weights.cnn": str(weights)}}

    assert set(runner.run_study(PARAMS_DIR / "default.yaml", **options).statuses.values()) == {"done"}
    assert set(runner.run_study(PARAMS_DIR / "default.yaml", **options).statuses.values()) == {"skipped (unchanged)"}
    weights.write_bytes(b"other weights, same name")
    assert runner.run_study(PARAMS_DIR / "default.yaml", **options).statuses == {
        "02_quality_check": "skipped (unchanged)", "05_baselines": "done"}
