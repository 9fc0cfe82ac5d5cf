"""The README is a short front door, every docs page is reachable from it, and no relative link is broken."""
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README_LIMIT_BYTES = 10 * 1024
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def tracked_markdown():
    listed = subprocess.run(["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True, check=True)
    return [REPO / name for name in listed.stdout.split()]


def prose(text):
    """The text outside code, where links and headings are markdown."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces made hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path):
    return {slug(heading) for heading in HEADING.findall(FENCE.sub("", path.read_text()))}


def relative_links(path):
    """(target file, anchor or None) for each relative link in the markdown file PATH."""
    for target in LINK.findall(prose(path.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue
        file_part, _, anchor = target.partition("#")
        yield (path.parent / file_part).resolve() if file_part else path, anchor or None


def shown(path):
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def broken_links(paths):
    broken = []
    for path in paths:
        for target, anchor in relative_links(path):
            name = f"{shown(path)} -> {shown(target)}"
            if not target.exists():
                broken.append(f"{name}: no such file")
            elif anchor and target.suffix == ".md" and anchor not in anchors(target):
                broken.append(f"{name}#{anchor}: no such heading")
    return broken


def reachable_from(start):
    seen, todo = set(), [start.resolve()]
    while todo:
        page = todo.pop()
        if page in seen or page.suffix != ".md" or not page.exists():
            continue
        seen.add(page)
        todo.extend(target for target, _ in relative_links(page))
    return seen


def test_the_readme_is_under_10_kb():
    assert len((REPO / "README.md").read_bytes()) < README_LIMIT_BYTES


def test_the_readme_keeps_ci_s_test_command():
    blocks = FENCE.findall((REPO / "README.md").read_text())
    assert any(re.search(r"^make test\b", block, re.M) for block in blocks)


def test_every_docs_page_is_reachable_from_the_readme():
    pages = {page.resolve() for page in (REPO / "docs").rglob("*.md")}
    assert pages - reachable_from(REPO / "README.md") == set()


def test_the_readme_links_each_top_level_docs_page_and_the_catalogues():
    linked = {target for target, _ in relative_links(REPO / "README.md")}
    expected = {*(REPO / "docs").glob("*.md"), REPO / "docs" / "decisions" / "README.md",
                REPO / "configs" / "models" / "README.md", REPO / "configs" / "jobs" / "README.md"}
    assert {page.resolve() for page in expected} - linked == set()


def test_the_decisions_index_links_each_decision():
    index = REPO / "docs" / "decisions" / "README.md"
    decisions = {page.resolve() for page in index.parent.glob("*.md")} - {index.resolve()}
    assert decisions and decisions - {target for target, _ in relative_links(index)} == set()


def test_no_relative_link_in_a_tracked_markdown_file_is_broken():
    assert broken_links(tracked_markdown()) == []


@pytest.mark.parametrize("link, problem", [("docs/nowhere.md", "no such file"),
                                           ("docs/stages.md#no-such-section", "no such heading")])
def test_the_link_checker_finds_a_broken_link(tmp_path, link, problem):
    page = tmp_path / "page.md"
    page.write_text(f"See [there]({REPO / link}) and `[code](nowhere.md)`.\n")
    assert [line.split(": ")[-1] for line in broken_links([page])] == [problem]


@pytest.mark.parametrize("heading, anchor", [("## prepare: bucket → TFRecords", "prepare-bucket--tfrecords"),
                                             ("### A quiet console, full logs", "a-quiet-console-full-logs"),
                                             ("## What lands in RESULT_DIR", "what-lands-in-result_dir"),
                                             ("## report: look at the dataset and the model's mistakes",
                                              "report-look-at-the-dataset-and-the-models-mistakes")])
def test_anchors_are_github_s(heading, anchor):
    assert slug(heading.lstrip("# ")) == anchor


def test_the_readme_throughput_table_is_what_the_estimate_reads():
    """Each measured model's row: its CPU ms from configs/jobs/throughput.yaml and the images/s 4, 8 and 12 vCPUs
    feed at that cost; a model without a figure has no row."""
    import yaml

    models = yaml.safe_load((REPO / "configs" / "jobs" / "throughput.yaml").read_text())["models"]
    rows = re.findall(r"^\| `(\w+)` \| ([\d.]+) \| ([\d,]+) / ([\d,]+) / ([\d,]+) \|", (REPO / "README.md").read_text(),
                      re.M)
    measured = {name: figures["cpu_ms_per_image"] for name, figures in models.items()
                if figures["cpu_ms_per_image"] is not None}
    assert {name: float(ms) for name, ms, *_ in rows} == measured
    for name, ms, *fed in rows:
        assert [int(rate.replace(",", "")) for rate in fed] == [int(vcpus * 1000 // measured[name])
                                                              for vcpus in (4, 8, 12)], name
