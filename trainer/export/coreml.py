"""Core ML: model_ios/Model.mlmodel, as Vision expects it.

A detector is a pipeline of the network and Core ML's own NMS; a classifier is a Core ML
classifier (`classLabel` and the `classLabelProbs` dictionary): each task's part is in its
serving module (serving/). The image input is the model's square size: apps set
`imageCropAndScaleOption = .scaleFill` (stretch), as the model was trained. Core ML runs
only on Apple systems, so the evaluation here runs the exact TensorFlow function that was
converted, then (for a detector) NMS as Core ML defines it (`serving.detection.core_ml_nms`).
"""
import json

from trainer.export import serving
from trainer.export.common import write_labels


def write(job, row):
    """ROW's path (model_ios/Model.mlmodel), checked as read back; labels in its metadata and beside it."""
    import coremltools as ct

    task_serving = serving.get(job.task)
    spec = task_serving.core_ml_spec(job)
    spec.description.metadata.userDefined["labels"] = json.dumps(job.labels)
    path = row.path(job.result_dir)
    write_labels(path.parent, job.labels)
    ct.utils.save_spec(spec, str(path))
    task_serving.check_core_ml(ct.utils.load_spec(str(path)), job.labels)
    return path


def run(job, path, images):
    """Detections (or probabilities) and seconds per image from the converted function (see the module's doc)."""
    from trainer.export.saved_model import timed

    return timed(serving.get(job.task).core_ml_predict(job), images)
