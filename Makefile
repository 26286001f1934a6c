# Two commands on a fresh machine: `make demo` and `make test` (each installs what it needs first).
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, as a CPU build, so that nothing below pulls a CUDA one
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest

test-fast: install  # leaves out the tests marked slow (about a third of the time)
	$(PY) -m pytest -m "not slow"

demo: install
	$(VENV)/bin/sidrec demo --out demo-out

.PHONY: install test test-fast demo
