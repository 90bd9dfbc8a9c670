"""The book's structure and hygiene: what a reader, Colab and CI rely on."""

from __future__ import annotations

import ast
import json
import re
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))


def _toc_files(*, sections: bool = False) -> list[str]:
    files = [TOC["root"]]
    for part in TOC.get("parts", []):
        for entry in part["chapters"]:
            files.append(entry["file"])
            if sections:
                files += [s["file"] for s in entry.get("sections", [])]
    return files


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _code(nb: dict) -> list[str]:
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def test_every_toc_entry_exists_and_every_chapter_is_listed() -> None:
    listed = _toc_files(sections=True)
    for entry in listed:
        assert any((ROOT / f"{entry}{ext}").is_file() for ext in (".md", ".ipynb")), (
            entry
        )
    for chapter in CHAPTERS:
        assert str(chapter.relative_to(ROOT).with_suffix("")) in listed, chapter.name


def test_repository_url_is_set_once_and_matches_the_package_metadata() -> None:
    url = CONFIG["repository"]["url"]
    assert CONFIG["repository"]["branch"] == "main"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["urls"]["Repository"] == url
    assert project["urls"]["Source"] == url


def test_config_fails_the_build_on_execution_errors() -> None:
    execute = CONFIG["execute"]
    assert execute["raise_on_error"] is True and execute["allow_errors"] is False
    assert 0 < execute["timeout"] <= 1200


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_chapter_starts_with_a_colab_setup_cell_that_installs_from_the_repository(
    chapter: Path,
) -> None:
    setup = _code(_load(chapter))[0]
    # by the distribution's name: an unrelated PyPI package also installs `companion/`,
    # so finding the import name proves nothing
    assert 'importlib.metadata.version("vae-robustness-companion")' in setup
    assert "find_spec" not in setup
    assert f'REPOSITORY = "{CONFIG["repository"]["url"]}"' in setup
    branch = CONFIG["repository"]["branch"]
    assert re.search(
        rf'"vae-robustness-companion(\[numpyro\])?@git\+{{REPOSITORY}}@{branch}"', setup
    )
    assert not re.search(r"\btorch\b", setup), "the set-up cell must never touch torch"
    if any('backend="numpyro"' in code for code in _code(_load(chapter))[1:]):
        assert (
            "vae-robustness-companion[numpyro]@git+{REPOSITORY}" in setup
            and 'importlib.metadata.version("numpyro")' in setup
        ), (
            "a chapter that runs the NumPyro backend must install the numpyro extra "
            "on Colab"
        )


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_chapter_ends_with_check_cells_and_has_clean_stored_outputs(
    chapter: Path,
) -> None:
    nb = _load(chapter)
    nbformat.validate(nbformat.reads(json.dumps(nb), as_version=4))  # cell ids, schema
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = _code(nb)
    assert "assert" in code[-1] and "all checks passed" in code[-1], (
        "the last cell must assert the claims"
    )
    # the smoke runs (tests/test_smoke_chapters.py) let exactly these cells fail
    tagged = [
        "".join(c["source"])
        for c in nb["cells"]
        if "check" in c.get("metadata", {}).get("tags", [])
    ]
    assert tagged == [code[-1]], "tag the last cell, and only it, `check`"
    assert not any(re.search(r"^\s*assert ", c, re.M) for c in code[:-1]), (
        "claims are asserted in the check cell only"
    )
    checked = [
        c
        for c in nb["cells"]
        if c["cell_type"] == "code"
        and (
            "nbval-check-output" in c.get("metadata", {}).get("tags", [])
            or "NBVAL_CHECK_OUTPUT" in "".join(c["source"])
        )
    ]
    assert checked, "mark deterministic numbers for nbval (tag nbval-check-output)"
    outputs = [
        o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
    ]
    assert outputs, "execute the chapter before committing it"
    for output in outputs:
        assert output["output_type"] != "error"
        text = json.dumps(output)
        assert not re.search(r"/(work|root|tmp|home|Users)/[A-Za-z0-9_.-]+/", text), (
            "machine-specific path"
        )
        assert "Warning" not in json.dumps(output.get("text", "")), (
            "a warning landed in the stored outputs"
        )
    assert chapter.stat().st_size < 3_000_000


GLUE_ROLE = re.compile(r"\{glue(?::text|:any|:md|:math)?\}`([^`:]+)(?::[^`]*)?`")
GLUE_FIGURE = re.compile(r"^[`:]{3,}\{glue:(?:figure|math)\}\s+(\S+)", re.M)


