"""bench/ builds on tests.support, so nothing under tests/ may import bench (no cycle), and the
support layer itself needs nothing but punchgate and its test dependencies (no pytest)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_no_test_imports_bench() -> None:
    offenders = {
        str(path.relative_to(TESTS)): sorted(m for m in _imports(path) if m.split(".")[0] == "bench")
        for path in TESTS.rglob("*.py")
    }
    assert {path: found for path, found in offenders.items() if found} == {}


def test_support_modules_do_not_need_pytest() -> None:
    modules = [p for p in (TESTS / "support").glob("*.py") if not p.name.startswith("test_")]
    assert modules
    assert {p.name: "pytest" for p in modules if "pytest" in {m.split(".")[0] for m in _imports(p)}} == {}
