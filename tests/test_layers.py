"""The layers of DESIGN.md, read from the source: who may import whom, and no cycle between packages.

Every ``import`` and ``from ... import`` of every module counts, inside functions and under
``TYPE_CHECKING`` too: a lazy import is still a dependency.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "densevit"

GROUND = {"densevit", "errors", "io", "distributed", "registry", "config", "config_checks", "config_files", "tasks",
          "models", "model_checks", "weights", "hub_weights", "catalogue"}
HEADS = {"classification", "detection", "segmentation"}
# Layer -> the layers it may import (besides itself). The ground modules are listed one by one:
# the registries (registry, tasks, models) import nothing that registers into them.
ALLOWED = {
    "densevit": {"models"},
    "errors": set(),
    "io": {"errors"},
    "distributed": {"errors"},
    "registry": {"errors"},
    "tasks": {"registry", "errors"},
    "models": {"registry", "errors"},
    "model_checks": {"models", "registry", "errors", "hub_weights"},
    "config_checks": {"errors"},
    "weights": {"errors", "hub_weights"},
    "hub_weights": {"errors"},
    "catalogue": set(),  # a generated table: imports nothing
    "config_files": {"errors", "io"},
    "config": {"errors", "io", "registry", "tasks", "config_checks", "config_files"},
    "backbones": GROUND,
    "data": GROUND,
    "evaluation": GROUND | {"data"},
    "engine": GROUND,
    "detection": GROUND | {"backbones", "data", "evaluation", "engine"},
    "segmentation": GROUND | {"backbones", "data", "evaluation", "engine"},
    "classification": GROUND | {"backbones", "data", "evaluation", "engine"},
    "convert": GROUND | HEADS | {"backbones", "engine"},
    "inference": GROUND | HEADS | {"backbones", "data", "evaluation", "engine"},
    "demos": None,  # the top floor: anything
    "bench": None,
    "cli": None,
    "__main__": None,
}


def layer_of(module: str) -> str:
    """``densevit.engine.trainer`` -> ``engine``; ``densevit`` -> ``densevit``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports_of(path: Path, package: Path) -> set[str]:
    """The ``densevit`` modules that the file at ``path`` imports (``from densevit import x``
    counts as ``densevit.x`` when ``x`` is a module or package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == package.name}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != package.name:
                continue
            if node.module == package.name:
                for alias in node.names:
                    is_module = (package / f"{alias.name}.py").is_file() or (package / alias.name).is_dir()
                    found.add(f"{package.name}.{alias.name}" if is_module else package.name)
            else:
                found.add(node.module)
    return found


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def violations(package: Path, allowed: dict[str, set[str] | None]) -> list[str]:
    """Every import that crosses the layers the wrong way, and every cycle between layers."""
    problems, edges = [], {}
    for path in sorted(package.rglob("*.py")):
        source = module_name(path, package)
        here = layer_of(source)
        if here not in allowed:
            problems.append(f"{source}: layer {here!r} is not declared in the layering test")
            continue
        for target in sorted(imports_of(path, package)):
            there = layer_of(target)
            if there == here:
                continue
            edges.setdefault(here, set()).add(there)
            if allowed[here] is not None and there not in allowed[here]:
                problems.append(f"{source} imports {target}: {here} may not import {there}")
    problems += [f"import cycle between layers: {' -> '.join(cycle)}" for cycle in _cycles(edges)]
    return problems


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    cycles, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(trail[trail.index(nxt):] + [node, nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, trail + [node])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    return cycles


def test_densevit_keeps_its_layers():
    assert violations(PACKAGE, ALLOWED) == []


def test_the_checker_finds_a_wrong_import_and_a_cycle(tmp_path):
    fake = tmp_path / "densevit"
    for name, body in {
        "__init__.py": "",
        "errors.py": "",
        "backbones/__init__.py": "from densevit.detection import thing\n",  # backbones may not import a head
        "detection/__init__.py": "def f():\n    from densevit import backbones\n",
        "engine/__init__.py": "import densevit.errors\n",
    }.items():
        (fake / name).parent.mkdir(parents=True, exist_ok=True)
        (fake / name).write_text(body)
    found = violations(fake, {"densevit": set(), "errors": set(), "backbones": {"errors"},
                              "detection": {"backbones"}, "engine": {"errors"}})
    assert "densevit.backbones imports densevit.detection: backbones may not import detection" in found
    assert any(p.startswith("import cycle between layers") and "backbones" in p and "detection" in p for p in found)
    assert not any("engine" in p for p in found)


@pytest.mark.parametrize("layer", sorted(HEADS))
def test_the_heads_import_none_of_each_other(layer):
    others = HEADS - {layer}
    assert not (ALLOWED[layer] & others)
