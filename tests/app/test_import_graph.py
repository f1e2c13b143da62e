"""Dependencies point one way: no import cycle inside ``app.services`` or ``kan_core`` (lazy
imports inside functions count too), services import no API, dashboard or worker code,
``kan_core`` nothing from ``app``. Read from the source (no imports: cheap); with no cycle,
every module imports alone in a fresh interpreter whatever was imported before it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: a calibration script that measures the API's own response model (``python -m``, dev only)
UPWARD_ALLOWED = {("app.services.memory_calibration", "app.api.schemas")}


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports anywhere in it (top level or inside a function);
    ``from package import name`` counts as ``package.name`` when that is a module."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                if (ROOT / Path(*candidate.split("."))).with_suffix(".py").exists():
                    found.add(candidate)
    return found


def _graph(package: str) -> dict[str, set[str]]:
    files = sorted((ROOT / Path(*package.split("."))).glob("*.py"))
    return {_module(f): _imports(f) for f in files if f.name != "__init__.py"}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among the graph's own modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node] & graph.keys()):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"os"}}) is None


def test_no_import_cycles_in_services_or_kan_core() -> None:
    for package in ("app.services", "kan_core"):
        assert _cycle(_graph(package)) is None, package


def test_dependencies_point_one_way() -> None:
    upward = {
        (module, dep)
        for module, deps in _graph("app.services").items()
        for dep in deps
        if dep.startswith(("app.api", "app.dashboard", "app.worker"))
    }
    assert upward <= UPWARD_ALLOWED
    kan_core = _graph("kan_core").items()
    assert not [(m, d) for m, deps in kan_core for d in deps if d.split(".")[0] == "app"]


def test_the_api_and_a_trainer_start_without_the_slow_optional_imports() -> None:
    """Every API process and every trainer imports these modules: scikit-learn (~1.5 s of CPU)
    loads only when a baseline or a split is made, torch._dynamo (~1.7 s) only when something
    compiles (kan_core marks its constant checks without it: ``kan_core.compile_marks``)."""
    import json
    import subprocess
    import sys

    code = (
        "import json, sys; import app.main, app.services.training; "
        "print(json.dumps([m for m in ('sklearn', 'torch._dynamo') if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
