// Runs a TF.js graph model (model_web/) on raw RGB images with @tensorflow/tfjs and its
// WebAssembly backend (what browsers without WebGL use; the pure-JS CPU backend is ~50x
// slower), as a browser app feeds it (tf.browser.fromPixels gives [H, W, 3] of any size),
// and prints every signature output (detections, or a classifier's probs) and milliseconds per image as JSON.
// Usage: node tfjs_detect.js MODEL_DIR IMAGES_JSON   (IMAGES_JSON: [{"path": raw RGB bytes file, "shape": [h, w, 3]}])
const fs = require("fs");
const path = require("path");
const tf = require("@tensorflow/tfjs");
const wasm = require("@tensorflow/tfjs-backend-wasm");

function fileHandler(dir) {
  // tf.loadGraphModel fetches over HTTP; read model.json and its shards from disk instead.
  return {
    load: async () => {
      const json = JSON.parse(fs.readFileSync(path.join(dir, "model.json")));
      const data = Buffer.concat(json.weightsManifest.flatMap((g) => g.paths.map((p) => fs.readFileSync(path.join(dir, p)))));
      return {
        modelTopology: json.modelTopology,
        format: json.format,
        generatedBy: json.generatedBy,
        convertedBy: json.convertedBy,
        signature: json.signature,
        userDefinedMetadata: json.userDefinedMetadata,
        weightSpecs: json.weightsManifest.flatMap((g) => g.weights),
        weightData: data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength),
      };
    },
  };
}

async function main() {
  const [dir, imagesPath] = process.argv.slice(2);
  wasm.setWasmPaths(path.join(path.dirname(require.resolve("@tensorflow/tfjs-backend-wasm")), path.sep));
  wasm.setThreadsCount(2);
  if (!(await tf.setBackend("wasm"))) throw new Error("the wasm backend did not start");
  const model = await tf.loadGraphModel(fileHandler(dir));
  const outputs = JSON.parse(fs.readFileSync(path.join(dir, "model.json"))).signature.outputs;
  const results = [];
  for (const image of JSON.parse(fs.readFileSync(imagesPath))) {
    const input = tf.tensor(Uint8Array.from(fs.readFileSync(image.path)), [1, ...image.shape], "int32");
    const start = process.hrtime.bigint();
    const result = await model.executeAsync(input, Object.values(outputs).map((o) => o.name));
    const tensors = Array.isArray(result) ? result : [result]; // one output (a classifier's probs): one tensor
    const named = {};
    for (const [i, key] of Object.keys(outputs).entries()) named[key] = (await tensors[i].array())[0];
    named.ms = Number(process.hrtime.bigint() - start) / 1e6;
    results.push(named);
    tf.dispose([input, ...tensors]);
  }
  process.stdout.write(JSON.stringify({ backend: tf.getBackend(), results }));
}

module.exports = { fileHandler };

if (require.main === module) {
  main().catch((err) => {
    console.error(err.stack || String(err));
    process.exit(1);
  });
}
