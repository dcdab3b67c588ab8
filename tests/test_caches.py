"""Stage caches can never serve a result computed from other inputs."""

from fer_helpers import io
from fer_helpers.config import parse_params


def test_stage_key_changes_with_every_input(tmp_path, monkeypatch):
    params = parse_params({})
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"one")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "a.jpg").write_bytes(b"x")
    base = io.stage_key(params, "restoration", upstream=["up1"], inputs=[weights], data_inputs=[data_dir])
    assert base == io.stage_key(params, "restoration", upstream=["up1"], inputs=[weights], data_inputs=[data_dir])
    assert base != io.stage_key(params, "restoration", upstream=["up2"], inputs=[weights], data_inputs=[data_dir])
    weights.write_bytes(b"two")  # new weights shipped under the same name
    changed = io.stage_key(params, "restoration", upstream=["up1"], inputs=[weights], data_inputs=[data_dir])
    assert changed != base
    (data_dir / "b.jpg").write_bytes(b"y")  # a face added to the data set
    assert io.stage_key(params, "restoration", upstream=["up1"], inputs=[weights], data_inputs=[data_dir]) != changed
    other = parse_params({"restoration": {"options": {"codeformer": {"w": 0.5}}}})
    assert io.stage_key(other, "restoration") != io.stage_key(params, "restoration")
    assert io.stage_key(other, "quality") == io.stage_key(params, "quality")  # a later section leaves earlier stages alone


def test_stage_key_covers_the_packages_code(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "degrade.py").write_text("x = 1\n")
    monkeypatch.setattr(io, "PACKAGE_DIR", pkg)
    params = parse_params({})
    before = io.stage_key(params, "classification")
    (pkg / "degrade.py").write_text("x = 2\n")  # an upstream module changed
    assert io.stage_key(params, "classification") != before


def test_force_recomputes_each_stage_once_per_run(tmp_path, monkeypatch):
    run = io.RunDir(tmp_path)
    monkeypatch.delenv(io.FORCE_ENV, raising=False)
    run.mark_stage("quality", "k1")
    assert run.stage_done("quality", "k1") and not run.stage_done("quality", "k2")
    monkeypatch.setenv(io.FORCE_ENV, "run-a")
    assert not run.stage_done("quality", "k1")  # cached before this forced run: recompute
    run.mark_stage("quality", "k1")
    assert run.stage_done("quality", "k1")  # computed in this run: later notebooks reuse it
    monkeypatch.setenv(io.FORCE_ENV, "run-b")
    assert not run.stage_done("quality", "k1")
    run.stage_file("quality").write_text("{torn")
    monkeypatch.delenv(io.FORCE_ENV)
    assert not run.stage_done("quality", "k1") and run.stage_digest("quality") == ""


def test_replacing_outputs_of_other_inputs_says_why(tmp_path, monkeypatch, capsys):
    run = io.RunDir(tmp_path)
    monkeypatch.delenv(io.FORCE_ENV, raising=False)
    assert run.cached("quality", "k1", lambda: "x") is None  # never computed: nothing to say
    assert capsys.readouterr().out == ""
    run.mark_stage("quality", "k1")
    assert run.cached("quality", "k1", lambda: "x") == "x" and capsys.readouterr().out == ""
    assert run.cached("quality", "k2", lambda: "x") is None
    assert "[quality] computed before for other inputs (its parameters, model files or an upstream stage changed)" in capsys.readouterr().out
    monkeypatch.setattr(io, "code_digest", lambda: "edited")
    assert run.cached("quality", "k2", lambda: "x") is None
    assert "(the package's code changed): recomputing it" in capsys.readouterr().out


def test_run_study_sets_the_force_token_only_for_its_own_duration(monkeypatch):
    import os

    from fer_helpers import runner

    seen = []
    monkeypatch.delenv(io.FORCE_ENV, raising=False)
    monkeypatch.setattr(runner, "_run_study", lambda *a, **k: seen.append(os.environ.get(io.FORCE_ENV)))
    runner.run_study("p.yaml", force=True)
    runner.run_study("p.yaml", force=True)
    runner.run_study("p.yaml")
    assert seen[0] and seen[1] and seen[0] != seen[1] and seen[2] is None
    assert io.FORCE_ENV not in os.environ


