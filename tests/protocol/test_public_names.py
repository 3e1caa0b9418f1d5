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


# app_server's subpackages state their public face the same way: `__all__` in each `__init__.py` names what
# the package defines for others and the modules other packages may import, and nothing outside a package
# imports a module of it that `__all__` leaves out.

APP_SERVER = PROTOCOL.parent / "app_server"
PACKAGES = sorted(".".join(p.parent.relative_to(APP_SERVER.parent).parts) for p in APP_SERVER.glob("*/**/__init__.py"))


def declared_names(init: Path) -> list[str]:
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            value = ast.literal_eval(node.value)
            assert isinstance(value, list)
            return [str(n) for n in value]
    return []


def imported_names(init: Path) -> set[str]:
    return {
        alias.asname or alias.name
        for node in ast.parse(init.read_text(encoding="utf-8")).body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


def submodules(package: Path) -> set[str]:
    return {p.stem for p in package.glob("*.py") if p.stem != "__init__"} | {
        p.parent.name for p in package.glob("*/__init__.py")
    }


@pytest.fixture(scope="module")
def outside_imports() -> dict[str, set[str]]:
    """package -> the names of its direct children that a module outside the package imports."""
    import grimp

    graph = grimp.build_graph("app_server", "protocol", include_external_packages=False, cache_dir=None)
    used: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for package in PACKAGES:
        for module in graph.find_descendants(package):
            if any(
                not (i == package or i.startswith(package + "."))
                for i in graph.find_modules_that_directly_import(module)
            ):
                used[package].add(module[len(package) + 1 :].split(".")[0])
    return used


@pytest.mark.parametrize("package", PACKAGES)
def test_each_app_server_package_states_its_public_face(package: str, outside_imports: dict[str, set[str]]) -> None:
    path = APP_SERVER.parent.joinpath(*package.split("."))
    init = path / "__init__.py"
    declared = declared_names(init)
    assert declared, f"{package} has no __all__"
    assert len(declared) == len(set(declared)), f"{package}.__all__ names something twice"
    assert defined_public_names(init) <= set(declared), f"{package} defines names its __all__ leaves out"
    real = defined_public_names(init) | imported_names(init) | submodules(path)
    assert set(declared) <= real, f"{package}.__all__ names what is neither defined there nor a module of it"
    hidden = outside_imports[package] - set(declared)
    assert not hidden, f"modules of {package} imported from outside it but not in its __all__: {sorted(hidden)}"


def test_the_public_face_check_sees_a_name_neither_defined_nor_a_module(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text('__all__ = ["sub", "gone"]\n', encoding="utf-8")
    (package / "sub.py").write_text("", encoding="utf-8")
    assert set(declared_names(package / "__init__.py")) - submodules(package) == {"gone"}