def _markdown(nb: dict) -> list[str]:
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]


def _glue_keys_used(nb: dict) -> set[str]:
    return {
        key
        for text in _markdown(nb)
        for pattern in (GLUE_ROLE, GLUE_FIGURE)
        for key in pattern.findall(text)
    }


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_every_glued_number_in_the_prose_was_glued_by_a_cell(chapter: Path) -> None:
    """A `{glue:text}` role whose key no cell glued renders as an error in the book;
    the stored outputs say which keys the cells glued (myst-nb's scrapbook metadata)."""
    nb = _load(chapter)
    used = _glue_keys_used(nb)
    assert used, "the prose states no glued result: glue the page's numbers"
    glued = {
        o["metadata"]["scrapbook"]["name"]
        for c in nb["cells"]
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
        if "scrapbook" in o.get("metadata", {})
    }
    assert used <= glued, f"used in the prose but never glued: {sorted(used - glued)}"
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            book = o.get("metadata", {}).get("scrapbook")
            if book and not any("image/" in k for k in o["data"]):
                # myst-nb formats what ast.literal_eval reads: no np.float64(...)
                text = "".join(o["data"][book["mime_prefix"] + "text/plain"])
                ast.literal_eval(text)


# Math, code and MyST roles and directives hold braces; the rest of the prose may not.
_NOT_PROSE = [
    re.compile(r"\$\$.*?\$\$", re.S),
    re.compile(r"\\begin\{(\w+\*?)\}.*?\\end\{\1\}", re.S),
    re.compile(r"\$[^$]+\$"),  # inline maths, which may wrap across lines
    re.compile(r"\{[\w:-]+\}`[^`]*`"),  # roles: {glue:text}`key:.2f`, {cite:t}`x`
    re.compile(r"^\s*([`~:]{3,}).*$", re.M),  # fences and directive lines
    re.compile(r"``.*?``|`[^`\n]*`"),  # inline code
]
PLACEHOLDER = re.compile(r"\{[A-Za-z_][\w.]*(?:![rsa])?(?::[^{}\s]*)?\}")


def _placeholders(text: str) -> list[str]:
    for pattern in _NOT_PROSE:
        text = pattern.sub(" ", text)
    return PLACEHOLDER.findall(text)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_prose_has_no_unfilled_placeholder(chapter: Path) -> None:
    """A `{radius}` in Markdown is a format string that was never formatted."""
    for text in _markdown(_load(chapter)):
        found = _placeholders(text)
        assert not found, f"placeholders left in the prose: {found}; glue the values"


def test_the_placeholder_check_tells_prose_from_maths_and_roles() -> None:
    assert _placeholders("against t at δ = {radius}.") == ["{radius}"]
    assert _placeholders("a share of {share:.0%} here") == ["{share:.0%}"]
    clean = (
        "$\\mathrm{KL}[q \\mid\n p]$ and {glue:text}`gap:.2f` by {cite:t}`kuzina`\n"
        "```{admonition} Note\n$$\\mathcal{N}(0, 1)$$\n```\n`{x}` in code"
    )
    assert _placeholders(clean) == []


def _tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


HIDDEN = {"hide-input", "remove-input", "hide-cell", "remove-cell"}


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_no_visible_code_cell_is_longer_than_thirty_lines(chapter: Path) -> None:
    for index, cell in enumerate(_load(chapter)["cells"]):
        if cell["cell_type"] == "code" and not HIDDEN & set(_tags(cell)):
            lines = "".join(cell["source"]).strip().splitlines()
            assert len(lines) <= 30, (
                f"cell {index} shows {len(lines)} lines: move bookkeeping into "
                "companion or a hidden cell"
            )


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_opens_with_what_it_teaches_assumes_and_costs(chapter: Path) -> None:
    opening = "\n".join(_markdown(_load(chapter))[:2])
    for phrase in ("**What you will learn.**", "**What it assumes.**"):
        assert phrase in opening, f"the opening lacks {phrase}"
    assert "Running this chapter" in opening, "say how long the chapter takes to run"


