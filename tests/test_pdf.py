"""`make pdf`: the whole book as one PDF, built with Jupyter Book's LaTeX builder and XeLaTeX.

The test builds it into a temporary folder (about a minute and a half on two cores) and
reads it back with poppler's tools: every chapter's and every notebook's title is in the
text, no raw TeX delimiters are left, and the figures are embedded.
"""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from dlbook.execute import chapters_of, notebook_title, toc_notebooks

ROOT = Path(__file__).resolve().parents[1]


def normal(text: str) -> str:
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    text = re.sub(r"-\s*\n\s*", "-", text)           # a title broken after a hyphen
    return re.sub(r"\s+", " ", text)


@pytest.fixture(scope="module")
def pdf(tmp_path_factory):
    for tool in ("xelatex", "latexmk", "pdftotext", "pdfimages"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: `make tex` (part of `make test`) installs it")
    out = tmp_path_factory.mktemp("pdf")
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jb), "build", str(ROOT), "--builder", "pdflatex", "--path-output", str(out),
                           "--keep-going"], capture_output=True, text=True)
    book = out / "_build" / "latex" / "book.pdf"
    assert proc.returncode == 0 and book.is_file(), (proc.stdout + proc.stderr)[-5000:]
    return book


@pytest.mark.slow
def test_pdf_has_every_chapter_no_raw_tex_and_its_figures(pdf):
    text = normal(subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True,
                                 check=True).stdout)
    titles = [title for title, _ in chapters_of(ROOT)]
    titles += [notebook_title(ROOT / nb) for nb in toc_notebooks(ROOT)]
    missing = [t for t in titles if normal(t) not in text]
    assert not missing, f"titles not found in the PDF: {missing}"
    for raw in ("\\[", "\\]", "$$", "\\begin{equation"):
        assert raw not in text, f"raw TeX {raw!r} in the PDF"
    listing = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True,
                             check=True).stdout.splitlines()[2:]
    figures = sum(1 for nb in toc_notebooks(ROOT) for c in nbformat.read(ROOT / nb, 4).cells
                  if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    assert len(listing) >= figures > 50, f"{len(listing)} images embedded for {figures} figures"
    pages = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert int(re.search(r"Pages:\s+(\d+)", pages).group(1)) > 100
