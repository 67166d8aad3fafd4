"""The notebook runner: in place, a summary, failures reported without stopping the others."""
import json
import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from dlbook import execute


def make_notebook(path, body):
    nb = new_notebook(cells=[
        new_markdown_cell("# A test notebook"),
        new_code_cell('profile = "full"\ndevice = "auto"\nseed = 0', metadata={"tags": ["parameters"]}),
        new_code_cell(body),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_runner_continues_after_failure_and_records(tmp_path, monkeypatch, capsys):
    (tmp_path / "chapters").mkdir()
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: chapters/intro\nchapters:\n- file: chapters/bad\n- file: chapters/good\n")
    (tmp_path / "chapters" / "intro.md").write_text("# Intro\n")
    make_notebook(tmp_path / "chapters" / "bad.ipynb", 'raise ValueError("boom")')
    make_notebook(tmp_path / "chapters" / "good.ipynb",
                  'import os, pathlib\nprint(profile, os.environ["DLBOOK_PROFILE"], pathlib.Path.cwd().name)')
    bad_before = (tmp_path / "chapters" / "bad.ipynb").read_text()
    monkeypatch.chdir(tmp_path)

    status = execute.main(["--profile", "quick", "--device", "cpu", "--no-progress"])
    out, err = capsys.readouterr()

    assert status == 1
    assert "chapters/bad.ipynb: cell [" in err and "ValueError: boom" in err
    assert "FAILED" in out and "chapters/good.ipynb" in out and "seconds" in out
    # the failing notebook is untouched; its failed copy is kept for inspection
    assert (tmp_path / "chapters" / "bad.ipynb").read_text() == bad_before
    assert (tmp_path / "_build" / "failed" / "bad.ipynb").is_file()
    # the good one ran after the failure, in place, from its own folder, with the profile injected
    good = nbformat.read(tmp_path / "chapters" / "good.ipynb", as_version=4)
    assert good.metadata.papermill.parameters.profile == "quick"
    assert good.cells[-1].outputs[0].text.strip() == "quick quick chapters"
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in good.cells)
    record = json.loads((tmp_path / "chapters" / "executions.json").read_text())
    assert list(record) == ["chapters/good.ipynb"] and record["chapters/good.ipynb"]["profile"] == "quick"
    assert record["chapters/good.ipynb"]["threads"] == os.environ.get("DLBOOK_THREADS", "default")
    assert record["chapters/good.ipynb"]["timings"] == {"quick, cpu": record["chapters/good.ipynb"]["seconds"]}
    page = (tmp_path / "chapters" / "executions.md").read_text()
    assert "| [A test notebook](good.ipynb) |" in page and "| quick, cpu | 1 |" in page

    # --time-only: the seconds are recorded, the notebook and its committed run are not touched
    before = (tmp_path / "chapters" / "good.ipynb").read_text()
    assert execute.main(["--profile", "full", "--device", "cpu", "--no-progress", "--time-only",
                         "chapters/good.ipynb"]) == 0
    assert (tmp_path / "chapters" / "good.ipynb").read_text() == before
    entry = json.loads((tmp_path / "chapters" / "executions.json").read_text())["chapters/good.ipynb"]
    assert entry["profile"] == "quick" and set(entry["timings"]) == {"quick, cpu", "full, cpu"}
    assert "| full, cpu | 1 |" in (tmp_path / "chapters" / "executions.md").read_text()


def test_runner_rejects_bad_arguments(tmp_path, monkeypatch, capsys):
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    monkeypatch.chdir(tmp_path)
    for args in (["--profile", "fast"], ["missing.ipynb"]):
        try:
            execute.main(args)
        except SystemExit as exc:
            assert exc.code == 2
        else:
            raise AssertionError(f"{args} should be rejected")
    assert "unknown profile 'fast'" in capsys.readouterr().err


def test_summary_table():
    table = execute.summary_table([execute.Outcome("a.ipynb", True, 1.25), execute.Outcome("bb.ipynb", False, 3.0)])
    assert table.splitlines()[2].split() == ["a.ipynb", "ok", "1.2"]
    assert table.splitlines()[3].split() == ["bb.ipynb", "FAILED", "3.0"]
