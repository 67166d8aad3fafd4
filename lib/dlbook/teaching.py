"""The page for teachers, built from the book's own records: ``make teaching``.

    python -m dlbook.teaching          # writes chapters/teaching.md and its figure

What a teacher needs to plan a course comes from three places: the chapters'
prerequisites (:data:`PREREQUISITES`, the one editorial input, drawn as a figure),
the notebooks themselves (their exercises, the data sets they load, the optional extras
their setup cell installs) and ``chapters/executions.json`` (the full-profile time of
each notebook's last recorded run). Nothing on the page is typed by hand:
``tests/test_teaching.py`` regenerates it and fails when the committed page is stale.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

PAGE = Path("chapters/teaching.md")
FIGURE = Path("chapters/teaching_dependencies.png")

# Which earlier chapters each chapter builds on (by chapter number): the editorial input.
PREREQUISITES: dict[str, tuple[str, ...]] = {
    "00": (), "01": ("00",), "02": ("01",), "03": ("01", "02"), "04": ("02", "03"),
    "05": ("03",), "06": ("01",), "07": ("03", "06"), "08": ("01",), "09": ("07", "08"),
    "10": ("09",), "11": ("02", "09"), "12": ("02",), "13": ("12",), "14": ("09", "13", "05"),
    "15": ("02", "05"),
    "16": ("02", "05"), "17": ("05", "16"),
    "18": ("07",), "19": ("02", "03"), "20": ("02", "05", "09"),
}

# Chapters whose long runs are spent stepping environments on the CPU, not in tensor
# operations: the teaching page does not promise that a GPU speeds them up.
CPU_BOUND = {"19"}

# Two course plans: week -> chapters. Each plan respects PREREQUISITES (tested).
COURSES: dict[str, list[tuple[str, ...]]] = {
    "12 weeks": [("00", "01"), ("02",), ("03",), ("04",), ("05",), ("06",), ("07",),
                 ("08", "09"), ("10",), ("11",), ("12",), ("13", "14")],
    "6 weeks": [("00", "01", "02"), ("03", "05"), ("06", "07"), ("08", "09"), ("11",),
                ("12", "13")],
}

_DATA = {"load_mnist": "MNIST", "mnist_splits": "MNIST", "load_digits": "scikit-learn digits",
         "load_planetoid": "Cora",
         "load_tudataset": "ENZYMES", "load_fashion_mnist": "Fashion-MNIST",
         "load_adult": "UCI Adult", "load_compas": "COMPAS"}
_TEXTS = {"tinyshakespeare": "Tiny Shakespeare", "ptb": "Penn Treebank"}


def chapter_number(folder: str) -> str:
    return Path(folder).name.split("_", 1)[0]


def notebook_facts(path: Path) -> dict:
    """Exercises, data sets and extras of one notebook, read from its cells."""
    import nbformat

    from .notebook import code_cells, exercises, setup_extras

    nb = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in code_cells(nb))
    found = {name for fn, name in _DATA.items() if re.search(rf"\b{fn}\(", code)}
    for key, name in _TEXTS.items():
        if re.search(rf"load_text\([^)]*{key}", code):
            found.add(name)
    listed = exercises(nb)
    return {"exercises": len(listed), "computational": sum(e["computational"] for e in listed),
            "data": sorted(found), "extras": list(setup_extras(code_cells(nb)[0].source))}


def chapter_rows(root: Path) -> list[dict]:
    """One row per chapter: title, notebooks, full-profile minutes, exercises, data, extras."""
    from .execute import chapters_of

    record = json.loads((root / "chapters" / "executions.json").read_text())
    rows = []
    for title, notebooks in chapters_of(root):
        facts = [notebook_facts(root / nb) for nb in notebooks]
        full = [t for nb in notebooks for k, t in record.get(nb.as_posix(), {}).get("timings", {}).items()
                if k.startswith("full, cpu")]
        rows.append({
            "number": chapter_number(notebooks[0].parent.as_posix()),
            "title": re.sub(r"^\d+\.\s*", "", title),
            "notebooks": notebooks, "full_minutes": sum(full) / 60 if full else None,
            "longest_minutes": max(full) / 60 if full else None,
            "timed": len(full), "exercises": sum(f["exercises"] for f in facts),
            "computational": sum(f["computational"] for f in facts),
            "data": sorted({d for f in facts for d in f["data"]}),
            "extras": sorted({e for f in facts for e in f["extras"]}),
        })
    return rows


def draw_dependencies(rows: list[dict], path: Path) -> None:
    """The prerequisite graph, one column per depth (longest chain of prerequisites)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plotting import use_book_style

    use_book_style()
    missing = set(PREREQUISITES) ^ {r["number"] for r in rows}
    if missing:
        raise ValueError(f"PREREQUISITES and the book's chapters differ: {sorted(missing)}")
    depth: dict[str, int] = {}
    for ch in sorted(PREREQUISITES):
        depth[ch] = 1 + max((depth[p] for p in PREREQUISITES[ch]), default=-1)
    columns: dict[int, list[str]] = {}
    for ch in sorted(depth):
        columns.setdefault(depth[ch], []).append(ch)
    pos = {ch: (d, -i + (len(chs) - 1) / 2) for d, chs in columns.items() for i, ch in enumerate(chs)}
    fig, ax = plt.subplots(figsize=(6.6, 4.4))
    for ch, prereqs in PREREQUISITES.items():
        for p in prereqs:
            ax.annotate("", xy=pos[ch], xytext=pos[p],
                        arrowprops={"arrowstyle": "-|>", "color": "0.55", "shrinkA": 14, "shrinkB": 14})
    for ch, (x, y) in pos.items():
        ax.text(x, y, ch, ha="center", va="center", fontsize=12,
                bbox={"boxstyle": "round", "facecolor": "#dbe9f6", "edgecolor": "#4a7bb0"})
    ax.set_xlim(-0.5, max(columns) + 0.5)
    ax.set_ylim(min(y for _, y in pos.values()) - 0.7, max(y for _, y in pos.values()) + 0.7)
    ax.set_axis_off()
    ax.set_title("Chapter prerequisites (arrows point to the chapter that needs them)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _minutes(m: float | None) -> str:
    return "not recorded" if m is None else f"{m:.1f}"


def page_text(root: Path) -> str:
    rows = chapter_rows(root)
    by_number = {r["number"]: r for r in rows}
    total_ex = sum(r["exercises"] for r in rows)
    total_comp = sum(r["computational"] for r in rows)
    lines = [
        "# Teaching with this book",
        "",
        "This page is generated by `make teaching` (`python -m dlbook.teaching`) from the",
        "book's own records: the exercises and data sets are read from the notebooks, the",
        "times from the last recorded full-profile runs ([How each notebook was last",
        "executed](executions.md)). Do not edit it by hand.",
        "",
        "## Which chapter needs which",
        "",
        f"```{{figure}} {FIGURE.name}",
        ":name: fig-teaching-dependencies",
        ":width: 100%",
        "",
        "Chapters (by number) and the earlier chapters each builds on.",
        "```",
        "",
        "| chapter | builds on |",
        "|---|---|",
    ]
    for r in rows:
        prereq = ", ".join(f"{p} {by_number[p]['title']}" for p in PREREQUISITES.get(r["number"], ()))
        lines.append(f"| {r['number']} {r['title']} | {prereq or '(nothing)'} |")
    lines += ["", "## Two course plans", "",
              "Each week lists the chapters to read and run; every chapter comes after the",
              "chapters it builds on. The minutes are the full-profile run time of the week's",
              "notebooks on the machine of the record (a GPU in Colab is faster).", ""]
    for name, weeks in COURSES.items():
        lines += [f"### {name}", "", "| week | chapters | full-profile minutes |", "|---:|---|---:|"]
        for w, chapters in enumerate(weeks, 1):
            mins = [by_number[c]["full_minutes"] for c in chapters]
            total = sum(m for m in mins if m is not None)
            titles = "; ".join(f"{c} {by_number[c]['title']}" for c in chapters)
            lines.append(f"| {w} | {titles} | {total:.1f} |")
        covered = sorted({c for week in weeks for c in week})
        left = [c for c in by_number if c not in covered]
        lines += ["", f"Leaves out: {', '.join(left) if left else 'nothing'}.", ""]
    lines += ["## Per chapter", "",
              f"The book has {total_ex} exercises, {total_comp} of them computational, each "
              "with a solution that runs with its notebook.", "",
              "| chapter | notebooks | full-profile minutes | longest notebook | exercises "
              "(computational) |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['number']} {r['title']} | {len(r['notebooks'])} | "
                     f"{_minutes(r['full_minutes'])} | {_minutes(r['longest_minutes'])} | "
                     f"{r['exercises']} ({r['computational']}) |")
    lines += ["", "| chapter | data | extras | device |", "|---|---|---|---|"]
    for r in rows:
        device = ("CPU is enough" if r["longest_minutes"] is not None and r["longest_minutes"] <= 5
                  else "CPU-bound, a GPU does not help" if r["number"] in CPU_BOUND
                  else "a GPU helps")
        extras = ", ".join(f"`dlbook[{e}]`" for e in r["extras"]) or "none"
        lines.append(f"| {r['number']} {r['title']} | {', '.join(r['data']) or 'generated'} | "
                     f"{extras} | {device} |")
    lines += [
        "",
        "\"CPU is enough\" means every notebook of the chapter ran its full profile in five",
        "minutes or less on two CPU cores; the `quick` profile of any notebook runs in",
        "seconds, for a lecture demonstration. \"CPU-bound\" chapters take longer, but",
        "their time goes into stepping simulated environments one transition at a time,",
        "which a GPU does not speed up.",
        "",
        "## Running your own copy",
        "",
        "1. Fork the repository and set `repository.url` (and `branch`) in `_config.yml` to",
        "   your fork; `make setup-cells` rewrites every notebook's first cell so that Colab",
        "   installs the library from your fork.",
        "2. The workflow `.github/workflows/book.yml` runs the same tests as this project's",
        "   CI (`make test`) on every push, pull request and weekly; on `main` it builds the",
        "   book and publishes it with GitHub Pages (enable Pages with *Source: GitHub",
        "   Actions* in the repository settings).",
        "3. Change a chapter, run `make execute NOTEBOOKS=...` to re-execute it in the full",
        "   profile, and `make test` before you push: a solution that stops working fails",
        "   the tests like any other cell.",
        "4. `make student` writes the student edition to `_build/student/`: the same",
        "   notebooks without the solution cells and without outputs, ready to hand out",
        "   (they run in Colab exactly as the book's notebooks do). The solutions stay in",
        "   the book, collapsed under each exercise.",
        "",
    ]
    return "\n".join(lines)


def write(root: Path) -> None:
    rows = chapter_rows(root)
    draw_dependencies(rows, root / FIGURE)
    (root / PAGE).write_text(page_text(root))


def main() -> int:
    from .execute import book_root

    root = book_root()
    write(root)
    print(f"wrote {PAGE} and {FIGURE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
