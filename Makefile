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

# The tracker plugins pull in mlflow and wandb (and the extra, tensorboard); their tests run
# offline: MLflow's local store, W&B's offline mode.
$(STAMP): pyproject.toml plugins/kdbench-ray/pyproject.toml \
          plugins/kdbench-mlflow/pyproject.toml plugins/kdbench-wandb/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch, torchvision" 2>/dev/null || $(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e '.[dev,slurm,tensorboard]'
	$(PIP) install -q -e ./plugins/kdbench-ray
	$(PIP) install -q -e ./plugins/kdbench-mlflow -e ./plugins/kdbench-wandb
	@touch $(STAMP)

test: install
	$(PY) -m pytest -q

# The demo: one resnet56 teacher trajectory on the embedded digits data (trained once, reused),
# the resnet20 student distilled from the full and from the half-way teacher, the vanilla
# student, two seeds each, then the comparison table. About 3-4 minutes on a 2-core CPU.
KDB       := $(VENV)/bin/kdbench
DEMO_RUN  := $(KDB) run --dataset digits --student resnet20 --teacher-arch resnet56 \
             --results-dir $(RESULTS)

demo: install
	@for seed in 0 1; do \
	  $(DEMO_RUN) --seed $$seed --loss ce && \
	  $(DEMO_RUN) --seed $$seed --loss kd --teacher full && \
	  $(DEMO_RUN) --seed $$seed --loss kd --teacher intermediate || exit 1; \
	done
	$(KDB) table --results-dir $(RESULTS)

bench: install
	$(VENV)/bin/kdbench bench

lint: install
	@$(PY) -c "import ruff" 2>/dev/null || $(PIP) install -q ruff
	$(PY) -m ruff check kdbench tests plugins

clean:
	rm -rf $(RESULTS) .pytest_cache build *.egg-info
