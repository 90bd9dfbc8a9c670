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
    listed = _toc_files()
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


GLUE_ROLE = re.compile(r"\{glue:(?:text|any|md|math|figure)\}`([^`:]+)(?::[^`]*)?`")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_every_glued_number_in_the_prose_was_glued_by_a_cell(chapter: Path) -> None:
    """A `{glue:text}` role whose key no cell glued renders as an error in the book;
    the stored outputs say which keys the cells glued (myst-nb's scrapbook metadata)."""
    nb = _load(chapter)
    used = {
        key
        for c in nb["cells"]
        if c["cell_type"] == "markdown"
        for key in GLUE_ROLE.findall("".join(c["source"]))
    }
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
            if book:  # myst-nb formats what ast.literal_eval reads: no np.float64(...)
                text = "".join(o["data"][book["mime_prefix"] + "text/plain"])
                ast.literal_eval(text)


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
