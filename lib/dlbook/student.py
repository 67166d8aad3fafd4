"""The student edition: every notebook without its solutions, ready to hand out.

    python -m dlbook.student --out _build/student        (make student)

Each notebook of ``_toc.yml`` goes through nbconvert's ``TagRemovePreprocessor``
(removing every cell tagged ``solution``: the gated ``solution-start``/``solution-end``
markers and the solution code between them, see :mod:`dlbook.notebook`) and
``ClearOutputPreprocessor`` (no outputs, no execution counts), and is written under
``out`` with the book's folder layout. The exercises, the setup cell and the
``parameters`` cell stay, so a student notebook runs in Colab or a checkout as the
book's own does, up to the exercises, which are left to the student.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .notebook import SOLUTION_TAG


def student_notebook(path: Path):
    """The student version of one notebook (an ``nbformat`` node)."""
    import nbformat
    from nbconvert.preprocessors import ClearOutputPreprocessor, TagRemovePreprocessor
    from traitlets.config import Config

    config = Config()
    config.TagRemovePreprocessor.remove_cell_tags = {SOLUTION_TAG}
    config.TagRemovePreprocessor.enabled = True
    nb = nbformat.read(path, as_version=4)
    resources: dict = {}
    for pre in (TagRemovePreprocessor(config=config), ClearOutputPreprocessor()):
        nb, resources = pre.preprocess(nb, resources)
    nb.metadata.pop("papermill", None)
    return nb


def write_student_edition(root: Path, out: Path) -> list[Path]:
    """Write the student edition of every notebook in ``_toc.yml``; returns the paths."""
    import nbformat

    from .execute import toc_notebooks

    written = []
    for rel in toc_notebooks(root):
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(student_notebook(root / rel), target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    from .execute import book_root

    parser = argparse.ArgumentParser(prog="python -m dlbook.student", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("_build/student"))
    args = parser.parse_args(argv)
    written = write_student_edition(book_root(), args.out)
    print(f"wrote {len(written)} student notebooks under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
