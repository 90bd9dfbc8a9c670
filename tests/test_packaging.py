"""The distribution students install: its name, licence, citation and stated versions.

``make dist`` checks the built sdist and wheel themselves (tests/check_dist.py); these
tests check the sources they are built from, and that every install instruction in the
repository names the distribution, not the unrelated PyPI package ``companion``.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import yaml

import companion

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
NAME = "vae-robustness-companion"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(requirements: list[str]) -> set[str]:
    return {_canonical(re.match(r"[A-Za-z0-9_.-]+", r).group()) for r in requirements}


def test_the_distribution_has_its_own_name_and_installs_the_companion_package() -> None:
    assert PROJECT["name"] == NAME
    assert PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"] == [
        "companion*"
    ]
    assert (ROOT / "companion" / "py.typed").is_file()


def test_every_install_instruction_names_the_distribution() -> None:
    sources = [
        ROOT / "README.md",
        ROOT / "README.pypi.md",
        ROOT / "environment.yml",
        *sorted((ROOT / "book").glob("*.md")),
        *sorted((ROOT / "book" / "api").glob("*.md")),
        *sorted((ROOT / "book").glob("*.ipynb")),
        *sorted((ROOT / "companion").rglob("*.py")),
    ]
    # `pip install companion`, "companion[numpyro]", companion@git+... and the like
    wrong = re.compile(
        r"""pip install ["']?companion\b|["'\s]companion(\[[a-z,]+\])?\s*@\s*git\+"""
        r"""|["']companion\[[a-z,]+\]"""
    )
    for path in sources:
        match = wrong.search(path.read_text())
        assert match is None, f"{path.relative_to(ROOT)}: {match.group()!r}"
    readme = (ROOT / "README.md").read_text()
    assert f"{NAME} @ git+{PROJECT['urls']['Repository']}@main" in readme
    assert "pip uninstall companion" in readme, "say what to do about the other one"
    assert f"pip install {NAME}" in (ROOT / "README.pypi.md").read_text()


def test_the_licence_ships_and_is_the_one_declared() -> None:
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License\n")
    assert re.search(r"^Copyright \(c\) \d{4} \S", licence, flags=re.M)
    assert PROJECT["license"] == "MIT"
    assert PROJECT["license-files"] == ["LICENSE"]
    assert PROJECT["authors"]


def test_the_python_versions_stated_agree_everywhere() -> None:
    assert PROJECT["requires-python"] == ">=3.11"
    stated = {
        c.rsplit(" ", 1)[-1]
        for c in PROJECT["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    assert stated == {"3.11", "3.12", "3.13"}
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py311"
    assert PYPROJECT["tool"]["mypy"]["python_version"] == "3.11"
    assert "Python 3.11 or newer" in (ROOT / "README.md").read_text()
    assert "python=3.11" in (ROOT / "environment.yml").read_text()


def test_the_citation_names_this_version_the_repository_and_both_papers() -> None:
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert citation["cff-version"] == "1.2.0"
    assert citation["version"] == companion.__version__
    assert citation["license"] == PROJECT["license"]
    assert citation["repository-code"] == config["repository"]["url"]
    assert citation["url"] == PROJECT["urls"]["Documentation"]
    bib = (ROOT / "book" / "references.bib").read_text()
    for key in ("kuzina2022alleviating", "deja2022analyzing"):
        entry = bib[bib.index(f"{{{key},") :].split("\n}", 1)[0]
        title = re.search(r"title\s*=\s*\{(.*)\},", entry).group(1)
        title = re.sub(r"[{}]", "", title)
        cited = [" ".join(r["title"].split()) for r in citation["references"]]
        assert title in cited, f"CITATION.cff does not cite {key}"


def test_the_test_extra_declares_every_package_the_unit_tests_import() -> None:
    """`pip install ".[test]"` must be enough to collect and run tests/ (the numpyro
    backend's tests skip without its extra)."""
    declared = _requirement_names(
        PROJECT["dependencies"] + PROJECT["optional-dependencies"]["test"]
    )
    skipped_without_their_extra = {"jax", "numpyro"}  # pytest.importorskip / skipif
    # the tests' own helpers, the benchmark scripts some tests import, and the package
    local = {
        p.stem
        for folder in ("tests", "benchmarks")
        for p in (ROOT / folder).rglob("*.py")
    } | {"companion"}
    distributions = packages_distributions()
    missing = set()
    for path in (ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if (
                    top in sys.stdlib_module_names
                    or top in local
                    or top in skipped_without_their_extra
                ):
                    continue
                owners = {_canonical(d) for d in distributions.get(top, [top])}
                if not owners & declared:
                    missing.add(f"{top} ({path.relative_to(ROOT)})")
    assert not missing, f"imported by the tests, not in the test extra: {missing}"
