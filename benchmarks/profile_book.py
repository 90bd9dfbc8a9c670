"""Where the book's time goes: every chapter executed, timed per cell and per call.

Each chapter runs under the quick profile as nbval runs it (a fresh kernel, the cells in
order), with two cells of bookkeeping added around it: the first starts a
:mod:`cProfile` profiler in the kernel, the last attributes the time of every call that
a chapter's own cells make into ``companion`` (the edge from a cell to a companion
function, so a training call counts once, not once per nested function). Cell times
come from the kernel's own timestamps (nbclient's ``execution`` metadata). The tables
land in one Markdown file (default ``benchmarks/book_profile.md``)::

    python benchmarks/profile_book.py                     # every chapter, empty cache
    python benchmarks/profile_book.py book/06_hmc_defence.ipynb --cache-dir _build/cache

By default the model cache is a new empty folder, so chapters train their models as CI
does; ``--cache-dir`` reuses a folder (a developer's run). The profiler costs a few per
cent of the total (Python-level calls only; the kernels run in C++); ``--no-calls``
times cells alone. ``--workers 2`` executes two chapters at a time with one thread per
kernel, in the order given, as ``make nbval`` does (``make profile`` runs exactly that,
in nbval's order); a chapter that needs a model another one is training waits for it
(:mod:`companion.cache`). ``--save`` writes each executed chapter back to its file
(its stored outputs). ``--smoke-junit`` adds a table of the smoke runs from the JUnit
XML that ``make smoke`` writes to ``_build/smoke-junit.xml``.
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import platform
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from timing import ONE_THREAD

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"

START = """\
import cProfile as _book_profile_module
_book_profiler = _book_profile_module.Profile()
_book_profiler.enable()
"""

# The kernel's cells are compiled from files under ipykernel's temporary folder; a
# companion function's callers that live there are the chapter's own cells.
STOP = """\
_book_profiler.disable()
import json as _json, pstats as _pstats, companion as _companion
from pathlib import Path as _Path
_root = str(_Path(_companion.__file__).parent)
_calls = {}
_stats = _pstats.Stats(_book_profiler).stats
for (_file, _line, _name), (*_, _callers) in _stats.items():
    if not _file.startswith(_root):
        continue
    for (_caller_file, *_), (_, _n, _, _seconds) in _callers.items():
        if "ipykernel" in _caller_file or _caller_file.startswith("<ipython"):
            _key = _file[len(_root) + 1 :].removesuffix(".py").replace("/", ".")
            _key = f"companion.{_key}.{_name}"
            _count, _total = _calls.get(_key, (0, 0.0))
            _calls[_key] = (_count + _n, _total + _seconds)
print("BOOK-PROFILE " + _json.dumps(_calls))
"""


@dataclass(frozen=True)
class ChapterProfile:
    """One chapter's execution: wall seconds in all, per cell, per companion call."""

    name: str
    seconds: float
    cells: list[tuple[int, str, float]]  # (index in the chapter, first line, seconds)
    calls: dict[str, tuple[int, float]]  # name -> (calls from cells, seconds)


def _cell_seconds(cell: nbformat.NotebookNode) -> float:
    timing = cell.metadata.get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    parse = datetime.datetime.fromisoformat
    return (parse(end.rstrip("Z")) - parse(start.rstrip("Z"))).total_seconds()


def _first_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip() and not line.startswith("#"):
            return line.strip()[:60]
    return source.strip().splitlines()[0][:60] if source.strip() else ""


def profile_chapter(
    path: Path, *, calls: bool, timeout: int, save: bool = False
) -> ChapterProfile:
    """Execute ``path`` in a fresh kernel and time it (environment: the caller's); with
    ``save``, write the executed chapter (without the profiler's cells) back to it."""
    notebook = nbformat.read(path, as_version=4)
    own = len(notebook.cells)
    if calls:
        notebook.cells.insert(0, nbformat.v4.new_code_cell(START))
        notebook.cells.append(nbformat.v4.new_code_cell(STOP))
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(BOOK)}},
    )
    started = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - started
    offset = 1 if calls else 0
    if save:
        executed = nbformat.from_dict(notebook)
        executed.cells = notebook.cells[offset : offset + own]
        nbformat.write(executed, path)
    cells = [
        (index, _first_line(cell.source), _cell_seconds(cell))
        for index, cell in enumerate(notebook.cells[offset : offset + own])
        if cell.cell_type == "code"
    ]
    found: dict[str, tuple[int, float]] = {}
    if calls:
        import json

        for output in notebook.cells[-1].outputs:
            for line in output.get("text", "").splitlines():
                if line.startswith("BOOK-PROFILE "):
                    found = {
                        k: (int(n), float(s))
                        for k, (n, s) in json.loads(line.split(" ", 1)[1]).items()
                    }
    return ChapterProfile(path.stem, seconds, cells, found)


