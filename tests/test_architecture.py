"""The package's layers (docs/architecture.md): imports point down, and nothing imports in a circle.

Every import counts, those inside functions included: a cycle hidden by a
function-level import is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "speechvq"

# Each unit (a subpackage or a top-level module) and its layer; a module may
# import its own unit and units of lower layers only. Same layer, other unit:
# not allowed either (codec and data know nothing of each other).
LAYERS = {
    "speechvq.errors": 0,
    "speechvq.version": 0,
    "speechvq.files": 1,
    "speechvq.config": 1,
    "speechvq.audio": 2,
    "speechvq.codec": 3,
    "speechvq.data": 3,
    "speechvq.models": 4,
    "speechvq.inference": 5,
    "speechvq.pretrained": 5,  # package data only
    "speechvq.training": 6,
    "speechvq.evaluation": 6,
    "speechvq.analysis": 6,
    "speechvq.web": 7,
    "speechvq.cli": 8,
    "speechvq.demo": 8,
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """The speechvq modules `path` imports, anywhere in the file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "speechvq"}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if node.module.split(".")[0] != "speechvq":
                continue
            for alias in node.names:  # `from speechvq.models import prior` imports a module
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in MODULES else node.module)
    return out


def _unit(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def test_every_module_belongs_to_a_layer():
    assert {_unit(m) for m in MODULES if m != "speechvq"} == set(LAYERS)


def test_imports_point_down():
    wrong = []
    for module, targets in GRAPH.items():
        if module == "speechvq":  # the public API at the root gathers from every layer
            continue
        unit = _unit(module)
        for target in sorted(targets):
            if target == "speechvq":
                wrong.append(f"{module} imports the package root (import the module itself)")
                continue
            other = _unit(target)
            if other != unit and LAYERS[other] >= LAYERS[unit]:
                wrong.append(f"{module} (layer {LAYERS[unit]}) imports {target} ({LAYERS[other]})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    cycles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(GRAPH.get(module, ())):
            if target not in MODULES:
                continue
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in MODULES:
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_the_checks_see_lazy_imports(tmp_path):
    """A function-level import is read like a top-level one (so the checks can fail)."""
    source = tmp_path / "m.py"
    lines = ["def f():", "    from speechvq.cli.common import app", "    import speechvq.data"]
    source.write_text("\n".join(lines) + "\n")
    assert _imports(source) == {"speechvq.cli.common", "speechvq.data"}
