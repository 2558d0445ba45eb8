"""The shape docs/architecture.md promises, checked on the source: short functions, one YAML reader,
an evaluation package that stands without the training one."""
import ast
import re
from pathlib import Path

import pytest

LVMLIB = Path(__file__).resolve().parents[2] / "lvmlib"
MAX_FUNCTION_LINES = 60
SOURCES = sorted(LVMLIB.rglob("*.py"))


def imported_modules(tree: ast.AST, package: str) -> set[str]:
    """Absolute names of every module a file imports (relative imports resolved against `package`)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names |= {module} | {f"{module}.{a.name}" for a in node.names}
    return names


def package_of(path: Path) -> str:
    parts = path.relative_to(LVMLIB.parent).with_suffix("").parts
    return ".".join(parts if path.name == "__init__.py" else parts[:-1])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(LVMLIB)))
def test_no_function_is_longer_than_60_lines(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.name}: {long}"


def test_exactly_one_module_parses_yaml():
    readers = [p.relative_to(LVMLIB) for p in SOURCES
               if "yaml" in imported_modules(ast.parse(p.read_text(encoding="utf-8")), package_of(p))]
    assert readers == [Path("config.py")]


def test_evaluation_imports_nothing_from_training_and_no_importlib():
    for path in sorted((LVMLIB / "evaluation").rglob("*.py")):
        modules = imported_modules(ast.parse(path.read_text(encoding="utf-8")), package_of(path))
        bad = sorted(m for m in modules if m.startswith(("lvmlib.training", "importlib")) or m == "lvmlib.runs")
        assert not bad, f"{path.name} imports {bad}"


def test_the_import_check_sees_relative_imports():
    # a check that cannot fail proves nothing: the resolver must map `from ..training import fit`
    tree = ast.parse("from ..training import fit\nfrom .core import x\nimport importlib")
    assert {"lvmlib.training", "lvmlib.training.fit", "lvmlib.evaluation.core", "importlib"} <= \
        imported_modules(tree, "lvmlib.evaluation")


def test_the_size_docs_architecture_states_is_the_real_one():
    text = (LVMLIB.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    stated = int(re.search(r"`lvmlib` is ([\d,]+) lines", text).group(1).replace(",", ""))
    assert stated == sum(len(p.read_text(encoding="utf-8").splitlines()) for p in SOURCES), \
        "docs/architecture.md states another size for lvmlib: update its 'Size' section"
