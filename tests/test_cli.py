"""The command line: bad input ends in one line naming the thing and the fix, never a traceback."""

import pytest

from fer_helpers import cli
from fer_helpers.paths import PARAMS_DIR, SAMPLE_FER2013_DIR


def test_unknown_classifier_for_score_is_one_line_with_a_suggestion(capsys):
    assert cli.main(["score", "--data", str(SAMPLE_FER2013_DIR), "--classifier", "cnnn"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --classifier 'cnnn': unknown (did you mean 'cnn'?)") and "\n" not in err


def test_malformed_set_value_names_the_option_and_column():
    with pytest.raises(SystemExit, match=r"--set 'seed=\[1': the value is not valid YAML at column 3"):
        cli.main(["validate", str(PARAMS_DIR / "default.yaml"), "--set", "seed=[1"])


def test_classifiers_listing_shows_card_accuracy(capsys):
    assert cli.main(["classifiers"]) == 0
    out = capsys.readouterr().out
    assert "cnn " in out and "PublicTest" in out and "cnn_ensemble" in out


def test_ctrl_c_is_one_line_saying_a_rerun_resumes(monkeypatch, capsys):
    import fer_helpers.runner as runner

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_study", interrupted)
    assert cli.main(["run", str(PARAMS_DIR / "default.yaml")]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("interrupted: fer-study run stopped") and "resumes" in err and "\n" not in err


@pytest.mark.parametrize("err, expected", [
    (PermissionError(13, "Permission denied", "/srv/ro/run"), "/srv/ro/run: Permission denied; write elsewhere (--run-dir / --out)"),
    (FileExistsError(17, "File exists", "/tmp/afile"), "/tmp/afile: File exists (a file is where a folder should be"),
    (OSError(28, "No space left on device", "/tmp/out/x.npz"), "/tmp/out/x.npz: No space left on device while writing; free some space"),
])
def test_filesystem_faults_are_one_line_naming_the_path(err, expected, monkeypatch, capsys):
    import fer_helpers.runner as runner

    def fail(*a, **k):
        raise err

    monkeypatch.setattr(runner, "run_study", fail)
    assert cli.main(["run", str(PARAMS_DIR / "default.yaml")]) == 2
    out = capsys.readouterr().err.strip()
    assert out.startswith("error: " + expected) and "\n" not in out


def test_a_failed_write_names_the_file_it_was_writing(tmp_path):
    from fer_helpers import io

    with pytest.raises(OSError) as e:
        with io.atomic_path(tmp_path / "report.html"):
            raise OSError(28, "No space left on device")  # what write() raises on a full disk: no file name
    assert e.value.filename == str(tmp_path / "report.html") and e.value.errno == 28
    assert not list(tmp_path.iterdir())  # and nothing half-written is left


@pytest.mark.slow
def test_bad_inputs_corpus_runs_and_judges(capsys, monkeypatch):
    import sys

    """A few cases of scripts/bad_inputs.py end to end (the whole corpus takes minutes: run the script)."""
    import importlib.util

    from fer_helpers.paths import PROJECT_ROOT

    spec = importlib.util.spec_from_file_location("bad_inputs", PROJECT_ROOT / "scripts" / "bad_inputs.py")
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bad_inputs", script)  # its dataclasses look their module up there
    spec.loader.exec_module(script)
    assert len(script.corpus()) >= 40
    assert script.main(["-k", "params: empty", "params: duplicated", "--set: no", "fs: run folder is an existing file"]) == 0
    out = capsys.readouterr().out
    assert "clear: 5, correct: 0, skipped: 0, TRACEBACK: 0, SILENT: 0, VAGUE: 0, WRONG: 0 (5 cases)" in out
