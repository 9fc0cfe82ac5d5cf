"""`make package`: build dist/trainer.zip and the trainer sdist.

trainer.zip is the cloud training job bundle: start.sh at the root, the
`trainer` package and the model catalogue configs/models/, laid out as in the
repo, as git tracks them (an untracked service-account.json, *.orig or runs/
beside the code never ships; the images unzip this same zip), so `cacli train --script=dist/trainer.zip` and a bare
`unzip trainer.zip && bash start.sh STEPS` both work. It is deterministic
(sorted entries, fixed timestamps and modes): the same sources give the same
bytes, so a changed hash means changed code.

The sdist (`python setup.py sdist`) is what configs/jobs/python-package.yaml
runs on the training image: new code without a new image.
"""
import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUNDLED_TREES = ("trainer", "configs/models")
ENTRY_SCRIPT = "start.sh"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def bundle_members(repo=REPO):
    """Sorted (name in the zip, source path): start.sh, then every file git tracks in the bundled trees."""
    listed = subprocess.run(["git", "ls-files", "-z", "--", *BUNDLED_TREES], cwd=repo, capture_output=True)
    if listed.returncode:
        raise SystemExit(f"error: cannot list the bundle's files with git in {repo}: "
                         f"{listed.stderr.decode(errors='replace').strip()}")
    tracked = [name for name in listed.stdout.decode().split("\0") if name]
    members = {ENTRY_SCRIPT: repo / "packaging" / ENTRY_SCRIPT, **{name: repo / name for name in tracked}}
    return sorted(members.items())


def build_zip(out_path, repo=REPO):
    """Write the bundle to OUT_PATH; return OUT_PATH."""
    members = bundle_members(repo)
    missing = [str(source) for _, source in members if not source.is_file()]
    if missing:
        raise SystemExit(f"error: cannot build the bundle, missing: {', '.join(missing)}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out_path, "w") as bundle:
        for name, source in members:
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o100755 if name == ENTRY_SCRIPT else 0o100644) << 16
            bundle.writestr(info, source.read_bytes())
    return out_path


def build_sdist(dist_dir, repo=REPO):
    """Run `setup.py sdist` into DIST_DIR; return the archive it wrote."""
    before = set(dist_dir.glob("*.tar.gz"))
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(dist_dir)],
                   cwd=repo, check=True, stdout=subprocess.DEVNULL)
    written = set(dist_dir.glob("*.tar.gz")) - before
    return max(written or before, key=lambda path: path.stat().st_mtime)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="packaging/build.py", description=__doc__.splitlines()[0])
    parser.add_argument("--dist-dir", type=Path, default=REPO / "dist", help="output folder (default: dist/)")
    args = parser.parse_args(argv)
    bundle = build_zip(args.dist_dir / "trainer.zip")
    print(f"{bundle}: {len(bundle_members())} files, {bundle.stat().st_size / 1024:.0f} KiB")
    sdist = build_sdist(args.dist_dir.resolve())
    print(f"{sdist}: {sdist.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
