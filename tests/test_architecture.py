"""The package's import graph, read with ``ast``: imports go one way, down the layers, with no circle except
the deliberate plug-in registration (``restore`` imports ``face_priors`` so that GFPGAN and CodeFormer
register themselves; ``face_priors`` needs ``restore``'s base class to do so)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fer_helpers"

#: bottom to top; a module may import from its own layer (without a circle) or any layer below
LAYERS: list[set[str]] = [
    {"paths", "images", "registry", "compute", "training", "plots", "io"},  # no study knowledge
    {"faces", "data"},  # faces from pictures and data sets
    {"degrade", "quality", "stats"},  # pure measures and operations on face stacks
    {"cnn", "unet", "vit", "transfer", "landmarks", "face_priors", "ensemble"},  # models
    {"restore", "classify"},  # the registries the study picks from
    {"config", "scoring", "headlines"},  # a study's parameters, metric tables and recorded headlines
    {"comparisons", "strategies"},  # paired comparisons and the strategies on per-face outcomes (notebook 06's numbers)
    {"stages", "stages.data", "stages.degradation", "stages.quality", "stages.restoration", "stages.classification",
     "stages.findings"},
    {"report", "runner", "predict"},  # what reads the stages' outputs
    {"cli", "colab", "unet_cli", "__init__"},  # entry points
]
PLUGIN_EDGES = {("face_priors", "restore")}


def _is_main_guard(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and getattr(node.test.left, "id", "") == "__name__"


def _module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> package modules it imports (dotted below the package: ``stages.data``), anywhere in the file
    (inside functions too), except under ``if __name__ == "__main__":`` (a ``python -m`` entry may hand over
    to the module that holds its commands)."""
    files = sorted(package.rglob("*.py"))
    modules = {_module_name(f, package) for f in files}
    graph: dict[str, set[str]] = {}
    for path in files:
        name = _module_name(path, package)
        here = name.split(".") if path.name == "__init__.py" and name != "__init__" else name.split(".")[:-1]
        tree = ast.parse(path.read_text(), str(path))
        entry = {id(n) for guard in ast.walk(tree) if _is_main_guard(guard) for n in ast.walk(guard)}
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in entry:
                continue
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - (node.level - 1)] + (node.module.split(".") if node.module else [])
                elif (node.module or "").startswith("fer_helpers"):
                    base = node.module.split(".")[1:]
                else:
                    continue
                for a in node.names:
                    target = ".".join(base + [a.name])
                    deps.add(target if target in modules else ".".join(base) or "__init__")
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".", 1)[1] for a in node.names if a.name.startswith("fer_helpers.")}
        graph[name] = {d for d in deps if d in modules} - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_every_module_has_a_layer():
    placed = set().union(*LAYERS)
    assert set(import_graph()) == placed, "place new modules in LAYERS (and say why in a comment there)"


def test_imports_point_down_the_layers():
    layer = {m: i for i, names in enumerate(LAYERS) for m in names}
    upward = sorted(f"{m} (layer {layer[m]}) imports {d} (layer {layer[d]})"
                    for m, deps in import_graph().items() for d in deps
                    if layer[d] > layer[m] and (m, d) not in PLUGIN_EDGES)
    assert not upward, upward


def test_no_import_circle_but_the_plugin_registration():
    graph = {m: {d for d in deps if (m, d) not in PLUGIN_EDGES} for m, deps in import_graph().items()}
    assert _cycle(graph) is None, f"import circle: {' -> '.join(_cycle(graph))}"


@pytest.mark.parametrize("graph, circle", [({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True), ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, False)])
def test_the_circle_finder_finds_circles(graph, circle):
    assert (_cycle(graph) is not None) == circle


def test_the_graph_sees_imports_inside_functions_and_subpackages(tmp_path):
    (tmp_path / "low.py").write_text("def f():\n    from .high import g\n")
    (tmp_path / "high.py").write_text("from . import low\nif __name__ == '__main__':\n    from .cli import main\n")
    (tmp_path / "cli.py").write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "__init__.py").write_text("")
    (tmp_path / "sub" / "a.py").write_text("from .. import low\nfrom . import b as bee\nfrom ..high import g\n")
    (tmp_path / "sub" / "b.py").write_text("from fer_helpers.cli import x\n")
    assert import_graph(tmp_path) == {"low": {"high"}, "high": {"low"}, "cli": set(), "sub": set(),
                                      "sub.a": {"low", "sub.b", "high"}, "sub.b": {"cli"}}
