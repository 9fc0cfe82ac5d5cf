"""Run model.tflite through MediaPipe Tasks as an app does, in a Python that has mediapipe (see mediapipe_tasks).

    python mediapipe_run.py detection|classification MODEL.tflite IMAGES.json SCORE_THRESHOLD MAX_RESULTS

IMAGES.json lists {"path": raw RGB uint8 file, "shape": [h, w, 3]}. Each image is given
whole as an mp.Image (MediaPipe stretches it to the input), with the task's score_threshold
and max_results options. Prints {"results": [...]}: per image its detections (pixel box origin_x,
origin_y, width, height, and its categories: MediaPipe gives a box that the model returned
for several classes once, with a category each) or its categories (name, index, score),
and the milliseconds of the call. Standalone (numpy and mediapipe only): mediapipe cannot share our environment.
"""
import json
import sys
import time


def main(task, model, listing, score_threshold, max_results):
    import mediapipe as mp
    import numpy as np
    from mediapipe.tasks.python import BaseOptions, vision

    base = BaseOptions(model_asset_path=model)
    # This script runs in the MediaPipe venv's Python, without the trainer package: it tests the task's name
    # itself instead of asking trainer.tasks.
    if task == "detection":
        options = vision.ObjectDetectorOptions(base_options=base, score_threshold=float(score_threshold),
                                               max_results=int(max_results))
        runner, call = vision.ObjectDetector.create_from_options(options), "detect"
    else:
        options = vision.ImageClassifierOptions(base_options=base, score_threshold=float(score_threshold),
                                                max_results=int(max_results))
        runner, call = vision.ImageClassifier.create_from_options(options), "classify"
    results = []
    with runner:
        for item in json.loads(open(listing).read()):
            pixels = np.fromfile(item["path"], np.uint8).reshape(item["shape"])
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels)
            start = time.perf_counter()
            found = getattr(runner, call)(image)
            ms = (time.perf_counter() - start) * 1000
            if task == "detection":
                results.append({"ms": ms, "detections": [
                    {"categories": _categories(d.categories),
                     "box": [d.bounding_box.origin_x, d.bounding_box.origin_y, d.bounding_box.width,
                             d.bounding_box.height]} for d in found.detections]})
            else:
                results.append({"ms": ms, "categories": _categories(found.classifications[0].categories)})
    print(json.dumps({"results": results}))


def _categories(categories):
    return [{"name": c.category_name, "index": c.index, "score": c.score} for c in categories]


if __name__ == "__main__":
    main(*sys.argv[1:6])
