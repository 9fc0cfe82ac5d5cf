"""The quiet console, RESULT_DIR/logs/ and the final summary, on start.sh's real output."""
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, TRAINED_STEPS

from trainer.export.formats import EXPORT_FORMATS
from trainer.run_dir import EXPORT_DIR

MAX_CONSOLE_LINES = 60
# Third-party output that must stay in the logs: TensorFlow/absl C++ and Python logs, pycocotools,
# coremltools' progress bars, Python warnings.
NOISE = re.compile(r"cuInit|^[IWE]\d{4} |tensorflow:(?!loss = )|Gradients do not exist|DONE \(t=|"
                   r"Average Precision|Running MIL|Converting PyTorch|Warning:|warnings.warn", re.MULTILINE)


def _console(trained_run):
    """start.sh's console from `==> prepare` to the last CACLI marker, as lines."""
    text = (trained_run.parent / "start.log").read_text()
    lines = text.split("\n")
    first = next(i for i, line in enumerate(lines) if line.startswith("==> prepare"))
    last = max(i for i, line in enumerate(lines) if line.startswith("CACLI-"))
    return lines[first:last + 1]


def test_start_sh_console_is_short_and_keeps_the_rest_in_logs(trained_run):
    lines = _console(trained_run)
    text = "\n".join(lines)
    assert len(lines) <= MAX_CONSOLE_LINES, text
    assert not NOISE.search(text), NOISE.search(text)
    stages = [line.split(":")[0] for line in lines if line.startswith("==> ")]
    assert stages == ["==> prepare", "==> config", "==> train", "==> export", "==> report", "==> summary"]
    assert f"evaluation: step {TRAINED_STEPS}:" in text
    assert re.search(rf"^progress: step {TRAINED_STEPS}/{TRAINED_STEPS} ", text, re.MULTILINE)
    assert lines[-1] == "CACLI-TRAINING-SUCCESS"

    logs = trained_run / "logs"
    assert sorted(path.name for path in logs.iterdir()) == ["config.log", "export.log", "prepare.log", "report.log",
                                                           "run.log", "train.log"]
    train_log = (logs / "train.log").read_text()
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in train_log  # pycocotools' table, kept
    progress = re.findall(r"^progress: step (\d+)/", train_log, re.MULTILINE)
    assert progress == [str(step) for step in range(10, TRAINED_STEPS + 1, 10)]  # every loop, shown or not
    for line in lines:  # each of our lines is also in its stage's log
        if line.startswith(("train:", "progress:", "evaluation:")):
            assert line in train_log


def test_summary_names_metrics_exports_next_commands_and_report(trained_run):
    lines = _console(trained_run)
    block = lines[lines.index("==> summary"):]
    record = json.loads((trained_run / "metrics.json").read_text())
    metrics = record["best"]["metrics"]  # the exported evaluation's, the best
    which = (" and the last, exported)" if metrics["step"] == TRAINED_STEPS else
             f", exported from best/ckpt-{metrics['step']}; the last, step {TRAINED_STEPS}: AP {record['AP']:.3f})")
    assert block[1].endswith(f"step {metrics['step']}: AP {metrics['AP']:.3f}, AP50 {metrics['AP50']:.3f} "
                             f"(validation split; the best by AP{which}")
    for label, values in metrics["per_class"].items():
        assert f"    {label:<20} AP {values['AP']:.3f}  AP50 {values['AP50']:.3f}" in block
    manifest = json.loads((trained_run / EXPORT_DIR / "export.json").read_text())
    evaluation = json.loads((trained_run / EXPORT_DIR / "evaluation.json").read_text())
    for name, entry in manifest["results"].items():
        row = EXPORT_FORMATS[name]  # a derived format is shown on its source's line
        shown = next(line for line in block if line.startswith(f"    {row.source if row.derived else name} "))
        assert f"{entry['bytes'] / 1e6:.1f} MB" in shown and entry["path"] in shown
        assert f"AP {evaluation[name]['AP']:.3f}" in shown
    tflite = next(line for line in block if line.startswith("    tflite "))
    assert tflite.endswith(f"AP {evaluation['tflite']['AP']:.3f} (mediapipe AP {evaluation['mediapipe']['AP']:.3f})")
    assert not any(line.startswith("    mediapipe ") for line in block)  # model.tflite's line says both
    assert any(line.startswith("    predict:     python -m trainer predict --model ") for line in block)
    assert f"    TensorBoard: tensorboard --logdir {trained_run / 'model'}" in block
    assert any(line.startswith("    submit:      make submit ") for line in block)
    assert f"  report: {trained_run / 'report.html'}" in block


_PROGRAM = textwrap.dedent("""
    import os, sys, warnings
    from trainer import console
    console.start(sys.argv[1], "stage", verbose=sys.argv[2] == "1")
    print("third-party print")
    os.write(2, b"C++ log line\\n")
    warnings.warn("a library warning")
    console.say("ours: hello")
    console.say("ours: trouble", error=True)
    for step in range(10, 101, 10):
        console.progress(step, 100, f"progress {step}")
    console.stage("next", "second stage")
    print("later noise")
    raise RuntimeError("boom")
""")


