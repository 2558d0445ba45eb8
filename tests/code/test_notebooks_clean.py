"""Committed notebooks are clean sources: no outputs, a parameters cell, kernelspec python3.

Outputs belong in outputs/<notebook>/<run>/ (lvm report), not in git. ``python3`` in the
metadata lets nbval and papermill find a kernel anywhere; the report runner picks lvm-lab.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def notebook_problems(nb) -> list[str]:
    problems = []
    name = nb.metadata.get("kernelspec", {}).get("name")
    if name != "python3":
        problems.append(f"kernelspec name is {name!r}, expected 'python3'")
    tags = [c.get("metadata", {}).get("tags", []) for c in nb.cells]
    if not any("parameters" in t for t in tags):
        problems.append("no cell tagged 'parameters'")
    if any("injected-parameters" in t for t in tags):
        problems.append("has a papermill 'injected-parameters' cell (an executed copy?)")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {i} has outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i} has execution_count {cell.execution_count}")
    return problems


def _notebooks() -> list[Path]:
    return sorted(p for p in NOTEBOOKS.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def test_checker_catches_dirty_notebooks():
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "lvm-lab", "display_name": "x", "language": "python"}
    cell = nbformat.v4.new_code_cell("x = 1", execution_count=3)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nb.cells = [cell]
    found = " | ".join(notebook_problems(nb))
    for expected in ("expected 'python3'", "no cell tagged 'parameters'", "cell 0 has outputs",
                     "execution_count 3"):
        assert expected in found
    clean = nbformat.v4.new_notebook()
    clean.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("n = 1")
    params.metadata["tags"] = ["parameters"]
    clean.cells = [nbformat.v4.new_markdown_cell("# t"), params]
    assert notebook_problems(clean) == []


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: str(p.relative_to(NOTEBOOKS)))
def test_notebook_is_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert notebook_problems(nb) == [], f"{path.relative_to(NOTEBOOKS.parent)}: {notebook_problems(nb)}"
