"""Benchmark: peak memory of prepare at 1x and 10x the images, and of reading a ~200 MB _annotations.json.

Each measurement is its own subprocess: memory is the peak resident size of the
largest process (ru_maxrss from wait4) and the peak sum over its process tree
(sampled every 20 ms; prepare reads images in a pool of processes). Prepare runs
on the kangaroo bucket replicated (or the generated sample bucket when it is
absent) at 1x and 10x its images: the ratio 10x / 1x says whether memory grows
with the bucket. The annotations file is generated as a large real bucket's would
be (image keys with three boxes each, the images themselves absent) and read by
the streamed reader that prepare uses, against the old whole-file `json.loads`
path in the same run. Figures are printed, nothing is asserted.

    python benchmarks/memory.py [--megabytes 200] [--source DIR]
"""
import argparse
import json
import os
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare import KANGAROO, measure, replicate_bucket  # noqa: E402 (the prepare benchmark's helpers)

READ = {"streamed": "from trainer.annotations import read_annotations as read; result, _ = read(PATH)",
        "json.loads (old)": "from pathlib import Path; from trainer.annotations import parse_annotations as parse; "
                            "result = parse(Path(PATH).read_bytes())"}


def annotations_file(path, megabytes, seed=0):
    """A localization _annotations.json of about MEGABYTES MB: keys of (absent) images with three boxes each."""
    rng = random.Random(seed)
    labels = ["kangaroo", "wallaby", "emu"]
    with open(path, "w") as file:
        file.write(json.dumps({"version": "1.0", "type": "localization", "labels": labels})[:-1] + ', "annotations": {')
        size, index = 0, 0
        while size < megabytes * 10**6:
            boxes = [{"x": round(x, 6), "y": round(y, 6), "x2": round(x + 0.2, 6), "y2": round(y + 0.3, 6),
                      "label": rng.choice(labels)} for x, y in ((rng.random() * 0.8, rng.random() * 0.7)
                                                                 for _ in range(3))]
            entry = ("," if index else "") + json.dumps(f"photos/{index:07d}.jpg") + ": " + json.dumps(boxes)
            file.write(entry)
            size, index = size + len(entry), index + 1
        file.write("}}\n")
    return index


def source_bucket(source, temp):
    if (source / "_annotations.json").is_file():
        return source, f"{source.name} bucket"
    from trainer.sample import make_sample_bucket

    make_sample_bucket(temp / "sample", 96)
    return temp / "sample", "generated sample bucket"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=int, default=200, help="size of the generated _annotations.json")
    parser.add_argument("--source", type=Path, default=KANGAROO, help="bucket to replicate (default: kangaroo)")
    args = parser.parse_args()
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as temp:
        temp = Path(temp)
        source, described = source_bucket(args.source, temp)
        count = len(json.loads((source / "_annotations.json").read_text())["annotations"])
        prepared = {}
        for scale in (1, 10):
            bucket = replicate_bucket(source, temp / f"x{scale}" / "bucket", count * scale)
            print(f"prepare on {count * scale} images ...", file=sys.stderr)
            prepared[scale] = measure([sys.executable, "-m", "trainer", "prepare", "--data-dir", str(bucket),
                                       "--result-dir", str(temp / f"x{scale}" / "result")])
        path = temp / "_annotations.json"
        keys, megabytes = annotations_file(path, args.megabytes), path.stat().st_size / 1e6
        read = {}
        for name, code in READ.items():
            print(f"reading {megabytes:.0f} MB of annotations: {name} ...", file=sys.stderr)
            read[name] = measure([sys.executable, "-c", code.replace("PATH", repr(str(path)))
                                  + "; print(len(result.images))"])
    print(f"\nprepare on the {described} ({count} images) replicated; peak RSS of the largest process / the tree:")
    for scale, (seconds, cpu, largest, tree, _) in prepared.items():
        print(f"  {scale:>2}x {count * scale:>6} images: {largest:>6.0f} MiB / {tree:>6.0f} MiB  ({seconds:.1f} s)")
    print(f"  ratio 10x / 1x: {prepared[10][2] / prepared[1][2]:.2f} (largest), "
          f"{prepared[10][3] / prepared[1][3]:.2f} (tree)")
    print(f"\nreading a {megabytes:.0f} MB _annotations.json ({keys} image keys, 3 boxes each):")
    for name, (seconds, cpu, largest, _, output) in read.items():
        print(f"  {name:<17} {largest:>6.0f} MiB  {seconds:>5.1f} s  ({output.strip()} images)")
    streamed, whole = read["streamed"][2], read["json.loads (old)"][2]
    print(f"  ratio streamed / json.loads: {streamed / whole:.2f}")
    print(f"cores: {len(os.sched_getaffinity(0))}, load average before: {load}")


if __name__ == "__main__":
    main()