def test_quiet_console_shows_only_our_lines(tmp_path):
    completed = subprocess.run([sys.executable, "-c", _PROGRAM, str(tmp_path / "logs"), "0"], cwd=REPO,
                               capture_output=True, text=True)
    assert completed.returncode == 1
    assert completed.stdout.splitlines() == ["ours: hello", *(f"progress {step}" for step in (10, 20, 40, 60, 80, 100)),
                                             "==> next: second stage"]
    assert completed.stderr == "ours: trouble\n"  # the traceback is in the log only
    stage_log = (tmp_path / "logs" / "stage.log").read_text()
    for expected in ("third-party print", "C++ log line", "UserWarning: a library warning", "ours: hello",
                     "ours: trouble", "progress 50"):
        assert expected in stage_log
    next_log = (tmp_path / "logs" / "next.log").read_text()
    assert "later noise" in next_log and "RuntimeError: boom" in next_log


def test_progress_is_thinned_to_about_five_lines(tmp_path):
    program = ("import sys\nfrom trainer import console\nconsole.start(sys.argv[1], 's')\n"
               "for step in range(10, 391, 10): console.progress(step, 385, f'p {step}', f'c {step}')\n")
    completed = subprocess.run([sys.executable, "-c", program, str(tmp_path)], cwd=REPO, capture_output=True,
                               text=True, check=True)
    shown = [int(line.split()[1]) for line in completed.stdout.splitlines() if line.startswith("p ")]
    assert shown == [10, 80, 160, 240, 310, 390]  # the first, the first past each 77 steps, the last
    assert completed.stdout.count("c ") == len(shown)  # the cacli line travels with its progress line
    log = (tmp_path / "s.log").read_text()
    assert all(f"p {step}\nc {step}\n" in log for step in range(10, 391, 10))


def test_verbose_shows_everything_and_redirects_nothing(tmp_path):
    completed = subprocess.run([sys.executable, "-c", _PROGRAM, str(tmp_path / "logs"), "1"], cwd=REPO,
                               capture_output=True, text=True)
    assert "third-party print" in completed.stdout and "later noise" in completed.stdout
    assert "C++ log line" in completed.stderr and "RuntimeError: boom" in completed.stderr
    assert completed.stdout.count("progress ") == 10
    assert not (tmp_path / "logs").exists()


def test_worker_replicas_log_beside_the_chief(tmp_path):
    program = "import sys\nfrom trainer import console\nconsole.start(sys.argv[1], 'train')\nprint('noise')\n"
    for task in ({"type": "chief", "index": 0}, {"type": "worker", "index": 1}):
        tf_config = json.dumps({"cluster": {"chief": ["h:1"], "worker": ["h:2", "h:3"]}, "task": task})
        subprocess.run([sys.executable, "-c", program, str(tmp_path)], cwd=REPO, check=True,
                       env={**os.environ, "TF_CONFIG": tf_config})
    assert sorted(path.name for path in tmp_path.iterdir()) == ["train-worker-1.log", "train.log"]


def test_cli_gives_the_file_descriptors_back(tmp_path):
    program = ("import os, sys\nfrom trainer.__main__ import main\n"
               "print('code', main(['config', '--model', 'nonesuch', '--result-dir', sys.argv[1]]), flush=True)\n"
               "os.write(1, b'after\\n')\n")
    completed = subprocess.run([sys.executable, "-c", program, str(tmp_path)], cwd=REPO, capture_output=True,
                               text=True)
    assert completed.stdout.splitlines() == ["code 1", "after"]
    assert completed.stderr.startswith("error: unknown model 'nonesuch'")
    assert (tmp_path / "logs" / "config.log").is_file()


@pytest.mark.parametrize("env, result_dir, message", [
    ({"TF_CONFIG": "{bad"}, "result", r"^error: TF_CONFIG is not a valid cluster description \(JSONDecodeError: "),
    ({"TF_CONFIG": '{"cluster": [], "task": {"type": 3}}'}, "result",
     r"^error: TF_CONFIG is not a valid cluster description \(TypeError: "),
    ({"CLUSTER_SPEC": '{"cluster": {"workerpool9": ["a:1"]}}'}, "result",
     r"^error: CLUSTER_SPEC is not a valid cluster description \(KeyError: 'workerpool9'\)"),
    ({}, "a-file/result", r"^error: cannot write the log .*a-file/result/logs/config\.log: Not a directory$"),
])
def test_a_bad_cluster_or_result_dir_is_one_line(tmp_path, env, result_dir, message):
    """Found while the console starts, before the stage runs: one line, exit 1, no traceback."""
    (tmp_path / "a-file").write_text("")
    environ = {key: value for key, value in os.environ.items() if key not in ("TF_CONFIG", "CLUSTER_SPEC")}
    completed = subprocess.run([sys.executable, "-m", "trainer", "config", "--model", "demo", "--result-dir",
                                str(tmp_path / result_dir)], cwd=REPO, capture_output=True, text=True,
                               env={**environ, **env})
    assert completed.returncode == 1
    assert len(completed.stderr.splitlines()) == 1 and re.match(message, completed.stderr), completed.stderr


def test_a_native_crash_leaves_its_stack_in_the_stage_log(tmp_path):
    """faulthandler: a SIGSEGV inside a stage writes the Python stack to logs/STAGE.log."""
    program = ("import ctypes, sys\nimport trainer.prepare\nfrom trainer.__main__ import main\n"
               "trainer.prepare.prepare = lambda *args, **kwargs: ctypes.string_at(0)\n"
               "main(['prepare', '--data-dir', sys.argv[1], '--result-dir', sys.argv[2]])\n")
    completed = subprocess.run([sys.executable, "-c", program, str(tmp_path / "bucket"), str(tmp_path / "result")],
                               cwd=REPO, capture_output=True, text=True)
    assert completed.returncode == -11
    log = (tmp_path / "result" / "logs" / "prepare.log").read_text()
    assert "Fatal Python error: Segmentation fault" in log
    assert 'trainer/prepare.py", line' in log and "in main" in log
