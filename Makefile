# Two commands on a fresh machine: `make demo` and `make test` (both create .venv if missing).
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   := configs/image/animals/base.yaml
RUNS   := runs/animals

.PHONY: install test lint demo clean

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest

demo: install
	WANDB_MODE=$${WANDB_MODE:-offline} $(PY) main.py -c $(DEMO) -p train overwrite=true
	$(PY) main.py -c $(DEMO) -p inference
	$(PY) main.py -c $(DEMO) -p sample
	$(PY) -m evaluations.export_reference -c $(DEMO) --out $(RUNS)/reference.npz --num 256
	$(PY) -m evaluations.fid $(RUNS)/reference.npz $$(ls -t $(RUNS)/inference/*.npz | head -n 1)

clean:
	rm -rf $(VENV) runs
