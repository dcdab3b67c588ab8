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
