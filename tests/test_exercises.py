"""Exercises and solutions (the convention of dlbook.notebook) and the student edition.

Every notebook ends with 2-4 exercises; every computational exercise has a solution
block whose cells are tagged `solution` (the solution code runs under nbval like any
other cell, so CI fails when a solution breaks). `make student` removes the solution
cells with nbconvert; each student notebook must hold no solution text and still run
in the quick profile.
"""
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from dlbook import student
from dlbook.execute import toc_notebooks
from dlbook.notebook import (CHECK_TAG, SOLUTION_END_SOURCE, SOLUTION_TAG, exercise_label,
                             exercise_problems, exercises, solution_start_source)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = toc_notebooks(ROOT)


def exercise(label, computational=True):
    kind = ":class: computational\n" if computational else ""
    return new_markdown_cell(f"```{{exercise}} Title\n:label: {label}\n{kind}\nDo it.\n```")


def solution(label, checked=True):
    tags = [SOLUTION_TAG, CHECK_TAG] if checked else [SOLUTION_TAG]
    return [new_markdown_cell(solution_start_source(label), metadata={"tags": [SOLUTION_TAG]}),
            new_code_cell("assert 1 + 1 == 2\nprint('checked')", metadata={"tags": tags}),
            new_markdown_cell(SOLUTION_END_SOURCE, metadata={"tags": [SOLUTION_TAG]})]


def exercised(*cells):
    return new_notebook(cells=[new_markdown_cell("# T"), new_markdown_cell("## Exercises"), *cells])


def test_exercise_problems_detects_each_defect():
    a, b = exercise_label("my_nb", 1), exercise_label("my_nb", 2)
    assert a == "ex-my-nb-1"
    good = exercised(exercise(a), *solution(a), exercise(b, computational=False))
    assert exercise_problems(good, "my_nb") == []
    assert [e["computational"] for e in exercises(good)] == [True, False]

    def found(nb):
        return " | ".join(exercise_problems(nb, "my_nb"))

    assert "has 1 exercises" in found(exercised(exercise(a), *solution(a)))
    assert "no computational" in found(exercised(exercise(a, False), exercise(b, False)))
    assert "no solution block" in found(exercised(exercise(a), exercise(b, False)))
    assert "expected 'ex-my-nb-2'" in found(exercised(exercise(a), *solution(a), exercise("ex-x-9", False)))
    unchecked = exercised(exercise(a), *solution(a, checked=False), exercise(b, False))
    assert "no code cell tagged 'nbval-check-output'" in found(unchecked)
    untagged = exercised(exercise(a), *solution(a), exercise(b, False))
    untagged.cells[4].metadata.tags = []
    assert "not tagged 'solution'" in found(untagged)
    stray = exercised(exercise(a), *solution(a), exercise(b, False),
                      new_code_cell("x = 1", metadata={"tags": [SOLUTION_TAG]}))
    assert "outside every solution block" in found(stray)
    assert "exactly one '## Exercises'" in found(new_notebook(cells=[new_markdown_cell("# T")]))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=str)
def test_notebook_has_exercises_and_solutions(path):
    """2-4 exercises, one computational at least, each computational one with a tagged,
    checked solution block (issue 14's convention, see dlbook.notebook)."""
    nb = nbformat.read(ROOT / path, as_version=4)
    assert exercise_problems(nb, Path(path).stem) == []


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    student.write_student_edition(ROOT, out)
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=str)
def test_student_notebook_has_no_solutions(path, edition):
    book = nbformat.read(ROOT / path, as_version=4)
    handout = nbformat.read(edition / path, as_version=4)
    kept = [c for c in book.cells if SOLUTION_TAG not in c.metadata.get("tags", [])]
    assert [c.source for c in handout.cells] == [c.source for c in kept]
    text = "\n".join(c.source for c in handout.cells)
    assert "{solution-start}" not in text and "{solution-end}" not in text
    for cell in book.cells:
        if SOLUTION_TAG in cell.metadata.get("tags", []) and cell.cell_type == "code":
            assert cell.source not in text
    assert len(exercises(handout)) == len(exercises(book))
    assert all(not c.get("outputs") and not c.get("execution_count")
               for c in handout.cells if c.cell_type == "code")
    code = [c for c in handout.cells if c.cell_type == "code"]
    assert "remove-cell" in code[0].metadata.get("tags", [])          # the setup cell
    assert any("parameters" in c.metadata.get("tags", []) for c in code)


def run_student_notebook(path, edition, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("DLBOOK_PROFILE", "quick")
    monkeypatch.setenv("DLBOOK_DATA", str(ROOT / "data"))
    nb = nbformat.read(edition / path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str((edition / path).parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors


# Two classes, so that pytest-xdist's --dist loadscope gives each half to its own worker.
@pytest.mark.slow
class TestStudentNotebooksRunFirstHalf:
    @pytest.mark.parametrize("path", NOTEBOOKS[::2], ids=str)
    def test_runs_in_quick_profile(self, path, edition, monkeypatch):
        run_student_notebook(path, edition, monkeypatch)


@pytest.mark.slow
class TestStudentNotebooksRunSecondHalf:
    @pytest.mark.parametrize("path", NOTEBOOKS[1::2], ids=str)
    def test_runs_in_quick_profile(self, path, edition, monkeypatch):
        run_student_notebook(path, edition, monkeypatch)
