"""Plug in one's own restorer and classifier without editing fer_helpers: entry points or module:Class."""

import textwrap

import numpy as np
import pandas as pd
import papermill as pm
import pytest

from fer_helpers import classify, registry, restore
from fer_helpers.paths import NOTEBOOKS_DIR, PARAMS_DIR

PLUGIN = textwrap.dedent('''
    """A tiny plug-in package: the README's example, verbatim in spirit."""
    import numpy as np

    from fer_helpers.classify import Classifier
    from fer_helpers.restore import Restorer


    class Invert(Restorer):
        """Negative of the face (a restorer no one should use: its effect is easy to check)."""

        family = "example"

        def __init__(self, ctx):
            pass

        def restore(self, images):
            return 255 - images


    class AlwaysHappy(Classifier):
        """Answers "happy" for every face, in its own label order."""

        labels = ["happy", "sad", "angry", "disgust", "fear", "surprise", "neutral"]

        def __init__(self, ctx):
            pass

        def raw_probabilities(self, images):
            p = np.zeros((len(images), 7))
            p[:, 0] = 1.0
            return p


    class NotAModel:
        pass
''')


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """An installed plug-in distribution: a module and a dist-info folder declaring its entry points."""
    (tmp_path / "ferplug.py").write_text(PLUGIN)
    info = tmp_path / "ferplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ferplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[fer_study.restorers]\ninvert = ferplug:Invert\nbroken = ferplug:Missing\n\n"
                                           "[fer_study.classifiers]\nalways_happy = ferplug:AlwaysHappy\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_LOADED_GROUPS", set())
    for name in ("invert", "always_happy", "ferplug:Invert"):
        monkeypatch.delitem(restore.REGISTRY, name, raising=False)
        monkeypatch.delitem(classify.REGISTRY, name, raising=False)
    yield tmp_path
    for reg in (restore.REGISTRY, classify.REGISTRY):
        for name in [n for n, c in reg.items() if c.__module__ == "ferplug"]:
            del reg[name]


def test_entry_point_plugins_are_registered_and_built(plugin_dir, sample_faces):
    with pytest.warns(UserWarning, match="plug-in 'broken'.*not loaded"):
        assert "invert" in restore.available_names()
    faces = sample_faces.images[:5]
    np.testing.assert_array_equal(restore.create("invert", restore.RestoreContext())(faces), 255 - faces)
    assert restore.REGISTRY["invert"].family == "example"
    happy = classify.create("always_happy", classify.ClassifyContext()).predict_proba(faces)
    assert (happy.argmax(1) == classify.CLASSES.index("happy")).all()  # its own label order mapped to the study's


def test_module_class_names_need_no_installation_and_are_checked(plugin_dir):
    assert restore.is_known("ferplug:Invert") and restore.REGISTRY["ferplug:Invert"].name == "ferplug:Invert"
    with pytest.raises(ValueError, match="not a subclass of fer_helpers Restorer"):
        restore.is_known("ferplug:NotAModel")
    with pytest.raises(ValueError, match="plug-in 'nosuchpkg:X': cannot import it"):
        restore.is_known("nosuchpkg:X")


@pytest.mark.notebook
def test_the_study_runs_with_plugins(plugin_dir, fer2013_dir, tmp_path, monkeypatch):
    """Notebook 05 in a fresh kernel finds the installed plug-ins and scores them beside the built-in CNN."""
    monkeypatch.setenv("FER2013_DIR", str(fer2013_dir))
    monkeypatch.setenv("PYTHONPATH", str(plugin_dir))
    run = tmp_path / "run"
    pm.execute_notebook(str(NOTEBOOKS_DIR / "05_baselines.ipynb"), str(tmp_path / "05.ipynb"), cwd=str(NOTEBOOKS_DIR), progress_bar=False,
                        parameters={"PARAMS_FILE": str(PARAMS_DIR / "smoke.yaml"), "RUN_DIR": str(run),
                                    "OVERRIDES": {"data.per_class": 1, "degradation.presets": ["noise_25"],
                                                  "restoration.restorers": ["none", "invert"], "restoration.gate": [],
                                                  "classification.baselines": ["always_happy", "cnn"],
                                                  "classification.presets": None, "classification.restorers": None}})
    m = pd.read_csv(run / "classification" / "baselines_metrics.csv")
    happy = m[(m["classifier"] == "always_happy")]
    assert set(happy["restorer"]) == {"none", "invert"} and np.allclose(happy["accuracy"], 1 / 7)
