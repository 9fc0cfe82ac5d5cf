"""The user's-machine side of the bundle: job specs, staging, submission and monitoring.

`python -m cloud --help` lists the commands. Nothing here imports TensorFlow:
it runs where only `pip install '.[cloud]'` is installed.
"""
