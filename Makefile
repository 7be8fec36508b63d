# kdbench — every target does its own set-up on a fresh machine.
#   make demo    train a teacher on the embedded digits data, distil, print the table
#   make test    install (if needed) and run the test suite
#   make bench   throughput benchmark (classic loop vs kdbench engine vs compute bound)
#   make lint    static checks

PYTHON    ?= python3
VENV      ?= .venv
PY        := $(VENV)/bin/python
PIP       := $(PY) -m pip
# torch is installed first and only when missing. The default is the build that lies on this
# machine's disk (offline); override e.g. TORCH_SPEC="torch torchvision --index-url ..." elsewhere.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP     := $(VENV)/.kdbench-installed
RESULTS   ?= demo-results

.PHONY: install test demo bench lint clean

install: $(STAMP)

	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch, torchvision" 2>/dev/null || $(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e '.[dev,slurm]'
	@touch $(STAMP)

test: install
	$(PY) -m pytest -q

demo: install
	$(VENV)/bin/kdbench demo --results-dir $(RESULTS)

bench: install
	$(VENV)/bin/kdbench bench

lint: install
	@$(PY) -c "import ruff" 2>/dev/null || $(PIP) install -q ruff
	$(PY) -m ruff check kdbench tests plugins

clean:
	rm -rf $(RESULTS) .pytest_cache build *.egg-info