EXERCISE = re.compile(r"^### Exercise (\d+)", re.M)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_ends_with_summary_exercises_and_a_collapsed_check(
    chapter: Path,
) -> None:
    cells = _load(chapter)["cells"]
    text = ["".join(c["source"]) for c in cells]
    summary = next(i for i, t in enumerate(text) if t.startswith("## Summary"))
    exercises = next(i for i, t in enumerate(text) if t.startswith("## Exercises"))
    assert summary < exercises, "the summary comes before the exercises"
    bullets = re.findall(r"^- ", text[summary], re.M)
    assert 3 <= len(bullets) <= 5, "a summary of 3 to 5 points"
    assert GLUE_ROLE.search(text[summary]), "the summary quotes glued numbers"
    numbers = []
    for i in range(exercises, len(cells) - 1):
        for found in EXERCISE.finditer(text[i]):
            numbers.append(int(found.group(1)))
            rest = text[i][found.end() :]
            nxt = EXERCISE.search(rest)
            own = rest[: nxt.start()] if nxt else rest
            solved = "{dropdown} Solution" in own or (
                nxt is None
                and i + 1 < len(cells)
                and "solution" in _tags(cells[i + 1])
                and cells[i + 1]["cell_type"] == "code"
            )
            assert solved, (
                f"exercise {numbers[-1]}: follow it with a code cell tagged "
                "`solution`, or a {dropdown} Solution"
            )
    assert 3 <= len(numbers) <= 4 and numbers == list(range(1, len(numbers) + 1))
    for cell in cells:
        if "solution" in _tags(cell):
            assert "hide-input" in _tags(cell), "collapse the solutions"
            assert cell.get("outputs") is not None
    check = cells[-1]
    assert {"check", "hide-input"} <= set(_tags(check)), "collapse the check cell"
    assert cells[-2]["cell_type"] == "markdown", "say what the check cell asserts"
    assert len(re.findall(r"[.!?](\s|$)", text[-2].strip())) == 1, "in one sentence"


PROFILE_NAMES = {"quick", "gpu", "full"}


def _dicts_keyed_by_some_profiles(source: str) -> list[set[str]]:
    partial = []
    for node in ast.walk(ast.parse(source)):
        keys = None
        if isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "dict":
            keys = [k.arg for k in node.keywords]
        if keys and set(keys) & PROFILE_NAMES and not PROFILE_NAMES <= set(keys):
            partial.append(set(keys))
    return partial


@pytest.mark.parametrize(
    "source",
    CHAPTERS + sorted((ROOT / "companion").rglob("*.py")),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_setting_is_keyed_by_some_profile_names_only(source: Path) -> None:
    """A dict keyed by `quick` and `full` raises KeyError under `gpu` (Colab)."""
    if source.suffix == ".ipynb":
        cells = [c for c in _code(_load(source)) if not c.lstrip().startswith("%")]
    else:
        cells = [source.read_text()]
    for cell in cells:
        assert not _dicts_keyed_by_some_profiles(cell), (
            "key settings by every profile (quick, gpu, full), or read them from the "
            "profile's settings"
        )


def test_the_profile_key_check_finds_a_partial_dict() -> None:
    assert _dicts_keyed_by_some_profiles("bars = {'quick': 1, 'full': 2}")
    assert _dicts_keyed_by_some_profiles("bars = dict(quick=1, full=2)")
    assert not _dicts_keyed_by_some_profiles("b = {'quick': 1, 'gpu': 1, 'full': 2}")


def _api_rows() -> list[str]:
    text = (ROOT / "book/api/index.md").read_text()
    return [line for line in text.splitlines() if line.startswith("| [`companion.")]


def test_every_module_row_of_the_api_index_renders_whole() -> None:
    """A `|` inside a cell splits the Markdown table; Sphinx roles stay raw there."""
    rows = _api_rows()
    assert rows
    for row in rows:
        cells = re.sub(r"`[^`]*`", "code", row).split("|")
        assert len(cells) == 4, f"a `|` splits this row: {row}"
        assert not re.search(r"(?<!\})`?:\w+:`", row), f"a raw Sphinx role: {row}"
        assert "``" not in row, f"reStructuredText literals in Markdown: {row}"
        assert row.rstrip().endswith("|") and cells[2].strip().endswith("."), row


def test_readme_shows_the_two_commands_and_ci_calls_the_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make book" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_public_module_has_a_reference_page_in_the_table_of_contents() -> None:
    import pkgutil

    import companion

    modules = {
        m.name
        for m in pkgutil.walk_packages(companion.__path__, "companion.")
        if not m.ispkg
    }
    pages = {
        p.stem: p.read_text()
        for p in (ROOT / "book/api").glob("*.md")
        if p.stem != "index"
    }
    documented = {
        line.split()[-1]
        for text in pages.values()
        for line in text.splitlines()
        if line.startswith(".. automodule::")
    }
    assert documented == modules, documented ^ modules
    assert {f"book/api/{stem}" for stem in pages} <= set(_toc_files(sections=True))
