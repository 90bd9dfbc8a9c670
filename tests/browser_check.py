"""Open every page of the built book in headless Chromium and measure what overflows.

Readers meet the HTML, so this check looks at it as they do: each page of
``_build/html`` at a 1300 px wide window, after MathJax has typeset the maths (from a
local copy, so no network is needed). On each page it measures, inside the article
column:

* ``code``: code cells that scroll sideways (a source line too long for the column);
* ``output``: text outputs that scroll sideways (printed lines too long);
* ``table``: tables wider than the column;
* ``math``: display equations wider than the column;
* ``figure``: figures shown at less than 80 % of their size (their fonts shrink with
  them: a figure made wider than about 7.5 in is drawn at a fraction of its size).

and on the whole page:

* ``image``: images that did not load (a missing file, a broken data URI);
* ``page``: anything that makes the page itself scroll sideways;
* ``launch``: Colab / Binder / repository buttons that point anywhere but the repository
  in ``_config.yml`` (and, on a chapter, at anything but its own notebook), or a chapter
  without its Colab and Binder buttons;
* ``maths``: maths MathJax did not typeset, typeset as an error (bad TeX), or drew with
  a macro it does not know.

Usage::

    python tests/browser_check.py --html _build/html --mathjax PATH/tex-mml-chtml.js \\
        [--known tests/browser_known.json] [--screenshots _build/screenshots]

It first opens a page with one planted fault of every kind and stops unless it finds
all nine, so a probe broken by a theme or browser update cannot pass the book. With
``--screenshots`` it also saves each page as a PNG for a person to look at (the whole
page, or its first 16 000 px on the longest chapters).

It exits non-zero when a page has more faults of a kind than ``--known`` allows (the
ones not fixed yet, listed so that none is added; the list may only shrink) and prints
every fault it found. Chromium runs with ``--dump-dom``: a script injected
into a copy of each page measures the layout once MathJax is done and writes its
findings into the DOM, which Chromium prints (no WebDriver needed).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import string
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

KINDS = (
    "code",
    "output",
    "table",
    "math",
    "figure",
    "image",
    "page",
    "launch",
    "maths",
)
WINDOW = (1300, 1000)
# Screenshots are cut at this height: only the longest chapters are taller, and a
# taller window nears the 16 384 px texture size of Chromium's compositor.
MAX_SCREENSHOT_PX = 16_000
MIN_FIGURE_SCALE = 0.8
REPORT_ID = "browser-check-report"

# Runs in the page: waits for MathJax, measures, and appends the findings as JSON.
MEASURE_JS = string.Template("""
<script>
(function () {
  function snippet(el) {
    return (el.textContent || "").trim().replace(/\\s+/g, " ").slice(0, 70);
  }
  async function measure() {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
      await MathJax.startup.promise;
    }
    const article = document.querySelector("article.bd-article")
      || document.querySelector("main") || document.body;
    const right = article.getBoundingClientRect().right;
    const found = [];
    for (const pre of article.querySelectorAll("pre")) {
      const over = pre.scrollWidth - pre.clientWidth;
      if (over > 1) {
        const kind = pre.closest(
          ".cell_input, .highlight-python, .highlight-ipython3, .highlight-default"
        ) && !pre.closest(".cell_output") ? "code" : "output";
        found.push({kind: kind, excess_px: over, what: snippet(pre)});
      }
    }
    for (const table of article.querySelectorAll("table")) {
      const box = table.getBoundingClientRect();
      const parent = table.parentElement;
      const over = Math.max(box.right - right, parent.scrollWidth - parent.clientWidth);
      if (over > 1) {
        found.push({kind: "table", excess_px: Math.round(over), what: snippet(table)});
      }
    }
    const equations = "div.math, mjx-container[display='true']:not(div.math *)";
    for (const eq of article.querySelectorAll(equations)) {
      const box = eq.getBoundingClientRect();
      const over = Math.max(eq.scrollWidth - eq.clientWidth, box.right - right);
      const inner = eq.querySelector("mjx-math");
      const innerOver = inner ? inner.getBoundingClientRect().right - right : 0;
      const excess = Math.max(over, innerOver);
      if (excess > 1) {
        found.push({kind: "math", excess_px: Math.round(excess), what: snippet(eq)});
      }
    }
    for (const img of article.querySelectorAll("img")) {
      if (!img.naturalWidth) { continue; }
      const scale = img.clientWidth / img.naturalWidth;
      if (scale < $min_scale) {
        found.push({kind: "figure", excess_px: img.naturalWidth - img.clientWidth,
                    what: "shown at " + Math.round(100 * scale) + "% of "
                          + img.naturalWidth + " px"});
      }
    }
    for (const img of document.querySelectorAll("img")) {
      if (!img.complete) {
        await new Promise(function (done) {
          img.addEventListener("load", done);
          img.addEventListener("error", done);
        });
      }
      if (!img.naturalWidth) {
        const src = (img.getAttribute("src") || "").slice(0, 60);
        found.push({kind: "image", excess_px: 0, what: "not loaded: " + src});
      }
    }
    const doc = document.documentElement;
    if (doc.scrollWidth > doc.clientWidth + 1) {
      const wide = Array.from(document.body.querySelectorAll("*")).filter(
        function (el) { return el.getBoundingClientRect().right > doc.clientWidth + 1; }
      );
      found.push({kind: "page", excess_px: doc.scrollWidth - doc.clientWidth,
                  what: wide.slice(-3).map(snippet).join(" / ").slice(0, 70)});
    }
    const repo = $repo, notebook = $notebook;
    const hosts = ["colab.research.google.com", "mybinder.org"];
    const buttons = Array.from(
      document.querySelectorAll(".article-header-buttons a[href]")
    ).map(function (a) { return a.href; });
    for (const href of buttons) {
      const launches = hosts.some(function (h) { return href.includes(h); });
      if (!launches && !href.includes("github.com")) { continue; }
      if (!href.includes(repo) || (launches && notebook && !href.includes(notebook))) {
        found.push({kind: "launch", excess_px: 0, what: href.slice(0, 70)});
      }
    }
    if (notebook) {
      for (const host of hosts) {
        if (!buttons.some(function (href) { return href.includes(host); })) {
          found.push({kind: "launch", excess_px: 0, what: "no " + host + " button"});
        }
      }
    }
    for (const el of article.querySelectorAll("div.math, span.math")) {
      if (!el.querySelector("mjx-container")) {
        found.push({kind: "maths", excess_px: 0, what: "not typeset: " + snippet(el)});
      }
    }
    for (const el of article.querySelectorAll("mjx-merror")) {
      found.push({kind: "maths", excess_px: 0,
                  what: "TeX error: " + (el.getAttribute("data-mjx-error") || "")});
    }
    // MathJax draws a macro it does not know as red text (its noundefined package)
    for (const el of article.querySelectorAll("mtext[mathcolor='red']")) {
      found.push({kind: "maths", excess_px: 0, what: "unknown macro: " + snippet(el)});
    }
    const out = document.createElement("script");
    out.type = "application/json";
    out.id = "$report_id";
    out.textContent = JSON.stringify({
      column_px: Math.round(article.clientWidth),
      height_px: doc.scrollHeight,
      found: found,
    });
    document.body.appendChild(out);
  }
  window.addEventListener("load", function () { measure(); });
})();
</script>
""")


def probe(*, repo: str, notebook: str | None) -> str:
    """The measuring script for one page: ``repo`` is the ``owner/name`` every button
    must point at, ``notebook`` the page's own notebook (``book/x.ipynb``) if it has
    one."""
    return MEASURE_JS.substitute(
        min_scale=MIN_FIGURE_SCALE,
        report_id=REPORT_ID,
        repo=json.dumps(repo),
        notebook=json.dumps(notebook or ""),
    )


def repository_slug(config: Path) -> str:
    """``owner/name`` of the GitHub repository in the book's ``_config.yml``."""
    url = yaml.safe_load(config.read_text(encoding="utf-8"))["repository"]["url"]
    match = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)/?", url)
    if not match:
        raise SystemExit(
            f"browser check: repository.url in {config} is {url!r}, not "
            "https://github.com/OWNER/NAME"
        )
    return match.group(1)


