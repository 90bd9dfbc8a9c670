"""``benchmarks/profile_book.py`` on a two-cell notebook: cell times, the calls into
``companion`` the cells make, the executed notebook written back without the
profiler's cells, and the smoke table from a JUnit file."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import profile_book  # noqa: E402


def _notebook(path: Path) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# A page"),
        nbformat.v4.new_code_cell("from companion.pages import plain\nprint(plain(3))"),
        nbformat.v4.new_code_cell("import time\ntime.sleep(0.3)"),
    ]
    nbformat.write(notebook, path)
    return path


def test_a_chapter_is_timed_per_cell_and_per_companion_call(tmp_path: Path) -> None:
    path = _notebook(tmp_path / "page.ipynb")
    profile = profile_book.profile_chapter(path, calls=True, timeout=120, save=True)
    assert profile.name == "page"
    assert [index for index, _, _ in profile.cells] == [1, 2]
    first, sleep = (seconds for *_, seconds in profile.cells)
    assert 0.3 <= sleep < profile.seconds and first >= 0
    assert profile.calls["companion.pages.plain"][0] == 1

    saved = nbformat.read(path, as_version=4)
    assert [c.cell_type for c in saved.cells] == ["markdown", "code", "code"]
    assert "_book_profiler" not in "".join(c.source for c in saved.cells)
    assert saved.cells[1].outputs[0]["text"] == "3\n"

    report = profile_book.report([profile], top=5, header="header", wall=1.0)
    assert "| page |" in report and "`companion.pages.plain` | 1 |" in report
    assert "Wall time 1 s" in report


def test_the_smoke_table_lists_the_runs_longest_first(tmp_path: Path) -> None:
    junit = tmp_path / "smoke.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase name="test_chapter_runs_end_to_end_at_smoke_counts[02-gpu]" '
        'time="3.0"/><testcase name="test_dry_run" time="9.0"/>'
        "</testsuite></testsuites>"
    )
    lines = profile_book.smoke_runs(junit)
    rows = [line for line in lines if line.startswith("| `")]
    assert rows == ["| `test_dry_run` | 9 | 75% |", "| `chapter[02-gpu]` | 3 | 25% |"]
    assert "2 tests, 12 s summed over workers" in "\n".join(lines)


def test_two_workers_profile_every_page_given(tmp_path: Path) -> None:
    import subprocess

    pages = [_notebook(tmp_path / f"page{i}.ipynb") for i in (1, 2)]
    out = tmp_path / "profile.md"
    subprocess.run(
        [
            sys.executable,
            profile_book.__file__,
            *map(str, pages),
            "--workers=2",
            "--no-calls",
            f"--out={out}",
            f"--cache-dir={tmp_path / 'cache'}",
        ],
        check=True,
        timeout=300,
    )
    text = out.read_text()
    assert "2 chapter(s) at a time, 1 thread per kernel" in text
    assert "| page1 |" in text and "| page2 |" in text
    assert "companion call" not in text  # --no-calls
