# Two commands on a fresh machine: `make run` serves the shipped lite model, `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
MODEL ?= models/mspfn-lite.onnx
WEIGHTS ?= weights/mspfn-lite.safetensors

.PHONY: venv run test lint typecheck export train evaluate clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[train,dev]'
	touch $@

$(MODEL): $(WEIGHTS) | venv
	$(PY) -m model_export --weights $(WEIGHTS) --out $(MODEL) --optimize

export: $(MODEL)

run: venv $(MODEL)
	DERAIN_MODEL_PATH=$(MODEL) $(PY) -m service --host $(HOST) --port $(PORT)

SRC := $(wildcard mspfn model_export service benchmarks)
lint: venv
	$(PY) -m ruff check $(SRC) tests
	$(PY) -m ruff format --check $(SRC) tests

typecheck: venv
	$(PY) -m mypy $(filter-out benchmarks,$(SRC))

test: venv lint typecheck
	$(PY) -m pytest -q

train: venv
	$(PY) -m mspfn.train --preset lite --train ../shared/data/train/RainTrainL \
		--val ../shared/data/val/Rain12 --out runs/lite

evaluate: venv
	$(PY) -m mspfn.evaluate --model $(WEIGHTS) --data ../shared/data/val/Rain12

clean:
	rm -rf $(VENV) models .pytest_cache .mypy_cache .ruff_cache
