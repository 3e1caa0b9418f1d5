"""`protocol` declares its public names: every module's `__all__` lists exactly what it defines for others."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PROTOCOL = Path(__file__).resolve().parents[2] / "protocol"
MODULES = sorted(p.stem for p in PROTOCOL.glob("*.py") if p.stem != "__init__")


def defined_public_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_")}


@pytest.mark.parametrize("name", MODULES)
def test_all_lists_every_public_name_and_only_real_ones(name: str) -> None:
    module = importlib.import_module(f"protocol.{name}")
    declared = set(getattr(module, "__all__", ()))
    assert declared, f"protocol.{name} has no __all__"
    assert defined_public_names(PROTOCOL / f"{name}.py") <= declared
    assert all(hasattr(module, n) for n in declared)


def test_the_check_sees_a_missing_name(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text('__all__ = ["A"]\nA = 1\nB = 2\n_C = 3\n', encoding="utf-8")
    assert defined_public_names(path) == {"A", "B"}  # B would be reported as undeclared
