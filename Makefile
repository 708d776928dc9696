# The two commands the README starts with:  make demo  (set up + main job)  and  make test.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
export OMP_WAIT_POLICY ?= PASSIVE
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1

.PHONY: setup demo test lint docs docs-check bench-reference browser postgres

# torch first, pinned: the CPU wheel of 2.13.0 is on disk; an unpinned torch would pull a multi-GB CUDA build.
$(BIN)/mrl: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,postgres,qdrant,svs,onnx,mteb,langchain,llama-index,ray]'
	touch $(BIN)/mrl

setup: $(BIN)/mrl

demo: setup
	$(BIN)/mrl run configs/scifact-quick.toml

# The web-page test drives Debian's Chromium headless (playwright uses it; it downloads no browser).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "install Debian's chromium for the browser test (sudo apt-get install chromium)"; fi; }

# Debian's PostgreSQL + pgvector built from Debian's source package; tests start their own server on loopback.
# Under CI a missing server is an error; elsewhere the PostgreSQL tests are skipped with the reason.
postgres:
	@scripts/install-pgvector.sh || [ -z "$$CI" ]

test: setup browser postgres docs-check
	MRL_DATA=$(DATA) $(BIN)/python -m pytest -q -ra

# the documentation site: broken links, missing pages and API references that do not resolve fail the build
docs-check: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir build/site

docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench-reference: setup
	PATH=$(BIN):$$PATH bash benchmarks/reference_base.sh $(DATA)