def find_chromium() -> str:
    """The Chromium (or Chrome) executable on PATH."""
    for name in (
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit(
        "browser check: no Chromium on PATH; install it (Debian: apt-get install "
        "chromium)"
    )


def prepare_pages(html: Path, mathjax: Path, into: Path, *, repo: str) -> list[Path]:
    """Copy the built book to ``into`` with MathJax loaded from ``mathjax`` and the
    probe added (``repo``: the ``owner/name`` the buttons must point at)."""
    if not (html / "index.html").is_file():
        raise SystemExit(
            f"browser check: {html} holds no built book (run make html first)"
        )
    if not mathjax.is_file():
        raise SystemExit(
            f"browser check: MathJax not found at {mathjax} (make installs it with npm)"
        )
    shutil.copytree(html, into, dirs_exist_ok=True)
    pages = []
    for page in sorted(into.rglob("*.html")):
        if (
            page.name in ("search.html", "genindex.html")
            or "_static" in page.parts
            or "_sources" in page.parts
        ):
            continue
        text = page.read_text(encoding="utf-8")
        text, n = re.subn(
            r'src="https://cdn\.jsdelivr\.net/npm/mathjax@3/es5/[^"]+"',
            f'src="{mathjax.resolve().as_uri()}"',
            text,
        )
        if "</body>" not in text:
            continue
        pages.append(page)
        source = page.relative_to(into).with_suffix(".ipynb")
        notebook = source.as_posix() if (html / "_sources" / source).is_file() else None
        page.write_text(
            text.replace("</body>", probe(repo=repo, notebook=notebook) + "</body>"),
            encoding="utf-8",
        )
    return pages


def _chromium(chromium: str, page: Path, *, height: int, extra: list[str], timeout_s):
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--window-size={WINDOW[0]},{height}",
        "--virtual-time-budget=30000",
        *extra,
        page.as_uri(),
    ]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def measure_page(
    chromium: str,
    page: Path,
    *,
    screenshot: Path | None = None,
    timeout_s: float = 120,
) -> dict:
    """Load ``page`` in headless Chromium and return the probe's report; with
    ``screenshot``, also save the whole page there as a PNG (a second load, with a
    window as tall as the page, up to ``MAX_SCREENSHOT_PX``)."""
    done = _chromium(
        chromium, page, height=WINDOW[1], extra=["--dump-dom"], timeout_s=timeout_s
    )
    match = re.search(
        rf'<script type="application/json" id="{REPORT_ID}">(.*?)</script>',
        done.stdout,
        re.S,
    )
    if not match:
        raise RuntimeError(
            f"browser check: {page.name} gave no report (Chromium exit "
            f"{done.returncode}): {done.stderr.strip()[-500:]}"
        )
    report = json.loads(match.group(1))
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        shot = _chromium(
            chromium,
            page,
            height=max(WINDOW[1], min(report["height_px"], MAX_SCREENSHOT_PX)),
            extra=[f"--screenshot={screenshot}"],
            timeout_s=timeout_s,
        )
        if not screenshot.is_file():
            raise RuntimeError(
                f"browser check: no screenshot of {page.name} (Chromium exit "
                f"{shot.returncode}): {shot.stderr.strip()[-500:]}"
            )
    return report


