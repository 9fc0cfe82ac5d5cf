"""DATA_DIR and RESULT_DIR must lie apart: the bucket is read-only to every stage.

prepare empties RESULT_DIR/data/ before writing records, and every stage writes
under RESULT_DIR, so a bucket at, inside or around RESULT_DIR would be written
or deleted. Paths are compared after resolving links; a cloud run compares the
/gcs FUSE paths its job will see.
"""
from pathlib import Path

from trainer.errors import UserError


def refuse_overlap(data_dir, result_dir, data_name=None, result_name=None):
    """Raise UserError when DATA_DIR and RESULT_DIR are one folder or one lies inside the other.

    DATA_NAME and RESULT_NAME say them in the error (default `DATA_DIR path`, `RESULT_DIR path`).
    """
    data, result = Path(data_dir).resolve(), Path(result_dir).resolve()
    if data == result:
        relation = "are the same folder"
    elif result in data.parents:
        relation = "overlap: the bucket is inside the result folder"
    elif data in result.parents:
        relation = "overlap: the result folder is inside the bucket"
    else:
        return
    raise UserError(f"{result_name or f'RESULT_DIR {result_dir}'} and {data_name or f'DATA_DIR {data_dir}'} "
                    f"{relation}; the bucket is never written, so choose a result folder outside it (and not "
                    f"around it)")
