#!/usr/bin/env bash
# The training images' Python environment, in one place: both Dockerfiles build /opt/venv with it,
# and `make image-env` builds .venv-image with it for the tests, which run the job in it.
#
#   packaging/image-env.sh VENV [REQUIREMENT...]
#
# A virtual environment at VENV with the `train,export` extras (dependencies only: the images run
# the code from /app, as unzipped from dist/trainer.zip), Node and @tensorflow/tfjs. REQUIREMENTs
# are added under the same pins: the GPU image's "tensorflow[and-cuda]" (CUDA's libraries, which the
# tests' environment leaves out: no GPU there).
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: packaging/image-env.sh VENV [REQUIREMENT...]" >&2; exit 2; }
venv="$1"
shift
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
test -x "$venv/bin/python" || "${PYTHON:-python3}" -m venv "$venv"
bash "$here/install.sh" "$venv/bin/python" train,export "$@"
