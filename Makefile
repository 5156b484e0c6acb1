# Worker Mesh: the two commands a newcomer needs are `make demo` and `make test`.
# Both create .venv, install the pinned dependencies and the system programs they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean venv

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	./scripts/system-deps.sh
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(VENV)/bin/mesh demo

test: $(STAMP)
	./scripts/system-deps.sh --test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy worker_mesh
	$(VENV)/bin/lint-imports
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy worker_mesh
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	./scripts/system-deps.sh
	HF_HUB_OFFLINE=1 $(PY) -m benchmarks.run_all

clean:
	rm -rf .mesh .pytest_cache .ruff_cache .mypy_cache
