"""Conventions every notebook of the book follows, in one place.

* The first code cell is the *setup cell* below, tagged ``remove-cell`` so that the
  rendered book does not show it: in Colab (or when ``DLBOOK_FORCE_SETUP=1``) it
  installs this library with the optional extras the notebook needs (never torch,
  which Colab ships) from the repository named in ``_config.yml``, or from the pip
  URL in ``DLBOOK_INSTALL_SOURCE`` when set
  (``git+file://localhost/path/to/checkout#subdirectory=lib``,
  say); when the install fails it stops with one message naming the URL it tried.
  Elsewhere it does nothing.
* No code line is longer than ``MAX_LINE`` (88) characters: the book's column shows
  about that many without scrolling.
* One code cell is tagged ``parameters`` (papermill) and defines ``profile``,
  ``device`` and ``seed`` (plus the notebook's sizes).
* Cells whose printed output nbval compares carry the ``nbval-check-output`` tag.

:func:`problems` lists the ways a notebook breaks these rules; the tests use it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

SETUP_TEMPLATE = '''\
# Setup (hidden in the book): in Colab, install the book's library; Colab has torch.
# Elsewhere this does nothing: a checkout's `make install` has installed it.
import importlib, os, subprocess, sys
if "google.colab" in sys.modules or os.environ.get("DLBOOK_FORCE_SETUP"):
    default = "{default}"
    url = os.environ.get("DLBOOK_INSTALL_SOURCE", default)
    pip = [sys.executable, "-m", "pip", "install", "-q", "{package} @ " + url]
    done = subprocess.run(pip, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(
            f"Could not install the book's library from {{url}} (no network, or a "
            "wrong URL?). Set DLBOOK_INSTALL_SOURCE to another pip URL, for "
            "example git+file://localhost/path/to/checkout#subdirectory=lib")
    importlib.invalidate_caches()'''

SETUP_TAG = "remove-cell"        # Jupyter Book does not render the setup cell
CHECK_TAG = "nbval-check-output"
MAX_LINE = 88                    # longest code line that fits the book's column
_EXTRAS = re.compile(r'"dlbook(?:\[([a-z0-9_,-]+)\])? @ "')


def repository(root: Path) -> tuple[str, str]:
    """``(url, branch)`` from ``_config.yml``'s ``repository`` section."""
    import yaml

    config = yaml.safe_load((Path(root) / "_config.yml").read_text())
    repo = config.get("repository") or {}
    if "url" not in repo:
        raise ValueError("_config.yml has no repository.url")
    return str(repo["url"]).rstrip("/"), str(repo.get("branch", "main"))


def install_url(url: str, branch: str = "main") -> str:
    """The pip URL of the library in the published repository (``git+...#subdirectory=lib``)."""
    return f"git+{url.rstrip('/')}@{branch}#subdirectory=lib"


def setup_cell_source(url: str, branch: str = "main", extras: Sequence[str] = ()) -> str:
    """The exact text of every notebook's first code cell.

    ``extras`` names optional dependency groups of ``lib/pyproject.toml`` (for example
    ``("graphs",)`` for PyTorch Geometric) that the notebook needs; the cell installs
    ``dlbook[extras] @ <url>``, so that Colab gets them the way a checkout does.
    """
    bad = [e for e in extras if not re.fullmatch(r"[a-z0-9_-]+", e)]
    if bad:
        raise ValueError(f"extras must be lower-case names of lib's optional groups: {bad}")
    package = f"dlbook[{','.join(extras)}]" if extras else "dlbook"
    return SETUP_TEMPLATE.format(default=install_url(url, branch), package=package)


def setup_extras(source: str) -> tuple[str, ...]:
    """The extras a setup cell installs (the inverse of :func:`setup_cell_source`)."""
    match = _EXTRAS.search(source)
    return tuple(match.group(1).split(",")) if match and match.group(1) else ()


def code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def long_lines(nb, limit: int = MAX_LINE) -> list[tuple[int, int, str]]:
    """``(cell index, line number, line)`` of every code line longer than ``limit``."""
    return [(i, n, line) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            for n, line in enumerate(cell.source.splitlines(), 1) if len(line) > limit]


