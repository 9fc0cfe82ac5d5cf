"""MediaPipe Tasks against LiteRT's interpreter on the same model and images (used by test_export)."""
import numpy as np

from trainer.export import evaluate, mediapipe_tasks, metadata
from trainer.export.common import stretch
from trainer.model_garden import SCORE_THRESHOLD
from trainer.predict import load_model

TOLERANCE = 1e-4


def compare(result_dir, path, task, images=None):
    """Run IMAGES (default: the validation split), each stretched to the input as an app's frame is, through our
    interpreter and through MediaPipe (which then resizes nothing); assert they agree.

    Detections: the same number of rows, and a row of ours is matched when MediaPipe has one
    with its score within TOLERANCE, its label id and its pixel box (MediaPipe returns whole
    pixels: ours converted as its C++ does, float32 truncated; see _matched). Rows with exactly tied scores
    (int8 scores are quantised; a barely trained model scores flat background alike) may not
    match: MediaPipe's own TFLite runtime keeps other boxes among them, and its deduplication
    (see serving.detection._box_order) then loses some of their rows. Classifier: every class MediaPipe
    returns (those from SCORE_THRESHOLD) with our probability within TOLERANCE, none missing.
    Returns (rows, rows matched).
    """
    images = evaluate.load_split(result_dir, "val", task)[0] if images is None else images
    ours = load_model(path, threads=2)
    size = _input_size(path)
    fed = [stretch(image, size) for image in images]
    found = mediapipe_tasks.detect(task, path, fed)
    labels = _labels(result_dir)
    rows = matched = 0
    lines = metadata.label_lines(task, labels)
    for image, result in zip(fed, found):
        result = mediapipe_tasks.with_label_ids(result, lines)
        expected = ours(image)
        if task == "classification":
            probs = expected["probs"]
            got = {c["index"]: c["score"] for c in result["categories"]}
            assert set(got) == {i for i, p in enumerate(probs) if p >= SCORE_THRESHOLD}
            assert all(abs(score - probs[i]) <= TOLERANCE for i, score in got.items()), (got, probs)
            rows, matched = rows + len(got), matched + len(got)
            continue
        mine = _rows(expected, image.shape)
        theirs = [(c["score"], c["index"], tuple(d["box"]))
                  for d in result["detections"] for c in d["categories"]]
        assert len(theirs) == len(mine), (len(theirs), len(mine))
        rows += len(mine)
        matched += _matched(mine, theirs)
    return rows, matched


def _matched(mine, theirs):
    """How many of MINE have a row in THEIRS with the same label, the score within TOLERANCE and each box side
    within one pixel (truncation turns the runtimes' float differences at a whole pixel into one). A row of ours
    within TOLERANCE of the last row's score counts when MediaPipe has as many unmatched rows that close: the two
    runtimes may order candidates that close either side of the K-row cut (measured once: 999 of 1000)."""
    def same(row, other):
        return (abs(row[0] - other[0]) <= TOLERANCE and row[1] == other[1]
                and all(abs(a - b) <= 1 for a, b in zip(row[2], other[2])))

    unmatched = [row for row in mine if not any(same(row, other) for other in theirs)]
    left = [other for other in theirs if not any(same(row, other) for row in mine)]
    if not mine:
        return 0
    cut = mine[-1][0]  # the lowest score kept
    at_cut = [row for row in unmatched if row[0] - cut <= TOLERANCE]
    their_cut = [other for other in left if abs(other[0] - cut) <= TOLERANCE]
    return len(mine) - len(unmatched) + min(len(at_cut), len(their_cut))


def _rows(detections, shape):
    """(score, label id, (x, y, width, height) in whole pixels as MediaPipe converts a 0..1 box), best first."""
    height, width = (np.float32(side) for side in shape[:2])
    rows = []
    for (ymin, xmin, ymax, xmax), score, label in zip(detections["boxes"].astype(np.float32), detections["scores"],
                                                      detections["classes"]):
        box = (int(xmin * width), int(ymin * height), int((xmax - xmin) * width), int((ymax - ymin) * height))
        rows.append((float(score), int(label), box))
    return sorted(rows, key=lambda r: (-r[0], r[1], r[2]))


def _input_size(path):
    from ai_edge_litert.interpreter import Interpreter

    return tuple(Interpreter(model_path=str(path)).get_input_details()[0]["shape"][1:3])


def _labels(result_dir):
    import json

    return json.loads((result_dir / "data" / "labels.json").read_text())
