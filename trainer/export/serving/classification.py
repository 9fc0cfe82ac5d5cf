"""A classifier's serving code in each export format: a stretched RGB image in, class probabilities out."""
import numpy as np

from trainer.export import metadata
from trainer.export.common import classifier, core_ml_convert, stretch

NAME = "classification"


def saved_model_module(job):
    """Our SavedModel module: the raw image stretched to the input, `probs` out."""
    from trainer import model_garden

    return model_garden.stretching_classifier(job.params, job.input_size)


def tflite_function(job):
    """(uint8 image [1, H, W, 3] -> {"probs": [1, classes]}, the model holding the weights)."""
    import tensorflow as tf

    run_classifier, model = classifier(job)
    height, width = job.input_size

    @tf.function(input_signature=[tf.TensorSpec([1, height, width, 3], tf.uint8, name="image")])
    def serve(image):
        return {"probs": run_classifier(tf.cast(image, tf.float32))}

    return serve, model


def web_function(job):
    """None: TF.js converts the SavedModel's graph as it is (no NMS to replace)."""
    return None


def metadata_outputs(b, threshold):
    """The TFLite metadata of the one output, probabilities [1, classes], labelled along its axis."""
    return [metadata.tensor(b, "probability", "class probabilities (softmax), in labels.txt order",
                            content=metadata.content(b, metadata.FEATURE_PROPERTIES, metadata.table(b, [])),
                            process_units=[threshold], stats=(1.0, 0.0),
                            associated_files=[metadata.labels_file(b, metadata.TENSOR_AXIS_LABELS)])]


def core_ml_spec(job):
    """A Core ML classifier: image -> classLabel, classLabelProbs {label: probability} (what Vision turns into
    VNClassificationObservation)."""
    import coremltools as ct

    model = core_ml_convert(_core_ml_function(job), job.input_size,
                            classifier_config=ct.ClassifierConfig(list(job.labels)))
    spec = model.get_spec()
    probs = next(output.name for output in spec.description.output if output.name != "classLabel")
    ct.utils.rename_feature(spec, probs, "classLabelProbs")
    spec.description.predictedProbabilitiesName = "classLabelProbs"
    return spec


def check_core_ml(spec, labels):
    """Model.mlmodel as written: the image in, classLabel and classLabelProbs out, labels.json's labels."""
    names = ([f.name for f in spec.description.input], sorted(f.name for f in spec.description.output))
    if names != (["image"], ["classLabel", "classLabelProbs"]) or list(spec.neuralNetworkClassifier.stringClassLabels
                                                                        .vector) != list(labels):
        raise RuntimeError(f"Model.mlmodel has inputs and outputs {names} and other labels than labels.json")


def core_ml_predict(job):
    """image -> {"probs"}: the converted function on the image stretched to the input."""
    import tensorflow as tf

    probabilities = _core_ml_function(job)
    return lambda image: {"probs": probabilities(tf.constant(stretch(image, job.input_size)[None],
                                                             tf.float32)).numpy()[0]}


def _core_ml_function(job):
    """The function converted: float RGB [1, H, W, 3] -> probabilities [1, classes]."""
    import tensorflow as tf

    run_classifier, _ = classifier(job)
    height, width = job.input_size
    return tf.function(run_classifier, input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32,
                                                                       name="image")])


def from_tfjs(result):
    """One image's result from tfjs_detect.js as the evaluation's {"probs"}."""
    return {"probs": np.array(result["probs"], np.float32)}


def from_mediapipe(result, shape, labels):
    """ImageClassifier's categories (those above the threshold, each with its label id as `index`) as a
    probability vector in label order."""
    probs = np.zeros(len(labels), np.float32)
    for category in result["categories"]:
        probs[category["index"]] = category["score"]
    return {"probs": probs}