def test_index_states_the_scored_faces_and_labels_small_runs_a_demonstration(tmp_path):
    from fer_helpers import report

    params = parse_params({})
    run = io.RunDir(tmp_path)
    io.write_json(run.path("data", "evaluation.json"), {"subset": "privatetest", "scored": "all", "faces": 56,
                  "note": "asked for PrivateTest, but no file in test/ is named PrivateTest_* (it holds only the other half): the whole split was scored (56 faces before the audit's drops)",
                  "selected_on_these": True, "faces_after_audit_and_subsetting": 41})
    html = report.build_index(run, params, {"01_degradation": "done"}).read_text()
    assert "A demonstration, not a result" in html and "41 faces" in html
    assert "no file in test/ is named PrivateTest_*" in html and "Models selected on them:</b> yes" in html
    io.write_json(run.path("data", "evaluation.json"), {"subset": "privatetest", "scored": "privatetest", "faces": 3589,
                  "note": "PrivateTest only", "selected_on_these": False, "faces_after_audit_and_subsetting": 3400})
    html = report.build_index(run, params, {"01_degradation": "done"}).read_text()
    assert "demonstration" not in html and "Models selected on them:</b> no" in html


def test_a_damaged_cache_file_is_recomputed_with_a_note_not_a_crash(tmp_path, capsys):
    import numpy as np
    import pandas as pd

    from fer_helpers import degrade
    from fer_helpers.stages import degradation
    from fer_helpers.config import load_params

    params = load_params(None, {"degradation.presets": ["noise_25", "jpeg_10"]})
    run = io.RunDir(tmp_path)
    first = degradation.build(params, run, progress=False)
    damaged = run.degraded_file("jpeg_10")
    damaged.write_bytes(damaged.read_bytes()[:-200])  # a run killed while copying, a disk that filled up
    again = degradation.build(params, run, progress=False)
    assert "[degradation] a cached output could not be read" in capsys.readouterr().out
    pd.testing.assert_frame_equal(first, again)
    clean = io.load_images(run.clean_file)
    np.testing.assert_array_equal(degradation.load_degraded(run, "jpeg_10"),
                                  degrade.apply_preset(clean["images"], clean["ids"], degrade.PRESETS["jpeg_10"], params.seed))
    run.path("degradation", "metrics.csv").write_text("")  # an emptied table
    pd.testing.assert_frame_equal(degradation.build(params, run, progress=False), first)
    assert "could not be read (EmptyDataError" in capsys.readouterr().out


def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        io.atomic_write_text(tmp_path / "index.html", "<html></html>")
    finally:
        os.umask(old)
    assert (tmp_path / "index.html").stat().st_mode & 0o777 == 0o644


def test_a_notebooks_last_run_is_stale_after_an_edit_anywhere_in_the_package(tmp_path, monkeypatch):
    """The runner skips a notebook whose source and library are unchanged; a module of ``stages/`` is library
    too (it once was not: an edited stage left the report of the old code in place)."""
    from fer_helpers import runner

    pkg = tmp_path / "pkg"
    (pkg / "stages").mkdir(parents=True)
    (pkg / "io.py").write_text("x = 1\n")
    (pkg / "stages" / "findings.py").write_text("y = 1\n")
    nb = tmp_path / "06.ipynb"
    nb.write_text("{}")
    monkeypatch.setattr(io, "PACKAGE_DIR", pkg)
    before = runner._source_digest(nb)
    assert runner._source_digest(nb) == before
    (pkg / "stages" / "findings.py").write_text("y = 2\n")
    after = runner._source_digest(nb)
    assert after != before
    nb.write_text('{"cells": []}')
    assert runner._source_digest(nb) != after
