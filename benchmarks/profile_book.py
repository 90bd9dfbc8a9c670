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
times cells alone.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient

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


def profile_chapter(path: Path, *, calls: bool, timeout: int) -> ChapterProfile:
    """Execute ``path`` in a fresh kernel and time it (environment: the caller's)."""
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


def report(profiles: list[ChapterProfile], *, top: int, header: str) -> str:
    """The Markdown tables: chapters by total, then each chapter's top cells / calls."""
    total = sum(p.seconds for p in profiles)
    lines = [
        "# Where the book's time goes",
        "",
        header,
        "",
        f"Total: {total:.0f} s ({total / 60:.1f} min) over {len(profiles)} pages.",
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
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", type=Path, help="default: every page")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/book_profile.md")
    parser.add_argument("--cache-dir", type=Path, help="reuse this model cache")
    parser.add_argument("--top", type=int, default=8, help="rows per chapter table")
    parser.add_argument("--no-calls", action="store_true", help="cell times only")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args()
    chapters = args.chapters or sorted(BOOK.glob("*.ipynb"))
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="book-profile-cache-"))
    os.environ.update(
        COMPANION_PROFILE="quick",
        COMPANION_PROGRESS="0",
        COMPANION_CACHE_DIR=str(cache),
    )
    profiles = []
    for chapter in chapters:
        profiles.append(
            profile_chapter(chapter, calls=not args.no_calls, timeout=args.timeout)
        )
        print(f"{chapter.stem}: {profiles[-1].seconds:.0f} s", flush=True)
    threads = os.environ.get("OMP_NUM_THREADS", "torch's default")
    header = (
        f"Measured {datetime.date.today()} on {platform.machine()} with "
        f"{os.cpu_count()} cores, {threads} threads, quick profile, "
        + ("a reused model cache" if args.cache_dir else "an empty model cache")
        + ", by `python benchmarks/profile_book.py`"
        + (" --no-calls" if args.no_calls else "")
        + "."
    )
    args.out.write_text(report(profiles, top=args.top, header=header))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
