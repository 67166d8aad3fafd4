"""Execute the book's notebooks with papermill, in place, and record how long each took.

    python -m dlbook.execute                       # every notebook in _toc.yml, full profile
    python -m dlbook.execute --profile quick chapters/01_mlp/mlp_forward.ipynb
    python -m dlbook.execute --device cuda --match 01_

Each notebook runs from its own folder (relative paths behave as in Jupyter and
Colab) with ``DLBOOK_PROFILE``/``DLBOOK_DEVICE`` set and ``-p profile``/``-p
device`` injected. A notebook that succeeds is written back in place and its
profile, device and seconds are recorded in ``chapters/executions.json``, from
which the book's page ``chapters/executions.md`` is regenerated. Papermill's
injected-parameters cell and progress-bar outputs are removed from the stored
notebook (see ``dlbook.notebook``), so that it runs unchanged in any profile. A notebook that
fails is left untouched (its failed copy goes to ``_build/failed/``), the others
still run, and the command ends with a non-zero status naming the notebook,
the cell and the error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .runtime import DEVICE_ENV, DEVICES, PROFILE_ENV, THREADS_ENV, check_profile

RECORD = Path("chapters/executions.json")
PAGE = Path("chapters/executions.md")


def book_root(start: Path | None = None) -> Path:
    """The folder holding ``_toc.yml``, searched upwards from ``start`` (default: cwd)."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "_toc.yml").is_file():
            return folder
    raise FileNotFoundError(f"no _toc.yml in {start} or any folder above it")


