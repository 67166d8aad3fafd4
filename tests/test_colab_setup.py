"""The Colab path: a notebook's first cell installs the library where it is missing.

The test builds a fresh virtual environment that sees the book's dependencies
(torch, numpy, ipykernel...) but not `dlbook`, copies a notebook to a temporary
directory, and runs it there with papermill in that environment, with
DLBOOK_FORCE_SETUP=1 standing in for Colab and DLBOOK_INSTALL_SOURCE pointing at
this checkout's lib/ instead of the repository URL.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import papermill as pm
import pytest

from dlbook.notebook import repository, setup_cell_source

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "chapters" / "00_introduction" / "ai_growth.ipynb"


def run_setup_cell(env):
    calls = []
    fake_subprocess = type("S", (), {"run": staticmethod(lambda *a, **k: calls.append((a, k)))})
    code = setup_cell_source(*repository(ROOT)).replace("import importlib, os, subprocess, sys",
                                                        "import importlib, os, sys")
    old = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        exec(code, {"subprocess": fake_subprocess})
    finally:
        os.environ.clear()
        os.environ.update(old)
    return calls


def test_setup_cell_does_nothing_outside_colab():
    assert "google.colab" not in sys.modules
    assert run_setup_cell({}) == []


def test_setup_cell_installs_from_repository_in_colab():
    calls = run_setup_cell({"DLBOOK_FORCE_SETUP": "1"})
    (args,), kwargs = calls[0]
    url, branch = repository(ROOT)
    assert args[1:5] == ["-m", "pip", "install", "-q"]
    assert args[5] == f"git+{url}@{branch}#subdirectory=lib" and args[6] == "torch-geometric"
    assert kwargs == {"check": True}
    (args,), _ = run_setup_cell({"DLBOOK_FORCE_SETUP": "1", "DLBOOK_INSTALL_SOURCE": "/x/lib"})[0]
    assert args[5] == "/x/lib"


def filtered_site_packages(target: Path) -> Path:
    """A folder of links to this environment's packages, minus dlbook and its editable hook."""
    target.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if "dlbook" in entry.name.lower() or entry.name.endswith(".pth"):
            continue
        (target / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return target


@pytest.mark.slow
def test_notebook_installs_library_in_fresh_environment(tmp_path, monkeypatch):
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    deps = filtered_site_packages(tmp_path / "deps")
    Path(purelib, "book_deps.pth").write_text(f"{deps}\n")
    probe = subprocess.run([python, "-c", "import dlbook"], capture_output=True, text=True, cwd=tmp_path)
    assert probe.returncode != 0 and "No module named 'dlbook'" in probe.stderr

    kernels = tmp_path / "jupyter" / "kernels" / "fresh"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fresh venv", "language": "python"}))
    workdir = tmp_path / "colab"
    workdir.mkdir()
    shutil.copy(NOTEBOOK, workdir / NOTEBOOK.name)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("DLBOOK_FORCE_SETUP", "1")
    monkeypatch.setenv("DLBOOK_INSTALL_SOURCE", str(ROOT / "lib"))
    monkeypatch.setenv("DLBOOK_PROFILE", "quick")
    monkeypatch.delenv("PYTHONPATH", raising=False)

    pm.execute_notebook(str(workdir / NOTEBOOK.name), str(workdir / "out.ipynb"), kernel_name="fresh",
                        parameters={"profile": "quick"}, cwd=str(workdir), progress_bar=False)

    where = subprocess.run([python, "-c", "import dlbook; print(dlbook.__file__)"], capture_output=True,
                           text=True, cwd=tmp_path, check=True).stdout.strip()
    assert where.startswith(str(venv)), f"dlbook should now be installed in the fresh venv, found {where}"
