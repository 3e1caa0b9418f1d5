"""One map: README.md's "## Architecture" arrows and pyproject.toml's import-linter contracts are the same
arrows, every module of ours is on the map, and every contract catches a wrong import put into the graph."""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grimp
import pytest
from importlinter import Contract, configuration
from importlinter.contracts.acyclic_siblings import AcyclicSiblingsContract
from importlinter.contracts.forbidden import ForbiddenContract

ROOT = Path(__file__).resolve().parents[1]
CONFIG: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
CONTRACTS: list[dict[str, Any]] = CONFIG["contracts"]
TYPES: dict[str, type[Contract]] = {"forbidden": ForbiddenContract, "acyclic_siblings": AcyclicSiblingsContract}
ARROW = re.compile(r"^(?P<source>\S+) ─+► (?P<targets>.+)$")
TARGET = re.compile(r"(?P<unit>[\w./]+)(?: \((?P<only>[^)]*)\))?")

Map = dict[str, dict[str, frozenset[str] | None]]  # importer -> imported -> the only modules it may reach, or all


def module_name(unit: str) -> str:
    """`cli/` or `world.py` (README's spelling) -> its module name."""
    name = unit.removesuffix("/").removesuffix(".py")
    return name if name == "protocol" else f"app_server.{name}"


def children(package: str) -> set[str]:
    """The modules and subpackages directly inside a package of ours, by their last name."""
    path = ROOT.joinpath(*package.split("."))
    return {p.stem for p in path.glob("*.py") if p.stem != "__init__"} | {
        p.parent.name for p in path.glob("*/__init__.py")
    }


UNITS = {f"app_server.{name}" for name in children("app_server")} | {"protocol"}


def readme_map() -> Map:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Architecture\n") :]
    block = section[section.index("```\n") + 4 :]
    block = block[: block.index("```")]
    arrows: Map = {}
    for line in block.splitlines():
        match = ARROW.match(line)
        assert match, f"not an arrow line in README's map: {line!r}"
        targets: dict[str, frozenset[str] | None] = {}
        if match["targets"] != "nothing of ours":
            for part in TARGET.finditer(match["targets"]):
                only = part["only"]
                targets[module_name(part["unit"])] = frozenset(only.split(", ")) if only else None
        source = module_name(match["source"])
        assert source not in arrows, f"{source} drawn twice"
        arrows[source] = targets
    return arrows


def contracts_map() -> Map:
    """The arrows the forbidden contracts leave open: a contract over top-level modules is its importer's
    line; one over the modules of a single package narrows the arrow into that package."""
    arrows: Map = {}
    narrowed: list[tuple[str, str, set[str]]] = []
    for contract in CONTRACTS:
        if contract["type"] != "forbidden":
            continue
        assert contract.get("allow_indirect_imports") is True, f"{contract['name']}: an arrow is a direct import"
        (source,) = contract["source_modules"]
        forbidden = set(contract["forbidden_modules"])
        if forbidden == {"app_server"}:
            forbidden = UNITS - {source}
        packages = {name.rsplit(".", 1)[0] for name in forbidden}
        if packages <= {"app_server"} or forbidden <= UNITS:
            assert source not in arrows, f"{source} has two contracts for its line"
            arrows[source] = dict.fromkeys(sorted(UNITS - forbidden - {source}), None)
        else:
            assert len(packages) == 1, f"{contract['name']}: narrows arrows into more than one package"
            (package,) = packages
            narrowed.append((source, package, children(package) - {n.rsplit(".", 1)[1] for n in forbidden}))
    for source, package, only in narrowed:
        assert package in arrows[source], f"{source} narrowed into {package}, which it has no arrow to"
        arrows[source][package] = frozenset(only)
    return arrows


def test_the_readme_map_and_the_contracts_draw_the_same_arrows() -> None:
    assert readme_map() == contracts_map()