def toc_entries(root: Path) -> list[str]:
    """Every ``file:``/``root:`` entry of ``_toc.yml`` (paths without extension)."""
    import yaml

    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("root", "file"):
                if key in node:
                    found.append(str(node[key]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load((root / "_toc.yml").read_text()))
    return found


def toc_notebooks(root: Path) -> list[Path]:
    """The notebooks of ``_toc.yml``, in reading order (relative to ``root``)."""
    return [Path(e if e.endswith(".ipynb") else f"{e}.ipynb") for e in toc_entries(root)
            if (root / (e if e.endswith(".ipynb") else f"{e}.ipynb")).is_file()]


@dataclass
class Outcome:
    notebook: str
    ok: bool
    seconds: float
    error: str = ""


def describe_failure(exc: BaseException) -> str:
    """'cell N: Name: value' for papermill's execution errors, else the exception itself."""
    cell = getattr(exc, "exec_count", None)
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename is not None:
        where = f"cell [{cell}]" if cell is not None else "a cell"
        return f"{where}: {ename}: {evalue}"
    return f"{type(exc).__name__}: {exc}"


def run_notebook(path: Path, profile: str, device: str, failed_dir: Path,
                 progress: bool = True, timeout: int | None = None,
                 write_back: bool = True) -> Outcome:
    import papermill as pm

    start = time.perf_counter()
    failed_copy = failed_dir / path.name
    failed_dir.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(str(path), str(failed_copy), parameters={"profile": profile, "device": device},
                            cwd=str(path.parent), progress_bar=progress, execution_timeout=timeout,
                            kernel_name="python3")
    except Exception as exc:  # noqa: BLE001 - every failure is reported, none stops the run
        return Outcome(str(path), False, time.perf_counter() - start, describe_failure(exc))
    seconds = time.perf_counter() - start
    if not write_back:  # --time-only: the committed notebook stays as it is
        failed_copy.unlink()
        return Outcome(str(path), True, seconds)
    import nbformat

    from .notebook import strip_injected_parameters, strip_progress_bars

    nb = nbformat.read(failed_copy, as_version=4)
    strip_injected_parameters(nb)
    strip_progress_bars(nb)
    nbformat.write(nb, path)  # success: the executed notebook replaces the committed one
    failed_copy.unlink()
    return Outcome(str(path), True, seconds)


def _device_description(device: str) -> str:
    try:
        from .runtime import choose_device
        import torch

        dev = choose_device(device)
        if dev.type == "cuda":
            return f"cuda ({torch.cuda.get_device_name(dev)})"
        return dev.type
    except Exception:  # noqa: BLE001 - the record is informative only
        return device


def timing_key(profile: str, device: str) -> str:
    """How a run is named in the record's per-notebook ``timings``: ``"full, cpu"``."""
    return f"{profile}, {device}"


def update_record(root: Path, outcomes: list[Outcome], profile: str, device: str,
                  written: bool = True) -> None:
    """Merge successful runs into ``executions.json`` and regenerate ``executions.md``.

    Each notebook's entry describes the run whose outputs are committed (profile,
    device, seconds, date, CPU cores, torch threads) and keeps, under ``timings``, the
    latest seconds of every (profile, device) it ran in, including ``--time-only`` runs
    (``written=False``) that leave the notebook itself untouched. A lock file serialises
    concurrent runners, so that neither loses the other's entries.
    """
    import fcntl

    record_path = root / RECORD
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    where = _device_description(device)
    with open(record_path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
        for o in outcomes:
            if not o.ok:
                continue
            entry = record.get(o.notebook, {})
            timings = entry.get("timings", {})
            if written:
                entry = {"profile": profile, "device": where, "seconds": round(o.seconds, 1),
                         "date": now, "cpus": os.cpu_count(),
                         "threads": os.environ.get(THREADS_ENV, "default"),
                         "python": platform.python_version()}
            timings[timing_key(profile, where)] = round(o.seconds, 1)
            entry["timings"] = dict(sorted(timings.items()))
            if "profile" in entry:
                record[o.notebook] = entry
        record_path.write_text(json.dumps(dict(sorted(record.items())), indent=1) + "\n")
        write_page(root, record)


def notebook_title(path: Path) -> str:
    """The ``# title`` of a notebook (its first markdown cell), else its file name."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


def chapters_of(root: Path) -> list[tuple[str, list[Path]]]:
    """``(chapter title, its notebooks)`` in reading order, one entry per chapter folder."""
    groups: dict[str, list[Path]] = {}
    for nb in toc_notebooks(root):
        groups.setdefault(nb.parent.as_posix(), []).append(nb)
    out = []
    for folder, notebooks in groups.items():
        index = root / folder / "index.md"
        title = Path(folder).name
        if index.is_file():
            heads = [l[2:].strip() for l in index.read_text().splitlines() if l.startswith("# ")]
            title = heads[0] if heads else title
        else:
            title = title.split("_", 1)[-1].replace("_", " ").capitalize()
        out.append((title, notebooks))
    return out


def write_page(root: Path, record: dict) -> None:
    """``chapters/executions.md``: totals per profile and device, then one table per chapter."""
    totals: dict[str, list[float]] = {}
    for entry in record.values():
        for key, seconds in entry.get("timings", {}).items():
            totals.setdefault(key, []).append(seconds)
    lines = [
        "# How each notebook was last executed",
        "",
        "Every notebook of this book is committed with the outputs of its last run by",
        "`make execute` (`python -m dlbook.execute`), which regenerates this page. The",
        "published outputs come from the `full` profile; `quick` is the smoke test that CI",
        "runs (`make execute PROFILE=quick TIME_ONLY=1` times it without changing the",
        "notebooks). Times are wall-clock seconds of the whole notebook; \"committed\" is the",
        "profile and date of the run whose outputs the page shows, \"threads\" the value of",
        "`DLBOOK_THREADS` for it (\"default\": one per CPU core).",
        "",
        "## The whole book",
        "",
        "| profile, device | notebooks | total |",
        "|---|---:|---:|",
    ]
    for key in sorted(totals):
        secs = totals[key]
        lines.append(f"| {key} | {len(secs)} | {sum(secs) / 60:.1f} min |")
    keys = sorted(totals)
    for title, notebooks in chapters_of(root):
        lines += ["", f"## {title}", "", "| notebook | " + " | ".join(f"{k} (s)" for k in keys)
                  + " | committed | threads |", "|---|" + "---:|" * len(keys) + "---|---:|"]
        for nb in notebooks:
            entry = record.get(nb.as_posix())
            link = f"[{notebook_title(root / nb)}]({nb.relative_to('chapters').as_posix()})"
            if entry is None:
                lines.append(f"| {link} | " + " | ".join("" for _ in keys) + " | never | |")
                continue
            timings = entry.get("timings", {})
            cells = [f"{timings[k]:.0f}" if k in timings else "" for k in keys]
            run = f"{entry['profile']}, {entry['date'][:10]}"
            lines.append(f"| {link} | " + " | ".join(cells) + f" | {run} | {entry.get('threads', 'default')} |")
    (root / PAGE).write_text("\n".join(lines) + "\n")


def summary_table(outcomes: list[Outcome]) -> str:
    width = max([len("notebook")] + [len(o.notebook) for o in outcomes])
    lines = [f"{'notebook':<{width}}  status  seconds", f"{'-' * width}  ------  -------"]
    for o in outcomes:
        lines.append(f"{o.notebook:<{width}}  {'ok' if o.ok else 'FAILED':<6}  {o.seconds:7.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlbook.execute",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (default: all in _toc.yml)")
    parser.add_argument("--profile", default="full", help="quick or full (default: full)")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--match", default=None, help="only notebooks whose path matches this regex")
    parser.add_argument("--timeout", type=int, default=None, help="seconds allowed per cell")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--no-record", action="store_true", help="do not update executions.json/md")
    parser.add_argument("--time-only", action="store_true",
                        help="record the run's seconds but leave the notebooks unchanged")
    args = parser.parse_args(argv)
    try:
        profile = check_profile(args.profile)
    except ValueError as exc:
        parser.error(str(exc))
    root = book_root()
    notebooks = [Path(n).resolve() for n in args.notebooks] or [root / nb for nb in toc_notebooks(root)]
    for nb in notebooks:
        if not nb.is_file() or nb.suffix != ".ipynb":
            parser.error(f"not a notebook: {nb}")
    if args.match:
        notebooks = [nb for nb in notebooks if re.search(args.match, nb.as_posix())]
    if not notebooks:
        parser.error("no notebook to run")

    os.environ[PROFILE_ENV] = profile
    os.environ[DEVICE_ENV] = args.device
    failed_dir = root / "_build" / "failed"
    outcomes = []
    for i, nb in enumerate(notebooks, 1):
        rel = nb.relative_to(root).as_posix() if root in nb.parents else str(nb)
        print(f"[{i}/{len(notebooks)}] {rel} (profile={profile}, device={args.device})", flush=True)
        outcome = run_notebook(nb, profile, args.device, failed_dir, not args.no_progress, args.timeout,
                               write_back=not args.time_only)
        outcome.notebook = rel
        print(f"    {'ok' if outcome.ok else 'FAILED: ' + outcome.error} in {outcome.seconds:.1f} s", flush=True)
        outcomes.append(outcome)
    if not args.no_record:
        update_record(root, outcomes, profile, args.device, written=not args.time_only)
    print()
    print(summary_table(outcomes))
    failures = [o for o in outcomes if not o.ok]
    if failures:
        print(f"\n{len(failures)} notebook(s) failed:", file=sys.stderr)
        for o in failures:
            print(f"  {o.notebook}: {o.error} (failed copy: _build/failed/{Path(o.notebook).name})",
                  file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
