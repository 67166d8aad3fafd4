"""The committed book: every notebook listed, executed in the full profile, following the conventions."""
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from dlbook import execute
from dlbook.notebook import problems, repository, setup_cell_source

ROOT = Path(__file__).resolve().parents[1]
SETUP = setup_cell_source(*repository(ROOT))
TOC = execute.toc_entries(ROOT)
NOTEBOOKS = sorted(p.relative_to(ROOT) for p in (ROOT / "chapters").rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)


def test_toc_entries_exist():
    for entry in TOC:
        assert any((ROOT / f"{entry}{ext}").is_file() for ext in ("", ".md", ".ipynb")), \
            f"_toc.yml names {entry}, which does not exist"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=str)
def test_notebook_is_in_toc(path):
    assert path.with_suffix("").as_posix() in TOC, f"{path} is not listed in _toc.yml"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=str)
def test_notebook_follows_conventions(path):
    nb = nbformat.read(ROOT / path, as_version=4)
    assert problems(nb, SETUP) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=str)
def test_parameters_cell_parses(path, caplog):
    """papermill reads every line of the parameters cell (it warns and skips the ones it
    cannot parse, which `make execute` would then not override)."""
    import papermill

    with caplog.at_level("WARNING", logger="papermill"):
        params = papermill.inspect_notebook(str(ROOT / path))
    assert not [r.message for r in caplog.records if "Unable to parse" in r.message]
    assert {"profile", "device", "seed"} <= set(params)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=str)
def test_notebook_execution_recorded(path):
    import json

    record = json.loads((ROOT / "chapters" / "executions.json").read_text())
    assert path.as_posix() in record, f"{path} has no entry in chapters/executions.json (run make execute)"
    assert record[path.as_posix()]["profile"] == "full"


def good_notebook():
    nb = new_notebook(cells=[
        new_markdown_cell("# Title"),
        new_code_cell(SETUP, execution_count=1),
        new_code_cell('profile = "full"\ndevice = "auto"\nseed = 0', metadata={"tags": ["parameters"]},
                      execution_count=2),
    ])
    nb.metadata["papermill"] = {"parameters": {"profile": "full", "device": "cpu"}}
    return nb


def test_problems_detects_each_defect():
    assert problems(good_notebook(), SETUP) == []
    nb = good_notebook()
    nb.metadata.papermill.parameters.profile = "quick"
    assert any("profile='quick'" in p for p in problems(nb, SETUP))
    nb = good_notebook()
    nb.cells[2].metadata.tags = []
    assert any("parameters" in p for p in problems(nb, SETUP))
    nb = good_notebook()
    for cell in nb.cells[1:]:
        cell.execution_count = None
    assert any("not executed" in p for p in problems(nb, SETUP))
    nb = good_notebook()
    nb.cells[2].outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="x", traceback=[])]
    assert any("error output (ValueError)" in p for p in problems(nb, SETUP))
    nb = good_notebook()
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stderr", text="IProgress not found.")]
    assert any("library warning" in p for p in problems(nb, SETUP))
    nb = good_notebook()
    nb.cells.insert(3, new_code_cell('profile = "full"', metadata={"tags": ["injected-parameters"]}))
    assert any("injected-parameters" in p for p in problems(nb, SETUP))
    nb = good_notebook()
    nb.cells[1].source = "pass"
    assert any("setup cell" in p for p in problems(nb, SETUP))


def test_setup_cell_never_installs_torch():
    assert "torch-geometric" in SETUP
    assert '"torch"' not in SETUP and "'torch'" not in SETUP and " torch " not in SETUP


def test_strip_progress_bars_keeps_other_outputs():
    from dlbook.notebook import strip_progress_bars

    nb = good_notebook()
    widget = nbformat.v4.new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "x"},
        "text/plain": "training:   0%|          | 0/40 [00:00<?, ?it/s]"})
    text_bar = nbformat.v4.new_output("stream", name="stderr", text="width 4:  50%|#####     | 2/4 [00:01<00:01]")
    printed = nbformat.v4.new_output("stream", name="stdout", text="accuracy 0.97")
    nb.cells[2].outputs = [widget, printed, text_bar]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    assert strip_progress_bars(nb) == 2
    assert nb.cells[2].outputs == [printed]
    assert "widgets" not in nb.metadata       # the state of the removed bars goes too
