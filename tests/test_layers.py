"""Dependencies point one way: the node packages use the core, the core never imports them.

``wattcast/`` (contract, bus, store, scoring, report, tools) must run without
``simulator/``, ``predictor/`` or ``collector/``; each node package may use the core
but not another node package.  Checked on the source (every import statement,
also inside functions), so a reverse import fails CI however it is hidden.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers import REPO

NODES = ("simulator", "predictor", "collector")


def imported(path: Path) -> set[str]:
    """The top-level packages ``path`` imports, wherever the import statement is."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def test_the_core_never_imports_a_node_package():
    bad = {str(p.relative_to(REPO)): sorted(imported(p) & set(NODES)) for p in sources("wattcast")}
    assert {k: v for k, v in bad.items() if v} == {}


@pytest.mark.parametrize("package", NODES)
def test_a_node_package_imports_no_other_node_package(package):
    others = set(NODES) - {package}
    bad = {str(p.relative_to(REPO)): sorted(imported(p) & others) for p in sources(package)}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_check_sees_an_import_hidden_in_a_function(tmp_path):
    hidden = tmp_path / "m.py"
    hidden.write_text("def f():\n    from collector.node import CollectorNode\n    import simulator.replay\n")
    assert imported(hidden) >= {"collector", "simulator"}


#: a module a reader takes in one sitting
MAX_MODULE_LINES = 400


def test_no_module_is_longer_than_one_sitting():
    files = [p for package in ("wattcast", *NODES) for p in sources(package)]
    lengths = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in files}
    assert {k: n for k, n in lengths.items() if n > MAX_MODULE_LINES} == {}
    assert max(lengths.values()) > MAX_MODULE_LINES // 2  # the files were found and counted
