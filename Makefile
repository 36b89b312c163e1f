# Two commands on a fresh machine: `make demo` and `make test` (both create .venv if missing).
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
UV     := $(VENV)/bin/uv pip install -q --python $(PY)
DEMO   := configs/image/animals/base.yaml
RUNS   := runs/animals

ABLATIONS := config=glob([base,faster,ablations/*],exclude=[ablations/weight_only,ablations/lam06])
STEPS  ?= 2000
# pytest-xdist processes for make test: one per core; TEST_WORKERS=0 runs the suite in one process
TEST_WORKERS ?= auto

.PHONY: install test lint demo ablations gpu-check clean

# uv (astral-sh/uv) installs the requirements: it fetches and unpacks torch's wheels in parallel,
# about 3x faster than pip here (docs/demo.md); pip only installs uv itself.
$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q uv
	$(UV) -r requirements.txt
	$(UV) --no-deps -r requirements-nodeps.txt
	$(UV) --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal

demo: install
	WANDB_MODE=$${WANDB_MODE:-offline} $(PY) main.py -c $(DEMO) -p train overwrite=true
	$(PY) main.py -c $(DEMO) -p inference
	$(PY) main.py -c $(DEMO) -p sample
	$(PY) -m speed.experiments.export_reference -c $(DEMO) --out $(RUNS)/reference.npz --num 256
	$(PY) -m evaluations.fid $(RUNS)/reference.npz $$(ls -t $(RUNS)/inference/*.npz | head -n 1)

# The SpeeD paper's ablation table (baseline, SpeeD, k, lam, components) on the demo dataset:
# a 12-run sweep, its samples, domain FID and one summary table (`make ablations STEPS=800`: quick).
ablations: install
	$(PY) main.py -c $(DEMO) -p train -m '$(ABLATIONS)' max_training_steps=$(STEPS)
	$(PY) main.py -c $(DEMO) -p inference -m '$(ABLATIONS)' max_training_steps=$(STEPS)
	test -f $(RUNS)/reference.npz || $(PY) -m speed.experiments.export_reference -c $(DEMO) --out $(RUNS)/reference.npz --num 256
	test -f runs/domain_classifier.pt || $(PY) -m evaluations.domain_classifier --out runs/domain_classifier.pt
	$(PY) -m speed.sweep.evaluate $(RUNS) --ref $(RUNS)/reference.npz --features domain
	$(PY) -m speed.sweep.summary $(RUNS)

# The CUDA path on a GPU (tests, DiT-XL/2 throughput, sampling): one line and exit 0 without one.
gpu-check: install
	$(PY) benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) runs