def smoke_runs(junit: Path) -> list[str]:
    """A Markdown table of the smoke stage's tests by time, from pytest's JUnit XML."""
    cases = [
        (case.get("name", "?"), float(case.get("time", 0)))
        for case in ET.parse(junit).getroot().iter("testcase")
    ]
    total = sum(seconds for _, seconds in cases)
    lines = [
        "",
        "## Smoke runs",
        "",
        f"{len(cases)} tests, {total:.0f} s summed over workers (`{junit.name}`).",
        "",
        "| test | seconds | share |",
        "|---|---:|---:|",
    ]
    for name, seconds in sorted(cases, key=lambda c: -c[1]):
        name = name.replace("test_chapter_runs_end_to_end_at_smoke_counts", "chapter")
        lines.append(f"| `{name}` | {seconds:.0f} | {seconds / total:.0%} |")
    return lines


def report(
    profiles: list[ChapterProfile],
    *,
    top: int,
    header: str,
    wall: float,
    smoke: list[str] | None = None,
) -> str:
    """The Markdown tables: chapters by total, then each chapter's top cells / calls."""
    total = sum(p.seconds for p in profiles)
    lines = [
        "# Where the book's time goes",
        "",
        header,
        "",
        f"Wall time {wall:.0f} s ({wall / 60:.1f} min); the pages' own times add up to "
        f"{total:.0f} s ({total / 60:.1f} min) over {len(profiles)} pages.",
        "",
        "| page | seconds | share |",
        "|---|---:|---:|",
    ]
    for p in sorted(profiles, key=lambda p: -p.seconds):
        lines.append(f"| {p.name} | {p.seconds:.0f} | {p.seconds / total:.0%} |")
    for p in profiles:
        lines += ["", f"## {p.name}: {p.seconds:.0f} s", ""]
        lines += ["| cell | first line | seconds |", "|---:|---|---:|"]
        for index, first, seconds in sorted(p.cells, key=lambda c: -c[2])[:top]:
            first = first.replace("|", "\\|")
            lines.append(f"| {index} | `{first}` | {seconds:.1f} |")
        if p.calls:
            lines += ["", "| companion call (from the cells) | calls | seconds |"]
            lines.append("|---|---:|---:|")
            for name, (n, s) in sorted(p.calls.items(), key=lambda c: -c[1][1])[:top]:
                lines.append(f"| `{name}` | {n} | {s:.1f} |")
    lines += smoke or []
    return "\n".join(lines) + "\n"


def _profile_one(job: tuple[Path, bool, int, bool]) -> ChapterProfile:
    chapter, calls, timeout, save = job
    profile = profile_chapter(chapter, calls=calls, timeout=timeout, save=save)
    print(f"{chapter.stem}: {profile.seconds:.0f} s", flush=True)
    return profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", type=Path, help="default: every page")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/book_profile.md")
    parser.add_argument("--cache-dir", type=Path, help="reuse this model cache")
    parser.add_argument("--top", type=int, default=8, help="rows per chapter table")
    parser.add_argument("--no-calls", action="store_true", help="cell times only")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    parser.add_argument(
        "--workers", type=int, default=1, help="chapters at once, one thread each"
    )
    parser.add_argument("--save", action="store_true", help="store executed outputs")
    parser.add_argument("--smoke-junit", type=Path, help="make smoke's JUnit XML")
    args = parser.parse_args()
    chapters = args.chapters or sorted(BOOK.glob("*.ipynb"))
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="book-profile-cache-"))
    os.environ.update(
        COMPANION_PROFILE="quick",
        COMPANION_PROGRESS="0",
        COMPANION_CACHE_DIR=str(cache),
    )
    if args.workers > 1:
        os.environ.update(ONE_THREAD)
    jobs = [(c, not args.no_calls, args.timeout, args.save) for c in chapters]
    started = time.perf_counter()
    if args.workers > 1:
        # one process per chapter at a time, handed out in the order given
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            profiles = list(pool.imap(_profile_one, jobs, chunksize=1))
    else:
        profiles = [_profile_one(job) for job in jobs]
    wall = time.perf_counter() - started
    threads = os.environ.get("OMP_NUM_THREADS", "torch's default")
    threads = "1 thread" if threads == "1" else f"{threads} threads"
    header = (
        f"Measured {datetime.date.today()} on {platform.machine()} with "
        f"{os.cpu_count()} cores, {args.workers} chapter(s) at a time, {threads} "
        "per kernel, quick profile, "
        + ("a reused model cache" if args.cache_dir else "an empty model cache")
        + ", by `python benchmarks/profile_book.py"
        + (f" --workers {args.workers}" if args.workers > 1 else "")
        + (" --no-calls" if args.no_calls else "")
        + "`."
    )
    smoke = smoke_runs(args.smoke_junit) if args.smoke_junit else None
    args.out.write_text(
        report(profiles, top=args.top, header=header, wall=wall, smoke=smoke)
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
