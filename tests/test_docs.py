"""The docs in two layers: a short README, reference pages in docs/, and links that lead somewhere."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BENCHMARKS = ROOT / "BENCHMARKS.md"
LOG = ROOT / "docs" / "benchmark-log.md"
PAGES = [README, BENCHMARKS, *sorted((ROOT / "docs").glob("*.md"))]
TEST_COMMAND = "pip install -e .[test] && pytest"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def fenced(text: str, language: str = "") -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def headings(path: Path) -> list[str]:
    """The page's headings outside code blocks, in order."""
    shown, in_code = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and re.match(r"#{1,6} ", line):
            shown.append(line.lstrip("#").strip())
    return shown


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for the page's headings: lower case, punctuation dropped, spaces as hyphens."""
    seen: dict[str, int] = {}
    found = set()
    for title in headings(path):
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def test_the_readme_is_short_and_benchmarks_are_current_results() -> None:
    assert len(README.read_text().splitlines()) <= 160
    assert len(BENCHMARKS.read_text().splitlines()) <= 130
    assert LOG.is_file() and "(docs/benchmark-log.md)" in BENCHMARKS.read_text()


def test_the_readme_test_command_is_what_ci_runs() -> None:
    setup = README.read_text().split("## Set up", 1)[1]
    block = fenced(setup, "bash")[0].strip().splitlines()
    assert block == ["pip install -e . && svtprune demo", TEST_COMMAND]
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == TEST_COMMAND


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
            broken.append(target)
    assert not broken, broken


def test_the_reference_pages_python_examples_parse() -> None:
    for page in PAGES:
        for block in fenced(page.read_text(), "python"):
            ast.parse(block, filename=str(page))


def test_code_that_cites_the_benchmark_log_names_one_of_its_sections() -> None:
    titles = headings(LOG)
    cited = []
    for source in [*ROOT.glob("svtprune/**/*.py"), *ROOT.glob("tools/*.py")]:
        text = source.read_text()
        assert "BENCHMARKS.md," not in text and 'BENCHMARKS.md "' not in text, source  # dated entries live in the log
        for title in re.findall(r'benchmark-log\.md,?\s*(?:#\s*)?"([^"]+)"', text):
            cited.append(title)
            assert any(t.startswith(title) for t in titles), (source, title)
        for issue in re.findall(r"benchmark-log\.md, issue (\d+)", text):
            cited.append(issue)
            assert any(re.search(rf"\bissue {issue}\b", t) for t in titles), (source, issue)
    assert cited
