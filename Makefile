# Two commands on a fresh machine: `make run` serves the shipped lite model, `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
WEIGHTS ?= weights/mspfn-lite.safetensors
FP32 := models/mspfn-lite.onnx
INT8 := models/mspfn-lite-int8.onnx
# `make run MODEL=PATH` serves another exported model (the int8 one is an experiment: see README)
MODEL ?= $(FP32)

.PHONY: venv run test test-fast docker-test lint typecheck export benchmark train finetune evaluate clean valsets general general-fine general-local general-polish capacity general-wide general-wider general-native pair rain12-enlarged

venv: $(VENV)/.installed

# What serving and export need (the service, ONNX Runtime, CPU torch and the exporter): `make run`.
SERVE := $(VENV)/.serve-installed
$(SERVE): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[cpu,train]'
	touch $@

# Everything, the test tools included (playwright, schemathesis, pip-audit, linters): `make test`.
$(VENV)/.installed: $(SERVE)
	$(PY) -m pip install --quiet -e '.[cpu,train,dev]'
	touch $@

# Rebuilt when the weights or the exporter (its graph rewrites included) change.
$(FP32): $(WEIGHTS) $(wildcard model_export/*.py) | $(SERVE)
	$(PY) -m model_export --weights $(WEIGHTS) --out $(FP32) --optimize

$(INT8): $(FP32)
	$(PY) -m model_export.quantize --model $(FP32) --out $(INT8)

export: $(FP32)

benchmark: venv $(FP32) $(INT8)
	$(PY) -m benchmarks

run: $(SERVE) $(MODEL)
	DERAIN_MODEL_PATH=$(MODEL) $(PY) -m service --host $(HOST) --port $(PORT)

SRC := $(wildcard mspfn model_export service benchmarks)
lint: venv
	$(PY) -m ruff check $(SRC) tests
	$(PY) -m ruff format --check $(SRC) tests

typecheck: venv
	$(PY) -m mypy $(filter-out benchmarks,$(SRC))

test: venv lint typecheck
	$(PY) -m pytest -q

# The tests that take under a second each, fixtures included (the others are marked `slow`).
test-fast: venv
	$(PY) -m pytest -q -m "not slow"

# The images built offline (debootstrap base, host-side wheelhouse) and run as users will: one container
# as docker-compose.yml runs it, then `docker compose up` of the CPU profile (README, Docker). Starts
# dockerd when none runs (as root); skips with the reason where Docker cannot run. Not part of `test`.
docker-test: venv
	DERAIN_DOCKER_TESTS=1 $(PY) -m pytest -v -p no:cacheprovider tests/docker

# The shipped lite model's two stages; each resumes from its run folder's last.safetensors when rerun.
# Stage 1, from scratch (ran without --ema, which is now the default):
train: venv
	$(PY) -m mspfn.train --preset lite --train ../shared/data/train/RainTrainL \
		--val ../shared/data/val/Rain12 --out runs/lite --steps 11000 --lr 5e-4 --ema 0
# Stage 2, from stage 1's best weights: larger patches, a fresh cosine, weight averaging.
finetune: venv
	$(PY) -m mspfn.train --preset lite --train ../shared/data/train/RainTrainL \
		--val ../shared/data/val/Rain12 --out runs/lite-ft --init runs/lite/best.safetensors \
		--steps 5000 --lr 2e-4 --warmup 100 --l2-warmup 0 --patch 96 --batch 8 --ema 0.999

evaluate: venv
	$(PY) -m mspfn.evaluate --model $(WEIGHTS) --data ../shared/data/val/Rain12

# The general model's own validation sets: rain rendered (fixed seeds) on the clean photos held out of
# training (every 10th of ../shared/data/clean, mspfn.synthrain.split_clean); the recipe is committed,
# the images are not.
CLEAN := ../shared/data/clean
# Rain12 enlarged x2, x3 and x4 (bicubic on rainy and clean alike) and centre crops of the enlarged pairs
# at the original size: the working-scale measurements (README, "Large photos"). Generated, not committed.
rain12-enlarged: | venv
	$(PY) -m benchmarks.enlarge --data ../shared/data/val/Rain12 --factor 2 3 4 --crop --out data/val

VALSETS := data/val/heavy data/val/mixed data/val/fine
valsets: $(VALSETS)
data/val/heavy: | venv
	$(PY) -m mspfn.synthrain --clean $(CLEAN) --split val --recipe heavy --seed 1 --max-side 481 --out $@
data/val/mixed: | venv
	$(PY) -m mspfn.synthrain --clean $(CLEAN) --split val --recipe mixed --seed 2 --max-side 481 --out $@
data/val/fine: | venv
	$(PY) -m mspfn.synthrain --clean $(CLEAN) --split val --recipe fine --seed 3 --max-side 481 --out $@

# The general model (weights/mspfn-lite.safetensors): from the RainTrainL specialist, RainTrainL pairs
# mixed with rain rendered on the fly on the training part of clean/, crops rescaled 0.5-2x. Each stage
# names its share of synthetic patches (--synth-weight).
GENERAL_ARGS := --train ../shared/data/train/RainTrainL --synth $(CLEAN) \
	--scale 0.5 2 --val ../shared/data/val/Rain12 --val data/val/heavy --val data/val/mixed \
	--l2-warmup 0 --patch 96 --batch 8 --ema 0.99 --val-every 250 --no-progress
general: venv valsets
	nice -n 10 $(PY) -m mspfn.train $(GENERAL_ARGS) --init weights/mspfn-lite-raintrainl.safetensors \
		--synth-weight 0.7 --recipe mixed --out runs/general --steps 3250 --lr 3e-4 --warmup 100

# Its stage 2 (weights/mspfn-lite-fine.safetensors): from stage 1's best, the `general` recipe (mixed +
# real photos' fine rain), also validated on data/val/fine.
general-fine: venv valsets
	nice -n 10 $(PY) -m mspfn.train $(GENERAL_ARGS) --init runs/general/best.safetensors \
		--synth-weight 0.7 --recipe general --val data/val/fine --out runs/general-fine --steps 1250 \
		--lr 1.4e-4 --warmup 0

# Its stage 3: from the average of stage 1's best and stage 2 (a model soup), with channel attention
# over 128 px of the input instead of the whole image, so tiled and whole-image output agree (the
# cosine was set to 2,000 steps and shortened to 1,000 at step 265: this machine ran at ~0.3 step/s).
general-local: venv valsets
	nice -n 10 $(PY) -m mspfn.train $(GENERAL_ARGS) --init runs/general/best.safetensors \
		--init weights/mspfn-lite-fine.safetensors --attention-window 128 --synth-weight 0.7 \
		--recipe general --val data/val/fine --out runs/general-local --steps 1000 --lr 1.5e-4 --warmup 50

# Stage 4, the previous default (its step 1,000; stopped at 1,081): from stage 3's best at a low learning
# rate, with half the patches from RainTrainL instead of 30%, to win back Rain12 (it fell while the fine
# set rose). Resumes from runs/general-polish/last.safetensors.
general-polish: venv valsets
	nice -n 10 $(PY) -m mspfn.train $(GENERAL_ARGS) --init runs/general-local/best.safetensors \
		--attention-window 128 --synth-weight 0.5 --recipe general --val data/val/fine \
		--out runs/general-polish --steps 2000 --lr 5e-5 --warmup 0

# Capacity, measured before choosing (issue: up to ~0.5 M MAC/px allowed): the same fine-tune from
# stage 4 for lite (0.24 M MAC/px) and for lite-133 (0.33 M; grown from it, its extra RCABs start
# as identities, so both start from the same output). Run side by side, one thread each; fails if either does.
# Its lite run's best (step 500) is stage 5, the shipped model.
CAPACITY_ARGS := $(GENERAL_ARGS) --init runs/general-polish/best.safetensors --attention-window 128 \
	--synth-weight 0.5 --recipe general --val data/val/fine --steps 1000 --lr 1e-4 --warmup 20 --threads 1
capacity: venv valsets
	nice -n 10 $(PY) -m mspfn.train $(CAPACITY_ARGS) --preset lite --out runs/capacity-lite & lite=$$!; \
	nice -n 10 $(PY) -m mspfn.train $(CAPACITY_ARGS) --preset lite-133 --out runs/capacity-133 && wait $$lite

# Stage 6, the shipped general network (weights/mspfn-lite-general.safetensors; the default model pairs
# it with the specialist, `make pair`): from stage 5 (capacity-lite's best), 128 px patches instead of 96 (the
# 1/4-scale branch then sees 32 px, not 24), side by side at two shares of synthetic patches (0.5 and
# 0.35: the second gives RainTrainL more weight, for Rain12), one thread each. wide-35 ran its 800
# steps, wide-50 was stopped at 600. Shipped: the average of their bests (a model soup), published with
#   python -m mspfn.publish --run runs/wide-50 --run runs/wide-35 --name mspfn-lite-general \
#     --init-card CARD5 --val ../shared/data/val/Rain12 --val data/val/heavy --val data/val/mixed \
#     --val data/val/fine
# (CARD5: stage 5's card, then weights/mspfn-lite.json). Fails if either run does.
WIDE_ARGS := $(GENERAL_ARGS) --init runs/capacity-lite/best.safetensors --attention-window 128 \
	--recipe general --val data/val/fine --patch 128 --val-every 200 --steps 800 --lr 1e-4 --warmup 20 \
	--threads 1
general-wide: venv valsets
	nice -n 10 $(PY) -m mspfn.train $(WIDE_ARGS) --synth-weight 0.5 --out runs/wide-50 & a=$$!; \
	nice -n 10 $(PY) -m mspfn.train $(WIDE_ARGS) --synth-weight 0.35 --out runs/wide-35 && wait $$a

# Stage 7, an experiment (not shipped): from the average of stage 6's two runs' bests (wide-50 at step
# 400, wide-35 at step 800), 160 px patches (the 1/4-scale branch sees 40 px), 0.35 synthetic, a lower
# peak rate, both threads. Stopped at step 400 of 600: its best scored below the soup it started from
# (README). Resumes from runs/wider/last.safetensors.
general-wider: venv valsets
	nice -n 10 $(PY) -m mspfn.train $(GENERAL_ARGS) --init runs/wide-50/best.safetensors \
		--init runs/wide-35/best.safetensors --attention-window 128 --recipe general --val data/val/fine \
		--synth-weight 0.35 --patch 160 --val-every 200 --steps 600 --lr 5e-5 --warmup 10 --threads 2 \
		--out runs/wider

# Stage 8, an experiment (not shipped): from the shipped soup, RainTrainL pairs at their own scale
# (--pair-scale 1 1) while synthetic rain stays 0.5-2x, 50% and 40% synthetic side by side, one thread
# each. Stopped at step 200 of 400: Rain12 fell in both runs (README).
NATIVE_ARGS := $(GENERAL_ARGS) --pair-scale 1 1 --init weights/mspfn-lite-general.safetensors \
	--attention-window 128 --recipe general --val data/val/fine --patch 128 --val-every 100 --steps 400 --lr 1e-4 --warmup 20 \
	--threads 1
general-native: venv valsets
	nice -n 10 $(PY) -m mspfn.train $(NATIVE_ARGS) --synth-weight 0.5 --out runs/native-50 & a=$$!; \
	nice -n 10 $(PY) -m mspfn.train $(NATIVE_ARGS) --synth-weight 0.4 --out runs/native-40 && wait $$a

# The default model (weights/mspfn-lite.safetensors, what `make run` serves): the general network and the
# RainTrainL specialist as one AgreementPair (mspfn.pair; no training), scored on the four sets.
pair: venv valsets
	$(PY) -m mspfn.pair --general weights/mspfn-lite-general.safetensors \
		--light weights/mspfn-lite-raintrainl.safetensors --name mspfn-lite \
		--val ../shared/data/val/Rain12 --val data/val/heavy --val data/val/mixed --val data/val/fine

clean:
	rm -rf $(VENV) models .pytest_cache .mypy_cache .ruff_cache
