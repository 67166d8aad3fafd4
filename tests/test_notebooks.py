"""The committed book: every notebook listed, executed in the full profile, following the conventions."""
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from dlbook import execute
from dlbook.notebook import SETUP_TAG, problems, repository, setup_cell_source, setup_extras

ROOT = Path(__file__).resolve().parents[1]
URL, BRANCH = repository(ROOT)
SETUP = setup_cell_source(URL, BRANCH)
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
    assert problems(nb, URL, BRANCH) == []


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
        new_code_cell(SETUP, execution_count=1, metadata={"tags": [SETUP_TAG]}),
        new_code_cell('profile = "full"\ndevice = "auto"\nseed = 0', metadata={"tags": ["parameters"]},
                      execution_count=2),
    ])
    nb.metadata["papermill"] = {"parameters": {"profile": "full", "device": "cpu"}}
    return nb


def test_problems_detects_each_defect():
    assert problems(good_notebook(), URL, BRANCH) == []
    nb = good_notebook()
    nb.metadata.papermill.parameters.profile = "quick"
    assert any("profile='quick'" in p for p in problems(nb, URL, BRANCH))
    nb = good_notebook()
    nb.cells[2].metadata.tags = []
    assert any("parameters" in p for p in problems(nb, URL, BRANCH))
    nb = good_notebook()
    for cell in nb.cells[1:]:
        cell.execution_count = None
    assert any("not executed" in p for p in problems(nb, URL, BRANCH))
    nb = good_notebook()
    nb.cells[2].outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="x", traceback=[])]
    assert any("error output (ValueError)" in p for p in problems(nb, URL, BRANCH))
    nb = good_notebook()
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stderr", text="IProgress not found.")]
    assert any("library warning" in p for p in problems(nb, URL, BRANCH))
    nb = good_notebook()
    nb.cells.insert(3, new_code_cell('profile = "full"', metadata={"tags": ["injected-parameters"]}))
    assert any("injected-parameters" in p for p in problems(nb, URL, BRANCH))
    nb = good_notebook()
    nb.cells[1].source = "pass"
    assert any("setup cell" in p for p in problems(nb, URL, BRANCH))
    nb = good_notebook()
    nb.cells[1].metadata.tags = []
    assert any("not tagged 'remove-cell'" in p for p in problems(nb, URL, BRANCH))
    nb = good_notebook()
    nb.cells[2].source += "\nx = " + "1 + " * 30 + "1"
    assert any("> 88 characters" in p for p in problems(nb, URL, BRANCH))
    nb = good_notebook()
    nb.cells[1].source = setup_cell_source(URL, BRANCH, ("graphs",))
    assert problems(nb, URL, BRANCH) == []


def test_setup_cell_never_installs_torch():
    assert '"torch"' not in SETUP and "'torch'" not in SETUP and " torch " not in SETUP
    assert '"dlbook @ "' in SETUP


def test_setup_cell_extras():
    cell = setup_cell_source(URL, BRANCH, ("graphs", "tokens"))
    assert '"dlbook[graphs,tokens] @ "' in cell
    assert setup_extras(cell) == ("graphs", "tokens") and setup_extras(SETUP) == ()
    with pytest.raises(ValueError, match="extras"):
        setup_cell_source(URL, BRANCH, ("Graphs; rm -rf",))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=str)
def test_setup_extras_are_declared_in_lib(path):
    """Every extra a setup cell installs exists in lib/pyproject.toml."""
    import tomllib

    declared = tomllib.loads((ROOT / "lib" / "pyproject.toml").read_text())
    groups = declared["project"]["optional-dependencies"]
    nb = nbformat.read(ROOT / path, as_version=4)
    for extra in setup_extras(nb.cells[[c.cell_type for c in nb.cells].index("code")].source):
        assert extra in groups, f"{path} installs dlbook[{extra}], which lib does not declare"


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


def test_figure_problems_finds_wide_figures_and_small_fonts():
    from dlbook.notebook import figure_problems

    nb = good_notebook()
    assert figure_problems(nb) == []
    nb.cells[2].source += "\nfig, ax = plt.subplots(figsize=(11, 3))\nax.set_title('t', fontsize=8)"
    found = " | ".join(figure_problems(nb))
    assert "figsize width 11" in found and "fontsize=8" in found
    assert any("figsize width 11" in p for p in problems(nb, URL, BRANCH))


def _png_output(width: int, height: int) -> dict:
    import base64
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    data = {"image/png": base64.b64encode(buffer.getvalue()).decode()}
    return nbformat.v4.new_output("display_data", data=data)


def test_image_problems_finds_figures_wider_than_the_column():
    from dlbook.notebook import image_problems, png_size
    from dlbook.plotting import MAX_IMAGE_PX

    nb = good_notebook()
    nb.cells[2].outputs = [_png_output(660, 250)]
    assert png_size(nb.cells[2].outputs[0]["data"]["image/png"]) == (660, 250)
    assert image_problems(nb) == []
    nb.cells[2].outputs = [_png_output(MAX_IMAGE_PX + 20, 250)]
    found = image_problems(nb)
    assert len(found) == 1 and f"{MAX_IMAGE_PX + 20} px wide" in found[0]
    assert any("px wide" in p for p in problems(nb, URL, BRANCH))
    with pytest.raises(ValueError, match="not a PNG"):
        png_size("R0lGODlhAQABAAAAACw=")       # a GIF


CONCLUSION = ROOT / "chapters/21_conclusion/conclusion.md"


def _quoted_results(markdown: str) -> list[tuple[str, str]]:
    """(linked notebook, "ours" cell) for every row of the conclusion's results table."""
    import re
    rows = []
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        link = re.match(r"\[[^\]]+\]\(\.\./([^)]+\.ipynb)\)", cells[0]) if cells else None
        if link and len(cells) >= 3:
            rows.append((link.group(1), cells[1]))
    return rows


def _output_text(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") if out.output_type == "stream"
                         else out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def test_conclusion_quotes_only_printed_results():
    """Every decimal number in the "ours" column of the conclusion's table is printed by
    an output of the notebook that the row links to."""
    import re
    rows = _quoted_results(CONCLUSION.read_text())
    assert len(rows) >= 10, "the conclusion's results table was not found"
    for notebook, ours in rows:
        outputs = _output_text(ROOT / "chapters" / notebook).replace("−", "-")
        numbers = re.findall(r"-?\d+\.\d+", ours.replace("−", "-"))
        assert numbers, f"no number quoted for {notebook}: {ours!r}"
        for number in numbers:
            assert number in outputs, f"{number} ({notebook}) is not printed by the notebook"
