# Every target a user needs; `make help` lists them. Variables: see `make help`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

MODEL ?= demo
STEPS ?=
DATA_DIR ?= runs/sample-bucket
RESULT_DIR ?= runs/local
SPEC ?= configs/jobs/gpu.yaml

.DEFAULT_GOAL := help
.PHONY: help setup test demo sample run package image submit status logs cancel list stage tensorboard benchmark constraints clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "Variables: MODEL=$(MODEL) STEPS=$(STEPS) DATA_DIR=$(DATA_DIR) RESULT_DIR=$(RESULT_DIR) SPEC=$(SPEC) DATA=gs://... OUTPUT=gs://... JOB=..."

setup: $(STAMP) ## create .venv and install the project with pinned versions (quick when nothing changed)

$(STAMP): setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

test: setup ## run the test suite
	$(BIN)/python -m pytest tests

sample: setup ## write the synthetic sample bucket to DATA_DIR
	$(BIN)/python -m trainer sample $(DATA_DIR)

run: setup ## run the whole job locally: DATA_DIR -> RESULT_DIR with MODEL (and STEPS)
	DATA_DIR=$(abspath $(DATA_DIR)) RESULT_DIR=$(abspath $(RESULT_DIR)) MODEL=$(MODEL) PATH=$(abspath $(BIN)):$$PATH bash packaging/start.sh $(STEPS)

demo: setup ## train the demo model on the sample bucket into runs/demo (about 15 min on 2 CPU cores)
	rm -rf runs/sample-bucket && $(BIN)/python -m trainer sample runs/sample-bucket
	$(MAKE) --no-print-directory run DATA_DIR=runs/sample-bucket RESULT_DIR=runs/demo MODEL=demo STEPS=$(STEPS)

constraints: ## re-pin constraints.txt from the current .venv
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^ca-detector-trainer' > constraints.txt

clean: ## remove build outputs (keeps .venv and runs/)
	rm -rf build dist *.egg-info .pytest_cache
