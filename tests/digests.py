"""A bucket's files by digest, to show a stage left it byte for byte as it was."""
import hashlib
from pathlib import Path


def tree_digests(folder):
    """{relative path: sha256} of every file under FOLDER."""
    folder = Path(folder)
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}