_FIGSIZE = re.compile(r"figsize\s*=\s*\(\s*([0-9.]+)\s*,")
_FONTSIZE = re.compile(r"\b(?:fontsize|labelsize)\s*=\s*([0-9.]+|[\"'][a-z-]+[\"'])")
_SMALL = {"xx-small", "x-small", "small", "smaller"}


def figure_problems(nb) -> list[str]:
    """Figures that would not read at the book's width: a literal ``figsize`` wider than
    :data:`dlbook.plotting.FIGURE_WIDTH` or a font below :data:`dlbook.plotting.MIN_FONT_PT`."""
    from .plotting import FIGURE_WIDTH, MIN_FONT_PT

    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for match in _FIGSIZE.finditer(cell.source):
            if float(match.group(1)) > FIGURE_WIDTH:
                found.append(f"cell {i}: figsize width {match.group(1)} > {FIGURE_WIDTH} inches")
        for match in _FONTSIZE.finditer(cell.source):
            value = match.group(1).strip("\"'")
            small = value in _SMALL if value[0].isalpha() else float(value) < MIN_FONT_PT
            if small:
                found.append(f"cell {i}: {match.group(0)} is below the book's {MIN_FONT_PT} pt")
    return found


def png_size(data: str) -> tuple[int, int]:
    """``(width, height)`` in pixels of a base64-encoded PNG (a notebook's image/png)."""
    import base64
    import struct

    head = base64.b64decode("".join(data)[:44])
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG image")
    return struct.unpack(">II", head[16:24])


def image_problems(nb) -> list[str]:
    """Figure outputs wider than :data:`dlbook.plotting.MAX_IMAGE_PX`: the browser would
    scale them down, and their text with them (usually a legend or title outside the
    axes, which the inline backend's tight bounding box adds to the width)."""
    from .plotting import MAX_IMAGE_PX

    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            png = out.get("data", {}).get("image/png")
            if png:
                width, _ = png_size(png)
                if width > MAX_IMAGE_PX:
                    found.append(f"cell {i}: a figure is {width} px wide, more than the "
                                 f"column's {MAX_IMAGE_PX} px (move legends and long "
                                 "titles inside the figure)")
    return found


def problems(nb, url: str, branch: str = "main") -> list[str]:
    """What is wrong with a committed notebook (``nbformat`` node); empty if nothing.

    ``url`` and ``branch`` name the published repository (``_config.yml``), from
    which the setup cell must install the library.
    """
    found = []
    code = code_cells(nb)
    if not code:
        return ["has no code cell"]
    if code[0].source != setup_cell_source(url, branch, setup_extras(code[0].source)):
        found.append("first code cell is not the setup cell of dlbook.notebook.setup_cell_source")
    if SETUP_TAG not in code[0].metadata.get("tags", []):
        found.append(f"setup cell is not tagged {SETUP_TAG!r} (it would show in the book)")
    for i, n, line in long_lines(nb):
        found.append(f"cell {i} line {n} has {len(line)} > {MAX_LINE} characters: {line[:40]!r}...")
    found.extend(figure_problems(nb))
    found.extend(image_problems(nb))
    if any("injected-parameters" in c.metadata.get("tags", []) for c in code):
        found.append("holds papermill's injected-parameters cell (it would pin the profile under nbval)")
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    if len(params) != 1:
        found.append(f"needs exactly one cell tagged 'parameters', has {len(params)}")
    else:
        for name in ("profile", "device", "seed"):
            if not any(line.split("=")[0].strip() == name for line in params[0].source.splitlines()):
                found.append(f"parameters cell does not define {name!r}")
    if not any(c.get("execution_count") for c in code):
        found.append("is not executed (no execution counts)")
    for i, c in enumerate(code):
        for out in c.get("outputs", []):
            if out.get("output_type") == "error":
                found.append(f"code cell {i} holds an error output ({out.get('ename')})")
            text = out.get("text", "") if out.get("output_type") == "stream" else ""
            if "IProgress not found" in text or "Warning:" in text and out.get("name") == "stderr":
                found.append(f"code cell {i} prints a library warning on stderr: {text.strip()[:120]!r}")
    pm = nb.metadata.get("papermill", {})
    profile = pm.get("parameters", {}).get("profile")
    if profile != "full":
        found.append(f"was last executed with profile={profile!r} by papermill; commit a full-profile run "
                     "(make execute)")
    if not nb.cells or nb.cells[0].cell_type != "markdown" or not nb.cells[0].source.lstrip().startswith("# "):
        found.append("does not open with a markdown cell holding its '# title'")
    return found