def test_every_module_of_ours_is_on_the_map() -> None:
    assert set(contracts_map()) == UNITS


def test_the_map_reading_sees_a_missing_arrow() -> None:
    drawn = readme_map()
    del drawn["app_server.cli"]["app_server.server"]
    assert drawn != contracts_map()


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    configuration.configure()  # what the `lint-imports` command does first: contracts read its settings
    return grimp.build_graph(*CONFIG["root_packages"], include_external_packages=False, cache_dir=None)


def contract(options: dict[str, Any]) -> Contract:
    session = {"root_packages": CONFIG["root_packages"], "include_external_packages": False}
    # as import-linter's own TOML reader hands them over: booleans as strings
    fields = {k: str(v).lower() if isinstance(v, bool) else v for k, v in options.items() if k not in {"name", "type"}}
    return TYPES[options["type"]](options["name"], session, fields)


def wrong_import(options: dict[str, Any]) -> tuple[str, str]:
    """An import the contract must refuse: into its first forbidden module, or closing a cycle."""
    if options["type"] == "forbidden":
        return options["source_modules"][0], sorted(options["forbidden_modules"])[0]
    return "app_server.errors", "app_server.config"  # config.py imports errors.py: a cycle of siblings


@pytest.fixture
def added(graph: grimp.ImportGraph) -> Iterator[list[tuple[str, str]]]:
    imports: list[tuple[str, str]] = []
    yield imports
    for importer, imported in imports:
        graph.remove_import(importer=importer, imported=imported)


@pytest.mark.parametrize("options", CONTRACTS, ids=[c["name"][:60] for c in CONTRACTS])
def test_each_contract_holds_and_catches_a_wrong_import(
    options: dict[str, Any], graph: grimp.ImportGraph, added: list[tuple[str, str]]
) -> None:
    assert options["type"] in TYPES, f"{options['name']}: a contract type this test does not break yet"
    checked = contract(options)
    assert checked.check(graph, verbose=False).kept
    importer, imported = wrong_import(options)
    assert not graph.direct_import_exists(importer=importer, imported=imported)
    graph.add_import(importer=importer, imported=imported)
    added.append((importer, imported))
    assert not checked.check(graph, verbose=False).kept, f"{options['name']} let {importer} -> {imported} in"


def missing_docstrings(package: Path) -> list[str]:
    """Every module, every public top-level class and every handler (a public function of handlers/)
    of a package tree that says nothing about itself."""
    missing: list[str] = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(package.parent)
        if ast.get_docstring(tree) is None:
            missing.append(f"{where}: module")
        for node in tree.body:
            if not isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) or node.name.startswith("_"):
                continue
            if (isinstance(node, ast.ClassDef) or "handlers" in where.parts) and ast.get_docstring(node) is None:
                missing.append(f"{where}: {node.name}")
    return missing


def test_every_module_class_and_handler_says_what_it_is() -> None:
    assert missing_docstrings(ROOT / "app_server") == []


def test_the_docstring_walk_sees_what_is_missing(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "handlers").mkdir(parents=True)
    (package / "a.py").write_text('"""A."""\n\nclass Told:\n    """Told."""\n\nclass Bare:\n    x = 1\n')
    (package / "handlers" / "h.py").write_text(
        '"""H."""\n\nasync def read(ctx):\n    return 1\n\ndef _own():\n    pass\n'
    )
    (package / "b.py").write_text("x = 1\n")
    assert missing_docstrings(package) == ["pkg/a.py: Bare", "pkg/b.py: module", "pkg/handlers/h.py: read"]


def test_no_package_is_left_out_of_the_cycle_check() -> None:
    packages = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for root in CONFIG["root_packages"]
        for p in (ROOT / root).glob("**/__init__.py")
    }
    (cycles,) = (c for c in CONTRACTS if c["type"] == "acyclic_siblings")
    assert set(cycles["ancestors"]) == packages | set(CONFIG["root_packages"])
