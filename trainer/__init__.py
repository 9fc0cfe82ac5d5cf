"""The job side: turns a Cloud Annotations bucket into a trained, exported detector.

Each stage is one module with one public function; `python -m trainer STAGE --help`.
"""
