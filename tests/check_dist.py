"""Checks the sdist and the wheel that ``make dist`` builds, as a package index and a
student's ``pip install`` would get them.

    python tests/check_dist.py DIST_DIR

The wheel must install the import package ``companion`` and nothing else (no tests, no
book), with its type marker, the MIT licence text and the metadata an index shows
(name, version, Python versions, licence, project URLs). The sdist carries the licence,
the citation and the package, and no tests (MANIFEST.in says why). Exits 1 with one
line per problem.
"""

from __future__ import annotations

import argparse
import email.parser
import re
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = "vae-robustness-companion"
STEM = NAME.replace("-", "_")


def _version() -> str:
    text = (ROOT / "companion" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"$', text, flags=re.M)
    if match is None:
        raise SystemExit("companion/__init__.py sets no __version__")
    return match.group(1)


def wheel_problems(wheel: Path, *, version: str) -> list[str]:
    """What is wrong with ``wheel``: its files and its METADATA."""
    problems = []
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"{STEM}-{version}.dist-info"
        metadata = email.parser.Parser().parsestr(
            archive.read(f"{info}/METADATA").decode()
        )
    tops = {n.split("/")[0] for n in names} - {info}
    if tops != {"companion"}:
        problems.append(f"wheel installs {sorted(tops)}, not only companion/")
    for required in (
        "companion/__init__.py",
        "companion/py.typed",
        "companion/hmc/numpyro.py",
        "companion/diffusion/ddpm.py",
        f"{info}/licenses/LICENSE",
    ):
        if required not in names:
            problems.append(f"wheel lacks {required}")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = {
        "Name": NAME,
        "Version": version,
        "Requires-Python": pyproject["requires-python"],
        "License-Expression": "MIT",
        "Description-Content-Type": "text/markdown",
    }
    for field, value in expected.items():
        if metadata.get(field) != value:
            problems.append(f"METADATA {field}: {metadata.get(field)!r}, not {value!r}")
    urls = {u.split(",")[0] for u in metadata.get_all("Project-URL") or []}
    for label in ("Documentation", "Source"):
        if label not in urls:
            problems.append(f"no {label} URL in METADATA")
    if not metadata.get("Author") and not metadata.get("Author-email"):
        problems.append("METADATA names no author")
    description = metadata.get_payload()
    if f"pip install {NAME}" not in description:
        problems.append(f"the description does not say `pip install {NAME}`")
    return problems


def sdist_problems(sdist: Path, *, version: str) -> list[str]:
    """What is wrong with ``sdist``: the files it carries."""
    prefix = f"{STEM}-{version}/"
    with tarfile.open(sdist) as archive:
        names = {n.removeprefix(prefix) for n in archive.getnames()}
    problems = [
        f"sdist lacks {f}"
        for f in ("LICENSE", "CITATION.cff", "pyproject.toml", "companion/__init__.py")
        if f not in names
    ]
    for folder in ("tests/", "book/", "benchmarks/"):
        if any(n.startswith(folder) for n in names):
            problems.append(f"sdist ships {folder} (MANIFEST.in prunes it)")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dist", type=Path, help="the folder make dist built into")
    args = parser.parse_args()
    version = _version()
    wheels = sorted(args.dist.glob("*.whl"))
    sdists = sorted(args.dist.glob("*.tar.gz"))
    expected_wheel = f"{STEM}-{version}-py3-none-any.whl"
    expected_sdist = f"{STEM}-{version}.tar.gz"
    if [w.name for w in wheels] != [expected_wheel]:
        print(f"expected one wheel {expected_wheel}, found {[w.name for w in wheels]}")
        return 1
    if [s.name for s in sdists] != [expected_sdist]:
        print(f"expected one sdist {expected_sdist}, found {[s.name for s in sdists]}")
        return 1
    problems = wheel_problems(wheels[0], version=version) + sdist_problems(
        sdists[0], version=version
    )
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{expected_wheel}, {expected_sdist}: contents and metadata as expected")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
