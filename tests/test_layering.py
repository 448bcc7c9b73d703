"""The import layering of ``study/``: read with ``ast``, so function-local imports count as much as top-level ones.

The intended layers, lowest first; a module may import modules of its own layer or below, never above:

0. ``errors``, ``names``, ``config`` (and the package ``__init__``): leaves, no TensorFlow
1. ``data``: sources → canonical table → splits → encoded int tensors
2. ``embeddings``, ``towers``: the EMBEDDINGS, ACTIVATIONS, BODIES registries
3. ``model``: TwoTowerModel on tfrs tasks
4. ``train``: the compiled-epoch trainer and exact top-k
5. ``search_space``, ``objective``: YAML → Optuna distributions; one trial
6. ``storage``, ``results``: storage URLs; reading a stored study
7. ``runner``, ``workers``, ``locks``, ``progress``, ``artifacts``: the run in named steps and what it drives
8. ``report``, ``dashboard``, ``export``, ``evaluate``: consumers of stored studies
9. ``cli``: argparse subcommands, imported by no module but the ``python -m study`` entry point (``__main__``)

Within a layer imports are allowed, but no module may reach itself through its imports (no cycle anywhere).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "study"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("__init__", "errors", "names", "config"),
    ("data",),
    ("embeddings", "towers"),
    ("model",),
    ("train",),
    ("search_space", "objective"),
    ("storage", "results"),
    ("runner", "workers", "locks", "progress", "artifacts"),
    ("report", "dashboard", "export", "evaluate"),
    ("cli",),
    ("__main__",),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def study_imports(source: str) -> set[str]:
    """The ``study`` modules a module's source imports, anywhere in it (``study`` alone is ``__init__``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "study":  # from study import data, cli
                names = [f"study.{alias.name}" for alias in node.names]
            else:
                names = [node.module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "study":
                found.add(parts[1] if len(parts) > 1 else "__init__")
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module name → the ``study`` modules it imports (modules, not sub-packages such as ``datasets``)."""
    modules = {path.stem: path for path in package.glob("*.py")}
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in study_imports(path.read_text(encoding="utf-8")) if m in modules and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, …, a]``, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a higher layer, imports of ``cli``, and modules missing from :data:`LAYERS`."""
    problems = [
        f"study/{name}.py is in no layer of tests/test_layering.py" for name in sorted(graph) if name not in RANK
    ]
    for name, targets in sorted(graph.items()):
        for target in sorted(targets):
            if target == "cli" and name != "__main__":
                problems.append(f"study/{name}.py imports study.cli (the CLI is a leaf nothing imports)")
            elif name in RANK and target in RANK and RANK[target] > RANK[name]:
                problems.append(f"study/{name}.py (layer {RANK[name]}) imports study.{target} (layer {RANK[target]})")
    return problems


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_module_imports_a_higher_layer_or_the_cli() -> None:
    assert layering_violations(import_graph()) == []


def test_a_planted_cycle_and_an_upward_import_are_caught(tmp_path: Path) -> None:
    """The checks can fail: a copy of the package with ``storage`` importing ``runner`` (function-local, as the old
    circle hid its imports) has a cycle and an upward import; ``report`` importing ``cli`` is flagged too."""
    for path in PACKAGE.glob("*.py"):
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    with (tmp_path / "storage.py").open("a", encoding="utf-8") as fh:
        fh.write("\n\ndef _planted():\n    from study.runner import prepare\n\n    return prepare\n")
    with (tmp_path / "report.py").open("a", encoding="utf-8") as fh:
        fh.write("\n\ndef _planted():\n    from study import cli\n\n    return cli\n")
    graph = import_graph(tmp_path)
    cycle = find_cycle(graph)
    assert cycle is not None and "storage" in cycle and "runner" in cycle
    problems = layering_violations(graph)
    assert "study/storage.py (layer 6) imports study.runner (layer 7)" in problems
    assert "study/report.py imports study.cli (the CLI is a leaf nothing imports)" in problems


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import study", {"__init__"}),
        ("from study import data, cli", {"data", "cli"}),
        ("from study.results import open_study", {"results"}),
        ("def f():\n    import study.runner\n", {"runner"}),
        ("import optuna\nfrom . import x", set()),
    ],
)
def test_study_imports_reads_every_form(source: str, expected: set[str]) -> None:
    assert study_imports(source) == expected
