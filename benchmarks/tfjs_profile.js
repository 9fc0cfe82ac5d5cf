// Benchmark: where a TF.js graph model's time per image goes, in Node with the WebAssembly backend
// as the export evaluation runs it (trainer/export/tfjs_detect.js). Prints the milliseconds of each
// of N runs on one random uint8 image of HEIGHT x WIDTH (the first includes the kernels' set-up),
// then tf.profile's kernel time by op, the largest first.
// Usage: NODE_PATH=.venv/share/ca-trainer/js/node_modules node benchmarks/tfjs_profile.js RESULT_DIR/model_web [HEIGHT WIDTH N]
const fs = require("fs");
const path = require("path");
const tf = require("@tensorflow/tfjs");
const wasm = require("@tensorflow/tfjs-backend-wasm");
const { fileHandler } = require("../trainer/export/tfjs_detect.js");

async function main() {
  const [dir, height = 480, width = 640, runs = 5] = process.argv.slice(2);
  wasm.setWasmPaths(path.join(path.dirname(require.resolve("@tensorflow/tfjs-backend-wasm")), path.sep));
  wasm.setThreadsCount(2);
  if (!(await tf.setBackend("wasm"))) throw new Error("the wasm backend did not start");
  const model = await tf.loadGraphModel(fileHandler(dir));
  const names = Object.values(JSON.parse(fs.readFileSync(path.join(dir, "model.json"))).signature.outputs).map((o) => o.name);
  const input = tf.randomUniform([1, +height, +width, 3], 0, 256, "int32");
  const once = async () => {
    const result = await model.executeAsync(input, names);
    for (const tensor of [result].flat()) await tensor.data();
    tf.dispose(result);
  };
  for (let run = 0; run < +runs; run++) {
    const start = process.hrtime.bigint();
    await once();
    console.log(`run ${run}: ${(Number(process.hrtime.bigint() - start) / 1e6).toFixed(0)} ms`);
  }
  const profile = await tf.profile(once);
  const byOp = {};
  for (const kernel of profile.kernels) {
    const ms = await kernel.kernelTimeMs;
    const [total, calls] = byOp[kernel.name] || [0, 0];
    byOp[kernel.name] = [total + (typeof ms === "number" ? ms : 0), calls + 1];
  }
  const total = Object.values(byOp).reduce((sum, [ms]) => sum + ms, 0);
  console.log(`${profile.kernels.length} kernels, ${total.toFixed(0)} ms of kernel time`);
  for (const [op, [ms, calls]] of Object.entries(byOp).sort((a, b) => b[1][0] - a[1][0]).slice(0, 12)) {
    console.log(`${op.padEnd(24)} ${ms.toFixed(1).padStart(8)} ms ${(100 * ms / total).toFixed(0).padStart(3)}% ${calls} calls`);
  }
}

main().catch((err) => {
  console.error(err.stack || String(err));
  process.exit(1);
});
