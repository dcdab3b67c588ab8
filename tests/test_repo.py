"""House rules that keep the project usable: stripped notebooks, Colab badges in sync, thin notebooks."""

import json

import pytest

from fer_helpers.colab import sync_badges
from fer_helpers.paths import NOTEBOOKS_DIR

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_committed_without_outputs_with_one_parameters_cell(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "run nbstripout"
    assert sum("parameters" in c.get("metadata", {}).get("tags", []) for c in code) == 1
    # thin: logic lives in fer_helpers, so no function or class definitions in notebooks
    assert not any(line.lstrip().startswith(("def ", "class ")) for c in code for line in "".join(c["source"]).splitlines())


def test_colab_badges_follow_the_repository_setting():
    assert sync_badges(check=True) == [], "run `fer-study badges` after changing [project.urls] Repository"
