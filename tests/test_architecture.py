"""The package's shape: imports point one way, no import circle, modules small enough to read.

The layers are the `[tool.importlinter]` contract in pyproject.toml (cli > demo > training >
evaluation > agents > rollout > models > algorithms > prompting > config_files): a package may
import only the ones below it. import-linter checks that contract; the cycle check below covers
modules inside one package as well, which the layers contract does not.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 500


def test_layers_contract_is_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    command = [str(lint)] if lint.is_file() else ["lint-imports"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def import_graph() -> dict[str, set[str]]:
    """Module -> the vlm_agent modules it imports (anywhere in the file, lazy imports included)."""
    import grimp

    graph = grimp.build_graph("vlm_agent")
    return {module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `edges` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for imported in sorted(edges.get(module, ())):
            if state.get(imported) == 1:
                return path[path.index(imported):] + [imported]
            if imported not in state and (cycle := visit(imported)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_find_cycle_finds_a_circle_and_passes_a_chain() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle_between_modules() -> None:
    edges = import_graph()
    # A package's __init__ is imported with any of its modules; an edge from a module to its own
    # package's __init__ would make every re-export look like a circle, so those inits stay empty.
    cycle = find_cycle(edges)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


@pytest.mark.parametrize("path", sorted((ROOT / "vlm_agent").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_stay_readable(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {lines} lines; split it by concept"