_PROGRESS = re.compile(r"\d+%\|.*\|\s*\d+/\d+")


def strip_injected_parameters(nb) -> int:
    """Remove papermill's ``injected-parameters`` cell; returns how many were removed.

    The committed notebook must run unchanged under nbval in any profile: its own
    ``parameters`` cell reads the profile from the environment, while an injected
    ``profile = "full"`` would pin the profile of the last run. The injected values
    stay recorded in ``nb.metadata.papermill.parameters``.
    """
    before = len(nb.cells)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    return before - len(nb.cells)


def strip_progress_bars(nb) -> int:
    """Remove tqdm progress-bar outputs (widgets or text) from an executed notebook.

    A live notebook shows the bars while a loop runs and hides them when it ends
    (the book's loops use ``leave=False``); a stored widget only keeps its first
    frame ("0%"), which would mislead a reader of the rendered page. When no widget
    output is left, the widget state that Jupyter keeps in the notebook's metadata is
    dropped too (it only served the removed bars). Returns the number of outputs removed.
    """
    removed = 0
    for cell in code_cells(nb):
        kept = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            text = data.get("text/plain", "") if data else out.get("text", "")
            text = "".join(text) if isinstance(text, list) else text
            is_widget = "application/vnd.jupyter.widget-view+json" in data
            is_text_bar = out.get("output_type") == "stream" and out.get("name") == "stderr"
            if (is_widget or is_text_bar) and _PROGRESS.search(text):
                removed += 1
                continue
            kept.append(out)
        cell["outputs"] = kept
    widgets_left = any("application/vnd.jupyter.widget-view+json" in out.get("data", {})
                       for cell in code_cells(nb) for out in cell.get("outputs", []))
    if not widgets_left:
        nb.get("metadata", {}).pop("widgets", None)
    return removed


# --- Exercises ------------------------------------------------------------------------
# Every notebook ends with a markdown cell "## Exercises" and then 2-4 exercises, one
# markdown cell each, written with sphinx-exercise:
#
#     ```{exercise} A short title
#     :label: ex-<notebook-stem>-<k>          (underscores of the stem become hyphens)
#     :class: computational                   (omit for a pen-and-paper exercise)
#
#     The text of the exercise.
#     ```
#
# A computational exercise is followed by its solution, gated by sphinx-exercise's
# ``solution-start`` / ``solution-end`` (two markdown cells) with code cells between
# them, all tagged ``solution`` (nbconvert's TagRemovePreprocessor drops them for the
# student edition) and at least one of the code cells also tagged ``nbval-check-output``
# so that CI compares its output. The book shows the solution collapsed (dropdown).

SOLUTION_TAG = "solution"
MIN_EXERCISES, MAX_EXERCISES = 2, 4
_EXERCISE = re.compile(r"^```\{exercise\}[^\n]*\n:label: (\S+)\n((?::\w+:[^\n]*\n)*)", re.M)
_SOLUTION_START = re.compile(r"^```\{solution-start\} (\S+)\n:class: dropdown\n```\s*$")
_SOLUTION_END = re.compile(r"^```\{solution-end\}\n```\s*$")


def exercise_label(stem: str, k: int) -> str:
    """The label of exercise ``k`` of the notebook whose file stem is ``stem``."""
    return f"ex-{stem.replace('_', '-')}-{k}"


def solution_start_source(label: str) -> str:
    return f"```{{solution-start}} {label}\n:class: dropdown\n```"


SOLUTION_END_SOURCE = "```{solution-end}\n```"


