# Every target a user needs; `make help` lists them. Variables: see `make help`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

MODEL ?=
STEPS ?=
DATA_DIR ?= runs/sample-bucket
RESULT_DIR ?= runs/local
SPEC ?= configs/jobs/gpu.yaml

.DEFAULT_GOAL := help
.PHONY: help setup image-env mediapipe test demo demo-classification sample run report browser package image submit status logs cancel list stage tensorboard benchmark constraints clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-20s %s\n", $$1, $$2}'
	@echo "Variables: MODEL=$(or $(MODEL),default) STEPS=$(STEPS) DATA_DIR=$(DATA_DIR) RESULT_DIR=$(RESULT_DIR) SPEC=$(SPEC) DATA=gs://... OUTPUT=gs://... RUN=name SPOT=1 JOB=..."

setup: $(STAMP) ## create .venv and install the project with pinned versions (quick when nothing changed)

# packaging/install.sh is the one install, also run by both Dockerfiles (there without the test tools).
$(STAMP): setup.py constraints.txt packaging/install.sh packaging/js/package-lock.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	bash packaging/install.sh $(BIN)/python dev --editable
	touch $@

# The training images' environment (packaging/image-env.sh, as the Dockerfiles build it, without CUDA's
# libraries): the tests run the job in it.
IMAGE_VENV := .venv-image
IMAGE_STAMP := $(IMAGE_VENV)/.installed
image-env: $(IMAGE_STAMP) ## create .venv-image: the Python environment of the training images (the tests run the job in it)

$(IMAGE_STAMP): setup.py constraints.txt packaging/install.sh packaging/image-env.sh packaging/js/package-lock.json
	PYTHON=$(PYTHON) bash packaging/image-env.sh $(IMAGE_VENV)
	touch $@

# MediaPipe Tasks cannot share .venv (absl-py 2 against our absl-py 1 pin; see the constraints file).
MEDIAPIPE_VENV := .venv-mediapipe
mediapipe: $(MEDIAPIPE_VENV)/.installed ## MediaPipe Tasks in .venv-mediapipe (pinned), for export's `mediapipe` evaluation

$(MEDIAPIPE_VENV)/.installed: packaging/mediapipe-constraints.txt
	test -x $(MEDIAPIPE_VENV)/bin/python || $(PYTHON) -m venv $(MEDIAPIPE_VENV)
	$(MEDIAPIPE_VENV)/bin/python -m pip install -q --disable-pip-version-check -c $< mediapipe
	touch $@

test: setup image-env mediapipe ## run the test suite
	$(BIN)/python -m pytest tests

sample: setup ## write the synthetic sample bucket to DATA_DIR
	$(BIN)/python -m trainer sample $(DATA_DIR)

run: setup ## run the whole job locally: DATA_DIR -> RESULT_DIR with MODEL (and STEPS)
	DATA_DIR=$(abspath $(DATA_DIR)) RESULT_DIR=$(abspath $(RESULT_DIR)) MODEL=$(MODEL) VERBOSE=$(VERBOSE) PATH=$(abspath $(BIN)):$$PATH bash packaging/start.sh $(STEPS)

report: setup ## (re)write RESULT_DIR/report.html and its PNGs from what the run wrote
	$(BIN)/python -m trainer report --result-dir $(RESULT_DIR)

# Debian's Chromium for the report's browser test (which skips without it); tolerant where apt is missing.
browser: ## install headless Chromium (Debian package) for the report's browser test
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "make browser: chromium could not be installed; the browser test will skip"

demo: setup ## train the demo model on the sample bucket into runs/demo (about 15 min on 2 CPU cores)
	rm -rf runs/sample-bucket && $(BIN)/python -m trainer sample runs/sample-bucket
	$(MAKE) --no-print-directory run DATA_DIR=runs/sample-bucket RESULT_DIR=runs/demo MODEL=demo STEPS=$(STEPS)

demo-classification: setup ## train the demo classifier on a classification sample bucket into runs/demo-classification
	rm -rf runs/sample-classes && $(BIN)/python -m trainer sample runs/sample-classes --type classification
	$(MAKE) --no-print-directory run DATA_DIR=runs/sample-classes RESULT_DIR=runs/demo-classification MODEL=demo STEPS=$(STEPS)

package: setup ## build dist/trainer.zip (cacli / unzip && bash start.sh) and the sdist (configs/jobs/python-package.yaml)
	$(BIN)/python packaging/build.py

IMAGE ?=
image: package ## build and push the GPU and TPU training images: IMAGE=REGION-docker.pkg.dev/PROJECT/REPO/trainer
	@test -n "$(IMAGE)" || { echo "set IMAGE=REGION-docker.pkg.dev/PROJECT/REPO/trainer"; exit 2; }
	docker build -f packaging/Dockerfile -t $(IMAGE):gpu . && docker push $(IMAGE):gpu
	docker build -f packaging/Dockerfile.tpu -t $(IMAGE):tpu . && docker push $(IMAGE):tpu

CLOUD_ARGS = $(if $(STEPS),--steps $(STEPS)) $(if $(MODEL),--model $(MODEL)) $(if $(PROJECT),--project $(PROJECT)) $(if $(REGION),--region $(REGION)) $(if $(IMAGE),--image $(IMAGE)) $(if $(RUN),--run-name $(RUN)) $(if $(SPOT),--spot)
submit: setup ## submit SPEC as a Vertex AI CustomJob: DATA=gs://BUCKET[/PREFIX] OUTPUT=gs://BUCKET/PREFIX [RUN=name] (SPOT=1 on Spot VMs, DRY_RUN=1 prints it)
	$(BIN)/python -m cloud submit $(SPEC) --data $(DATA) --output $(OUTPUT) $(CLOUD_ARGS) $(if $(DRY_RUN),--dry-run)

status: setup ## show a job's state: JOB=ID
	$(BIN)/python -m cloud status $(JOB) $(if $(PROJECT),--project $(PROJECT)) $(if $(REGION),--region $(REGION))

logs: setup ## stream a job's logs until it ends: JOB=ID
	$(BIN)/python -m cloud logs $(JOB) $(if $(PROJECT),--project $(PROJECT)) $(if $(REGION),--region $(REGION))

cancel: setup ## cancel a job: JOB=ID
	$(BIN)/python -m cloud cancel $(JOB) $(if $(PROJECT),--project $(PROJECT)) $(if $(REGION),--region $(REGION))

list: setup ## list recent jobs
	$(BIN)/python -m cloud list $(if $(PROJECT),--project $(PROJECT)) $(if $(REGION),--region $(REGION))

stage: setup ## upload a local bucket folder: DATA_DIR=folder DATA=gs://BUCKET/PREFIX
	$(BIN)/python -m cloud stage $(DATA_DIR) $(DATA)

tensorboard: setup ## TensorBoard on a run's logs: LOGDIR=gs://BUCKET/PREFIX/RUN/model (or a local folder)
	$(BIN)/python -m cloud tensorboard $(LOGDIR)

benchmark: setup ## run the benchmarks (prepare speed/memory, memory at 1x/10x and a 200 MB _annotations.json, time to first training step, the training input pipeline per model); TF.js: docs/benchmarks.md
	$(BIN)/python benchmarks/prepare.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/input_pipeline.py

constraints: ## re-pin constraints.txt from the current .venv
	$(BIN)/python -m pip freeze --all --exclude-editable | grep -v -e '^ca-detector-trainer' -e '^pip==' > constraints.txt

clean: ## remove build outputs (keeps .venv and runs/)
	rm -rf build dist *.egg-info .pytest_cache
