#!/usr/bin/env bash
# The cacli job contract: train DATA_DIR's Cloud Annotations bucket into RESULT_DIR.
#
#   DATA_DIR=bucket RESULT_DIR=output [MODEL=name] [CHECKPOINT_URL=url] [VAL_FRACTION=0.2] [EXPORT_FORMATS=a,b|none] [SELECT_METRIC=AP] [PATIENCE=2] [MIN_DELTA=0.001] [INIT_FROM=earlier-result-dir] [DATA_SERVICE=grpc://host:port] [VERBOSE=1] bash start.sh [STEPS]
#
# Prints CACLI-TRAINING-SUCCESS (exit 0) or CACLI-TRAINING-FAILED (non-zero exit); when
# training succeeded but an export conversion failed, also CACLI-CONVERSION-FAILED (exit 0).
# STEPS defaults from the dataset size. Runs from the unzipped bundle (the trainer package
# beside this script) or from the repo (package one folder up); ${PYTHON:-python3} runs it.
# Rerunning resumes: every stage skips what RESULT_DIR already holds.
set -u

usage="usage: DATA_DIR=bucket-folder RESULT_DIR=output-folder [MODEL=name] [CHECKPOINT_URL=url] [VAL_FRACTION=0.2] [EXPORT_FORMATS=saved_model,tflite,tfjs,coreml|none] [SELECT_METRIC=AP|AP50|AP/LABEL|accuracy] [PATIENCE=evaluations-without-improvement|0] [MIN_DELTA=0.001] [INIT_FROM=earlier-result-dir] [DATA_SERVICE=grpc://host:port] [VERBOSE=1] bash start.sh [STEPS]"
refuse() {
  echo "start.sh: $1" >&2
  echo "$usage" >&2
  echo "CACLI-TRAINING-FAILED"
  exit 2
}
[ -n "${DATA_DIR:-}" ] || refuse "DATA_DIR is not set: the folder holding _annotations.json and the images"
[ -n "${RESULT_DIR:-}" ] || refuse "RESULT_DIR is not set: the folder for the dataset, checkpoints and metrics"
[ $# -le 1 ] || refuse "expected at most one argument, STEPS; got $#"
steps="${1:-}"
[[ -z "$steps" || "$steps" =~ ^[1-9][0-9]*$ ]] || refuse "STEPS must be a positive whole number, not '$steps'"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -d "$here/trainer" ]; then root="$here"; else root="$(dirname "$here")"; fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

args=(run --data-dir "$DATA_DIR" --result-dir "$RESULT_DIR")
[ -z "$steps" ] || args+=(--steps "$steps")
[ -z "${MODEL:-}" ] || args+=(--model "$MODEL")
[ -z "${CHECKPOINT_URL:-}" ] || args+=(--checkpoint-url "$CHECKPOINT_URL")
[ -z "${VAL_FRACTION:-}" ] || args+=(--val-fraction "$VAL_FRACTION")
[ -z "${EXPORT_FORMATS:-}" ] || args+=(--formats "$EXPORT_FORMATS")
[ -z "${SELECT_METRIC:-}" ] || args+=(--select-metric "$SELECT_METRIC")
[[ -z "${PATIENCE:-}" || "$PATIENCE" =~ ^[0-9]+$ ]] || refuse "PATIENCE must be a whole number of evaluations (0: never stop early), not '$PATIENCE'"
[ -z "${PATIENCE:-}" ] || args+=(--patience "$PATIENCE")
[ -z "${MIN_DELTA:-}" ] || args+=(--min-delta "$MIN_DELTA")
[ -z "${INIT_FROM:-}" ] || args+=(--init-from "$INIT_FROM")
[ -z "${DATA_SERVICE:-}" ] || args+=(--data-service "$DATA_SERVICE")
[[ "${VERBOSE:-0}" =~ ^(0|)$ ]] || args+=(--verbose)  # else library output goes to RESULT_DIR/logs/ only

# In the background so that SIGTERM (how Vertex AI preempts) reaches the trainer,
# which saves a checkpoint before it exits; bash would otherwise wait for it unheard.
# INT goes on as TERM: a background child of a non-interactive shell ignores SIGINT.
"${PYTHON:-python3}" -m trainer "${args[@]}" &
trainer=$!
trap 'kill -TERM "$trainer" 2>/dev/null' TERM INT
# Every trapped signal ends `wait` early. Keep waiting until the trainer is gone, however
# many signals come: in a container bash is PID 1, and its exit kills a checkpoint save.
while kill -0 "$trainer" 2>/dev/null; do
  wait "$trainer"
done
wait "$trainer"  # the trainer's own status, which bash keeps after reaping it
status=$?

case "$status" in
  0) echo "CACLI-TRAINING-SUCCESS" ;;
  3) echo "CACLI-TRAINING-SUCCESS"; echo "CACLI-CONVERSION-FAILED" ;;
  *) echo "CACLI-TRAINING-FAILED"; exit "$status" ;;
esac
