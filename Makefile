# `make demo` and `make test` work on a fresh machine: each sets up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export TF_CPP_MIN_LOG_LEVEL := 2
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup chromium demo test test-fast bench lint docs-images clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch==2.13.0: the CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[all,test]' torch==2.13.0
	touch $(STAMP)

setup: $(STAMP)

# The served app is tested in a real browser: Debian's Chromium, never `playwright install`.
chromium:
	@test -x /usr/bin/chromium || (apt-get update -q && apt-get install -y -q chromium)

demo: setup
	$(BIN)/tensortap demo

test: setup chromium
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not browser"

# The benchmarks' own extra (transformers, for bench_bert); the peers get their own venv.
bench: setup
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[bench]'
	$(BIN)/python -m benchmarks

# mypy must see core/ as `tensortap.core` (the repo root is the package): a symlink named
# tensortap gives it that name, so cross-module types are checked, not read as Any.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	mkdir -p build/typecheck && ln -sfn $(CURDIR) build/typecheck/tensortap
	cd build/typecheck && MYPYPATH=. $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p tensortap.core

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache runs
