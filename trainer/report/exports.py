"""The report's exports section: each format's file and status, and its score in its own runtime."""
from trainer.metrics import TOP_K_ACCURACY
from trainer.run_dir import ExportManifest, RunDir, find_evaluations


def section(page, result_dir):
    """export.json's formats and evaluation.json's scores, a row per format."""
    page.heading("Exports")
    run = RunDir(result_dir)
    manifest = ExportManifest.find(run)
    if not manifest:
        page.text(f"No exports yet: the export stage writes {run.export_json.relative_to(run.root)}.", "missing")
        return
    page.text(f"Exported from {manifest.checkpoint}.")
    page.table(["format", "path", "size (MB)", "status"],
               [[name, entry.get("path", ""), entry["bytes"] / 1e6 if "bytes" in entry else None,
                 entry.get("error") or entry.get("unsupported") or "ok"]
                for name, entry in manifest.results.items()], "exports")
    evaluation = find_evaluations(run)
    if evaluation:
        classifier = any("accuracy" in entry for entry in evaluation.values())
        scores = ("accuracy", TOP_K_ACCURACY, "delta_accuracy") if classifier else ("AP", "AP50", "delta_AP")
        page.table(["format", *(key.replace("_", " ") for key in scores), "latency (ms)", "split", "images", "note"],
                   [[name, *(entry.get(key) for key in (*scores, "latency_ms", "split", "images")),
                     entry.get("not_evaluated") or entry.get("unsupported") or entry.get("error") or ""]
                    for name, entry in evaluation.items()], "export-evaluation")
