// Runs a TF.js graph model (model_web/) on RGB images with the pure-JS CPU backend
// and prints its detections as JSON: what a browser app using @tensorflow/tfjs gets.
// Usage: node detect.js MODEL_DIR IMAGES_JSON   (IMAGES_JSON: [{"shape": [h, w, 3], "data": base64 RGB bytes}])
const fs = require("fs");
const path = require("path");
const tf = require("@tensorflow/tfjs");

function fileHandler(dir) {
  // tf.loadGraphModel fetches over HTTP; read model.json and its shards from disk instead.
  return {
    load: async () => {
      const json = JSON.parse(fs.readFileSync(path.join(dir, "model.json")));
      const specs = json.weightsManifest.flatMap((group) => group.weights);
      const buffers = json.weightsManifest.flatMap((group) => group.paths.map((p) => fs.readFileSync(path.join(dir, p))));
      const data = Buffer.concat(buffers);
      return {
        modelTopology: json.modelTopology,
        format: json.format,
        generatedBy: json.generatedBy,
        convertedBy: json.convertedBy,
        signature: json.signature,
        userDefinedMetadata: json.userDefinedMetadata,
        weightSpecs: specs,
        weightData: data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength),
      };
    },
  };
}

async function main() {
  const [dir, imagesPath] = process.argv.slice(2);
  await tf.setBackend("cpu");
  const model = await tf.loadGraphModel(fileHandler(dir));
  const signature = JSON.parse(fs.readFileSync(path.join(dir, "model.json"))).signature.outputs;
  const results = [];
  for (const image of JSON.parse(fs.readFileSync(imagesPath))) {
    const input = tf.tensor(Uint8Array.from(Buffer.from(image.data, "base64")), [1, ...image.shape], "int32");
    const outputs = await model.executeAsync(input, Object.values(signature).map((o) => o.name));
    const named = {};
    for (const [i, key] of Object.keys(signature).entries()) named[key] = await outputs[i].array();
    results.push(named);
    tf.dispose([input, ...outputs]);
  }
  process.stdout.write(JSON.stringify({ backend: tf.getBackend(), results }));
}

main().catch((err) => {
  console.error(err.stack || String(err));
  process.exit(1);
});