def compare(reports: dict[str, dict], known: dict[str, dict[str, int]]) -> list[str]:
    """Pages × kinds where more overflows were found than ``known`` allows."""
    failures = []
    for page, report in reports.items():
        counts = Counter(item["kind"] for item in report["found"])
        for kind in KINDS:
            allowed = known.get(page, {}).get(kind, 0)
            if counts[kind] > allowed:
                failures.append(
                    f"{page}: {counts[kind]} {kind} overflow(s), {allowed} allowed"
                )
    return failures


# A page with one fault of every kind: the check must find all nine before it is
# trusted with the book (a probe that finds nothing would pass every page). Its one
# notebook button points at another repository, and its Binder button is missing.
SELF_TEST_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<script src="$mathjax"></script></head><body>
<div class="article-header-buttons"><a href="$colab">Colab</a></div>
<article class="bd-article" style="width: 600px">
<div class="cell_input"><div class="highlight"><pre>$long</pre></div></div>
<div class="cell_output"><pre>$long</pre></div>
<table><tr><td>$word</td></tr></table>
<div class="math notranslate nohighlight">\\[$equation\\]</div>
<span class="math notranslate nohighlight">\\(\\nosuchmacro x\\)</span>
<img style="max-width: 100%" alt="wide" src="$image">
<img alt="missing" src="no-such-image.png">
</article></body></html>
"""


def self_test(chromium: str, mathjax: Path, into: Path) -> None:
    """Check that the probe finds a planted fault of every kind.

    Raises:
        SystemExit: a kind was not found (the probe or the browser is broken).
    """
    page = into / "self-test.html"
    page.write_text(
        string.Template(SELF_TEST_PAGE)
        .substitute(
            mathjax=mathjax.resolve().as_uri(),
            colab="https://colab.research.google.com/github/someone/else/blob/main/"
            "book/self-test.ipynb",
            long="x = 1  # " + "wide " * 60,
            word="w" * 400,
            equation=" + ".join(f"x_{{{i}}}^2" for i in range(120)),
            image="data:image/svg+xml;utf8,"
            "<svg xmlns='http://www.w3.org/2000/svg' width='2000' height='8'/>",
        )
        .replace(
            "</body>",
            probe(repo="owner/book", notebook="book/self-test.ipynb") + "</body>",
        ),
        encoding="utf-8",
    )
    kinds = {item["kind"] for item in measure_page(chromium, page)["found"]}
    if kinds != set(KINDS):
        raise SystemExit(
            f"browser check: the self-test page should fail in every kind {KINDS}, "
            f"but the probe found {sorted(kinds)}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--html", type=Path, default=Path("_build/html"))
    parser.add_argument(
        "--mathjax",
        type=Path,
        required=True,
        help="local tex-mml-chtml.js of MathJax 3",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=Path("_config.yml"),
        help="the book's configuration (its repository.url is what buttons must use)",
    )
    parser.add_argument(
        "--screenshots",
        type=Path,
        help="folder for one whole-page PNG per page (replaced on every run)",
    )
    parser.add_argument(
        "--known",
        type=Path,
        help="JSON {page: {kind: count}} of overflows not fixed yet",
    )
    args = parser.parse_args(argv)
    chromium = find_chromium()
    known = json.loads(args.known.read_text()) if args.known else {}
    with tempfile.TemporaryDirectory(prefix="browser-check-") as tmp:
        root = Path(tmp)
        self_test(chromium, args.mathjax, root)
        book = root / "book"
        pages = prepare_pages(
            args.html, args.mathjax, book, repo=repository_slug(args.config)
        )
        if args.screenshots is not None:
            shutil.rmtree(args.screenshots, ignore_errors=True)

        def shot(page: Path) -> Path | None:
            if args.screenshots is None:
                return None
            name = page.relative_to(book).with_suffix(".png").as_posix()
            return args.screenshots / name.replace("/", "__")

        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(
                pool.map(lambda p: measure_page(chromium, p, screenshot=shot(p)), pages)
            )
        reports = {
            str(p.relative_to(root / "book")): r
            for p, r in zip(pages, results, strict=True)
        }
    for page, report in reports.items():
        counts = Counter(item["kind"] for item in report["found"])
        summary = (
            ", ".join(f"{counts[k]} {k}" for k in KINDS if counts[k]) or "no faults"
        )
        print(f"{page} (column {report['column_px']} px): {summary}")
        for item in report["found"]:
            print(f"    {item['kind']:6s} +{item['excess_px']:>4} px  {item['what']}")
    failures = compare(reports, known)
    found = {
        page: Counter(i["kind"] for i in r["found"]) for page, r in reports.items()
    }
    fixed = [
        f"{page}: {kind} {n} → {found.get(page, Counter())[kind]}"
        for page, kinds in known.items()
        for kind, n in kinds.items()
        if found.get(page, Counter())[kind] < n
    ]
    if fixed:
        print(
            "browser check FAILED, fewer overflows than --known lists (lower the "
            "counts there, so that none can come back unnoticed):\n    "
            + "\n    ".join(fixed)
        )
    if failures:
        print("browser check FAILED, new overflows:\n    " + "\n    ".join(failures))
    if fixed or failures:
        return 1
    print(f"browser check passed: {len(reports)} pages at {WINDOW[0]} px")
    if args.screenshots is not None:
        print(f"screenshots of every page in {args.screenshots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
