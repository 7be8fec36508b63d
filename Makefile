# kdbench — every target does its own set-up on a fresh machine.
#   make demo    train a teacher on the embedded digits data, distil, print the table
#   make test    install (if needed) and run the test suite (the fast tier)
#   make test-slow  the slow tier: engine fixture records, kill -9 fault injection
#   make bench   throughput benchmark (classic loop vs kdbench engine vs compute bound)
#   make gpu-check  on a CUDA machine (not in CI, < 10 min): bf16/fp16 runs, bench, 2-rank DDP
#   make lint    static checks: ruff and the import-layer contract (CI runs it first)

PYTHON    ?= python3
VENV      ?= .venv
PY        := $(VENV)/bin/python
PIP       := $(PY) -m pip
# torch is installed first and only when missing. The default is the build that lies on this
# machine's disk (offline); override e.g. TORCH_SPEC="torch torchvision --index-url ..." elsewhere.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP     := $(VENV)/.kdbench-installed
RESULTS   ?= demo-results

.PHONY: install test test-slow demo reference bench gpu-check lint clean

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

# the fast tier (minutes); the slow tier (engine fixtures, kill -9 fault injection) is
# `make test-slow`, which CI runs too
test: install
	$(PY) -m pytest -q -m "not slow"

test-slow: install
	$(PY) -m pytest -q -m slow

# The demo: a true story on the embedded digits data. 40% of the training labels are flipped
# to another class (symmetric noise, the same flips for every run, the test split untouched).
# A resnet8 is trained on them three ways: cross-entropy alone; KD from a resnet20 teacher
# trained on the same noisy labels; KD from a resnet20 teacher trained on the clean labels
# (--teacher-data-transform none). Three seeds each, then the accuracy table and the table of
# how many wrong labels each student reproduces. 117 s on the idle 2-core development machine.
KDB       := $(VENV)/bin/kdbench
DEMO_RUN  := $(KDB) run --dataset digits --student resnet8 --results-dir $(RESULTS) \
             --data-transform label_noise:kind=symmetric,rate=0.4 --eval memorisation

demo: install
	@for seed in 0 1 2; do \
	  $(DEMO_RUN) --seed $$seed --loss ce && \
	  $(DEMO_RUN) --seed $$seed --loss kd --teacher-arch resnet20 && \
	  $(DEMO_RUN) --seed $$seed --loss kd --teacher-arch resnet20 --teacher-data-transform none \
	  || exit 1; \
	done
	$(KDB) table --results-dir $(RESULTS) --cols loss,teacher_data --vs ce
	$(KDB) table --results-dir $(RESULTS) --cols loss,teacher_data --metric noisy_fit_noisy_last \
	  --vs ce

# A study of results/ remade from nothing (long: see results/<study>/README.md for its cost):
#   make reference STUDY=checkpoint-kd-cifar10
STUDY     ?= checkpoint-kd-cifar10
reference: install
	$(KDB) reproduce $(STUDY)

bench: install
	$(VENV)/bin/kdbench bench

# The CUDA path on the first GPU machine (scripts/gpu_check.py): one JSON of figures
gpu-check: install
	$(PY) scripts/gpu_check.py --out gpu-check.json

# style (ruff, pinned in the dev extra of pyproject.toml, so a ruff release never changes the
# verdict), and the import-layer contract (no cycles, nothing imports the CLI, layers point down)
lint: install
	$(PY) -m ruff check kdbench tests plugins
	$(PY) -m pytest -q tests/test_layers.py

clean:
	rm -rf $(RESULTS) .pytest_cache build *.egg-info
