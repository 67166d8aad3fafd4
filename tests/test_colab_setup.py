"""The Colab path: a notebook's first cell installs the library where it is missing.

The slow tests build a fresh virtual environment that sees the book's dependencies
(torch, numpy, ipykernel...) but not `dlbook`, make a bare git clone of this
checkout (its committed HEAD) in a temporary folder, copy a notebook to a temporary
directory, and run it there with papermill in that environment, with
DLBOOK_FORCE_SETUP=1 standing in for Colab and DLBOOK_INSTALL_SOURCE set to a
`git+file://` URL of the clone: the same `pip install "dlbook[...] @ git+..."` that
Colab runs against the published repository. One of the notebooks needs an optional
extra (chapter 06's `tokens`, Hugging Face `tokenizers`), which the fresh environment
lacks until the setup cell installs it.
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

from dlbook.notebook import install_url, repository, setup_cell_source

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"


class FakeSubprocess:
    """Stands in for `subprocess` in the setup cell: records calls, returns `returncode`."""

    def __init__(self, returncode=0):
        self.calls, self.returncode = [], returncode

    def run(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return type("Done", (), {"returncode": self.returncode, "stderr": "ERROR: boom"})()


def run_setup_cell(env, extras=(), returncode=0):
    fake = FakeSubprocess(returncode)
    code = setup_cell_source(*repository(ROOT), extras).replace(
        "import importlib, os, subprocess, sys", "import importlib, os, sys")
    old = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        exec(code, {"subprocess": fake})
    finally:
        os.environ.clear()
        os.environ.update(old)
    return fake.calls


def test_setup_cell_does_nothing_outside_colab():
    assert "google.colab" not in sys.modules
    assert run_setup_cell({}) == []


def test_setup_cell_installs_from_repository_in_colab():
    (args,), kwargs = run_setup_cell({"DLBOOK_FORCE_SETUP": "1"})[0]
    url = install_url(*repository(ROOT))
    assert url.startswith("git+https://") and url.endswith("#subdirectory=lib")
    assert args[1:5] == ["-m", "pip", "install", "-q"]
    assert args[5:] == [f"dlbook @ {url}"]
    (args,), _ = run_setup_cell({"DLBOOK_FORCE_SETUP": "1"}, extras=("graphs",))[0]
    assert args[5:] == [f"dlbook[graphs] @ {url}"]
    (args,), _ = run_setup_cell({"DLBOOK_FORCE_SETUP": "1",
                                 "DLBOOK_INSTALL_SOURCE": "git+file:///x#subdirectory=lib"})[0]
    assert args[5:] == ["dlbook @ git+file:///x#subdirectory=lib"]


def test_failed_install_stops_with_one_clear_message():
    with pytest.raises(SystemExit) as stop:
        run_setup_cell({"DLBOOK_FORCE_SETUP": "1"}, returncode=1)
    message = str(stop.value)
    assert install_url(*repository(ROOT)) in message
    assert "DLBOOK_INSTALL_SOURCE" in message and "Traceback" not in message


def filtered_site_packages(target: Path, without=()) -> Path:
    """A folder of links to this environment's packages, minus dlbook (and its editable
    hook) and the distributions named in ``without``."""
    target.mkdir()
    drop = ("dlbook", *(name.lower() for name in without))
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = entry.name.lower()
        if entry.name.endswith(".pth") or any(name == d or name.startswith(d + "-") for d in drop):
            continue
        (target / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return target


@pytest.fixture(scope="module")
def bare_clone(tmp_path_factory):
    """A bare git clone of this checkout: a stand-in for the published repository."""
    target = tmp_path_factory.mktemp("remote") / "dlbook.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(ROOT), str(target)], check=True)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True,
                            capture_output=True, text=True).stdout.strip()
    return f"git+file://localhost{target}@{commit}#subdirectory=lib"


def fresh_environment(tmp_path, without=()):
    """A venv that sees this environment's packages except dlbook and ``without``."""
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    deps = filtered_site_packages(tmp_path / "deps", without)
    Path(purelib, "book_deps.pth").write_text(f"{deps}\n")
    for module in ("dlbook", *without):
        probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True,
                               cwd=tmp_path)
        assert probe.returncode != 0 and f"No module named '{module}'" in probe.stderr
    kernels = tmp_path / "jupyter" / "kernels" / "fresh"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fresh venv", "language": "python"}))
    return python


@pytest.mark.slow
@pytest.mark.parametrize("notebook, missing", [
    ("00_introduction/ai_growth.ipynb", ()),
    ("06_tokens/bpe_tokenizer.ipynb", ("tokenizers",)),   # needs the `tokens` extra
], ids=["plain", "with-extra"])
def test_notebook_installs_library_from_git(notebook, missing, bare_clone, tmp_path, monkeypatch):
    python = fresh_environment(tmp_path, without=missing)
    source = CHAPTERS / notebook
    workdir = tmp_path / "colab"
    workdir.mkdir()
    shutil.copy(source, workdir / source.name)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("DLBOOK_FORCE_SETUP", "1")
    monkeypatch.setenv("DLBOOK_INSTALL_SOURCE", bare_clone)
    monkeypatch.setenv("DLBOOK_PROFILE", "quick")
    monkeypatch.setenv("DLBOOK_DATA", str(ROOT / "data"))
    monkeypatch.delenv("PYTHONPATH", raising=False)

    pm.execute_notebook(str(workdir / source.name), str(workdir / "out.ipynb"), kernel_name="fresh",
                        parameters={"profile": "quick"}, cwd=str(workdir), progress_bar=False)

    for module in ("dlbook", *missing):
        where = subprocess.run([python, "-c", f"import {module}; print({module}.__file__)"],
                               capture_output=True, text=True, cwd=tmp_path, check=True).stdout.strip()
        assert where.startswith(str(tmp_path / "venv")), f"{module} should now be in the fresh venv: {where}"
