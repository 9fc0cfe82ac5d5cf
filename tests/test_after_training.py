"""A trained model survives whatever fails after training: report, export evaluation and summary failures are
warnings, and the exit status and cacli markers are a conversion failure's (training succeeded)."""
import json
import os
import shutil
import subprocess
import sys

from conftest import REPO

from trainer.export import export, failures, tfjs
from trainer.sample import make_sample_bucket
from trainer.run_dir import EXPORT_DIR

PRICE_TIERS = {"circle": "$", "square": "$$", "triangle": "$$$"}


def _start_sh(bucket, result_dir, steps, **env):
    completed = subprocess.run(["bash", str(REPO / "packaging" / "start.sh"), str(steps)], cwd=result_dir.parent,
                               env={**os.environ, "DATA_DIR": str(bucket), "RESULT_DIR": str(result_dir),
                                    "MODEL": "demo", "PYTHON": sys.executable, "EXPORT_FORMATS": "none", **env},
                               capture_output=True, text=True, timeout=900)
    return completed.returncode, completed.stdout.strip().splitlines(), completed.stderr


def test_labels_that_look_like_tex_train_report_and_rerun(tmp_path):
    """`$`, `$$`, `$$$` (price tiers) are names, not mathtext: the report draws them; a rerun succeeds too. Then a
    report that cannot be written is a warning with exit markers of a conversion failure, and the model stays."""
    bucket, result_dir = tmp_path / "bucket", tmp_path / "result"
    annotations = make_sample_bucket(bucket, 12)
    annotations["labels"] = [PRICE_TIERS[name] for name in annotations["labels"]]
    for boxes in annotations["annotations"].values():
        for box in boxes:
            box["label"] = PRICE_TIERS[box["label"]]
    (bucket / "_annotations.json").write_text(json.dumps(annotations))

    for attempt in ("first", "rerun"):
        code, console, errors = _start_sh(bucket, result_dir, 2)
        assert (code, console[-1]) == (0, "CACLI-TRAINING-SUCCESS"), (attempt, console[-20:], errors[-3000:])
        assert "WARNING: failed" not in "\n".join(console) + errors
    assert "$$$" in (result_dir / "report.html").read_text()
    assert sorted(path.suffix for path in (result_dir / "report").iterdir()) and \
        {path.suffix for path in (result_dir / "report").iterdir()} == {".png"}

    (result_dir / "report.html").unlink()
    shutil.rmtree(result_dir / "report")
    (result_dir / "report").write_text("a file where the report's folder goes")
    code, console, errors = _start_sh(bucket, result_dir, 2)
    assert code == 0 and console[-2:] == ["CACLI-TRAINING-SUCCESS", "CACLI-CONVERSION-FAILED"], console[-20:]
    [warning] = [line for line in errors.splitlines() if "WARNING: failed" in line]
    assert warning.startswith("report: WARNING: failed, the trained model is kept: FileExistsError: ")
    assert warning.endswith(f"(traceback in {result_dir / 'logs' / 'report.log'})")
    assert "CONVERSION-FAILED report: FileExistsError: " in errors
    assert "==> summary" in "\n".join(console)  # the summary still ends the run
    assert (result_dir / "model" / "checkpoint").is_file()


def test_a_broken_tfjs_runtime_is_a_warning_and_the_exports_and_manifest_stay(exported_run, tmp_path, monkeypatch):
    """A TF.js runtime that fails: the other formats keep their scores, export.json keeps every export (so a rerun
    converts nothing again), and the rerun with a working runtime evaluates TF.js alone."""
    trained_run, _ = exported_run
    result_dir = tmp_path / "result"
    shutil.copytree(trained_run, result_dir)
    manifest_path = result_dir / EXPORT_DIR / "export.json"
    manifest = json.loads(manifest_path.read_text())
    scored = json.loads((result_dir / EXPORT_DIR / "evaluation.json").read_text())
    del manifest["results"]["tfjs"]["evaluation"]
    manifest_path.write_text(json.dumps(manifest))
    broken = tmp_path / "node_modules" / "@tensorflow" / "tfjs"
    broken.mkdir(parents=True)
    (broken / "package.json").write_text('{"name": "@tensorflow/tfjs", "main": "index.js"}')
    (broken / "index.js").write_text('throw new Error("a broken runtime");')
    monkeypatch.setattr(tfjs, "NODE_MODULES", tmp_path / "node_modules")

    results = export(result_dir)
    [(what, reason)] = failures(results).items()
    assert what == "tfjs evaluation" and reason == "RuntimeError: TF.js in Node failed: Error: a broken runtime", reason
    evaluation = json.loads((result_dir / EXPORT_DIR / "evaluation.json").read_text())
    assert evaluation["tfjs"] == {"bytes": scored["tfjs"]["bytes"], "evaluation_failed": reason}
    assert {name: entry for name, entry in evaluation.items() if name != "tfjs"} == \
        {name: entry for name, entry in scored.items() if name != "tfjs"}
    kept = json.loads(manifest_path.read_text())["results"]
    assert {name: entry["path"] for name, entry in kept.items()} == \
        {name: entry["path"] for name, entry in manifest["results"].items()}
    assert kept["tfjs"]["evaluation"] == evaluation["tfjs"]  # recorded as failed: the rerun retries it

    monkeypatch.undo()
    again = export(result_dir)
    assert failures(again) == {}
    rescored = json.loads((result_dir / EXPORT_DIR / "evaluation.json").read_text())
    assert {**rescored["tfjs"], "latency_ms": None} == {**scored["tfjs"], "latency_ms": None}
    assert {name: entry for name, entry in rescored.items() if name != "tfjs"} == \
        {name: entry for name, entry in scored.items() if name != "tfjs"}
