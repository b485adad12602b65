"""The house rules of DESIGN.md, checked on the import graph of the package.

The graph is derived from the source with ``ast``: every ``import`` and ``from ... import`` of an
``mmcourse`` module, at the top of a file or inside a function (a function-level import still makes
a cycle, it only hides it until the function runs). Importing ``a.b.c`` also runs the package
``a.b``'s ``__init__``, so that edge counts too (except into the importing module's own packages,
which Python has already started importing).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mmcourse"

# every top-level module that is not infrastructure or a sub-package is a topic module: the mechanism
# a notebook teaches (a new topic module is checked by the same rules without being listed)
INFRASTRUCTURE = {"__init__", "__main__", "cli", "course", "notebook", "pretrained", "runtime"}


def topic_modules() -> set[str]:
    return {p.stem for p in PACKAGE.glob("*.py")} - INFRASTRUCTURE


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The mmcourse modules ``path`` imports anywhere in the file (the root package itself excluded)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target not in known:
                continue
            parts = target.split(".")
            for i in range(2, len(parts) + 1):  # the module and every package above it (not the root)
                found.add(".".join(parts[:i]))
    own_packages = {".".join(me.split(".")[:i]) for i in range(1, len(me.split(".")) + 1)}
    return found - own_packages


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(path, set(mods)) for name, path in mods.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_sees_function_level_imports(graph):
    """The derivation itself: a known function-level import shows up as an edge."""
    assert "mmcourse.recipes" in graph["mmcourse.cli"], "cli imports recipes inside a function"
    assert "mmcourse.models.clip" in graph["mmcourse.models"]


def test_no_import_cycle(graph):
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _importers(graph, target_prefix: str) -> set[str]:
    return {m for m, deps in graph.items() if any(d == target_prefix or d.startswith(target_prefix + ".") for d in deps)}


def test_nothing_imports_the_command_line(graph):
    assert _importers(graph, "mmcourse.cli") <= {"mmcourse.__main__"}


def test_only_the_command_line_imports_recipes(graph):
    assert {m for m in _importers(graph, "mmcourse.recipes") if not m.startswith("mmcourse.recipes")} == {"mmcourse.cli"}


def test_pretrained_loads_and_saves_only(graph):
    """pretrained.py imports the models (to build a checkpoint's class) and nothing else of the package."""
    assert graph["mmcourse.pretrained"] <= {"mmcourse.models"}, graph["mmcourse.pretrained"]


def test_checkpoints_are_loaded_only_by_recipes_and_the_command_line(graph):
    """A model never reads a checkpoint; topic modules, widgets and checks get models passed in."""
    allowed = {"mmcourse.cli"}
    loaders = {m for m in _importers(graph, "mmcourse.pretrained") if not m.startswith("mmcourse.recipes")}
    assert loaders <= allowed, loaders - allowed


def test_data_and_kernels_import_no_model(graph):
    for name, deps in graph.items():
        if name.startswith(("mmcourse.data", "mmcourse.kernels")):
            bad = {d for d in deps if d.startswith(("mmcourse.models", "mmcourse.pretrained", "mmcourse.recipes"))}
            assert not bad, f"{name} imports {bad}"


def test_checks_never_import_grading(graph):
    for name, deps in graph.items():
        if name.startswith("mmcourse.check"):
            assert not any(d.startswith("mmcourse.grading") for d in deps), name


def test_topic_modules_import_no_model(graph):
    """Topic modules hold the mechanism and take models as arguments; networks live in models/."""
    assert {"diffusion", "losses", "training", "zeroshot"} <= topic_modules()
    for topic in topic_modules():
        name = f"mmcourse.{topic}"
        bad = {d for d in graph[name] if d.startswith(("mmcourse.models", "mmcourse.pretrained", "mmcourse.recipes"))}
        assert not bad, f"{name} imports {bad}"


def test_networks_are_defined_in_models_or_topic_modules_only():
    """A checkpoint's network lives in models/ (``pretrained.save`` refuses any other); a topic module
    may hold a small mechanism module (a LoRA layer, a resampler). Recipes, widgets, checks, grading,
    data and kernels define no ``nn.Module``."""
    found = set()
    for name, path in modules().items():
        if name.startswith("mmcourse.models") or name.removeprefix("mmcourse.") in topic_modules():
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                (isinstance(b, ast.Attribute) and b.attr == "Module") or (isinstance(b, ast.Name) and b.id == "Module")
                for b in node.bases
            ):
                found.add(f"{name}.{node.name}")
    assert not found, found