def exercises(nb) -> list[dict]:
    """The exercises of a notebook: ``{"label", "computational", "cell"}`` in order."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        for match in _EXERCISE.finditer(cell.source):
            options = match.group(2)
            found.append({"label": match.group(1), "cell": i,
                          "computational": ":class: computational" in options})
    return found


def solution_blocks(nb) -> dict[str, list[int]]:
    """``label -> indices of the cells inside its solution block`` (start and end included)."""
    blocks, current, start = {}, None, None
    for i, cell in enumerate(nb.cells):
        text = cell.source.strip() if cell.cell_type == "markdown" else ""
        match = _SOLUTION_START.match(text)
        if match:
            current, start = match.group(1), i
        elif _SOLUTION_END.match(text) and current is not None:
            blocks[current] = list(range(start, i + 1))
            current = None
    return blocks


def exercise_problems(nb, stem: str) -> list[str]:
    """What breaks the exercise convention above; empty if nothing."""
    found = []
    heads = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "markdown" and c.source.lstrip().startswith("## Exercises")]
    if len(heads) != 1:
        return [f"needs exactly one '## Exercises' markdown cell, has {len(heads)}"]
    listed = exercises(nb)
    if not MIN_EXERCISES <= len(listed) <= MAX_EXERCISES:
        found.append(f"has {len(listed)} exercises; the book asks for {MIN_EXERCISES}-{MAX_EXERCISES}")
    if not any(e["computational"] for e in listed):
        found.append("has no computational exercise (':class: computational')")
    for k, ex in enumerate(listed, 1):
        if ex["label"] != exercise_label(stem, k):
            found.append(f"exercise {k} is labelled {ex['label']!r}, expected {exercise_label(stem, k)!r}")
        if ex["cell"] < heads[0]:
            found.append(f"exercise {ex['label']} stands before the '## Exercises' heading")
    blocks = solution_blocks(nb)
    inside = {i for cells in blocks.values() for i in cells}
    labels = {e["label"] for e in listed}
    for label, cells in blocks.items():
        if label not in labels:
            found.append(f"solution block for unknown exercise {label!r}")
        code = [i for i in cells if nb.cells[i].cell_type == "code"]
        if any(e["label"] == label and e["computational"] for e in listed):
            if not code:
                found.append(f"solution of {label} has no code cell")
            elif not any(CHECK_TAG in nb.cells[i].metadata.get("tags", []) for i in code):
                found.append(f"solution of {label} has no code cell tagged {CHECK_TAG!r}")
        for i in cells:
            if SOLUTION_TAG not in nb.cells[i].metadata.get("tags", []):
                found.append(f"cell {i} is inside the solution of {label} but not tagged {SOLUTION_TAG!r}")
    for ex in listed:
        if ex["computational"] and ex["label"] not in blocks:
            found.append(f"computational exercise {ex['label']} has no solution block")
    for i, cell in enumerate(nb.cells):
        if SOLUTION_TAG in cell.metadata.get("tags", []) and i not in inside:
            found.append(f"cell {i} is tagged {SOLUTION_TAG!r} outside every solution block")
    return found


def write_setup_cells(root: Path) -> list[Path]:
    """Rewrite the setup cell of every notebook under ``root/chapters`` from ``_config.yml``
    (keeping each notebook's extras and the ``remove-cell`` tag); returns the changed files.

    Run it (``make setup-cells``) after changing ``repository.url`` or ``branch``.
    """
    import nbformat

    url, branch = repository(root)
    changed = []
    for path in sorted(Path(root, "chapters").rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        nb = nbformat.read(path, as_version=4)
        cell = code_cells(nb)[0]
        source = setup_cell_source(url, branch, setup_extras(cell.source))
        tags = cell.metadata.setdefault("tags", [])
        if cell.source != source or SETUP_TAG not in tags:
            cell.source = source
            if SETUP_TAG not in tags:
                tags.insert(0, SETUP_TAG)
            nbformat.write(nb, path)
            changed.append(path)
    return changed


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Book-wide notebook maintenance.")
    parser.add_argument("command", choices=["setup-cells"],
                        help="setup-cells: rewrite every notebook's setup cell from _config.yml")
    parser.add_argument("--root", type=Path, default=Path("."))
    args = parser.parse_args()
    for path in write_setup_cells(args.root):
        print(f"rewrote the setup cell of {path}")
