"""The documentation's Python examples run: every ```python block of docs/*.md and README.md.

A page's blocks run in order in one namespace (later examples build on earlier ones), in a fresh
temporary working folder, so an example that needs a file makes it or reads the bundled samples.
A block preceded by ``<!-- skip: REASON -->`` (the last non-blank line before its fence) is not run;
each such block is reported as a skipped test with its reason. The site itself is built, in strict
mode, by .ci/run (``mkdocs build --strict``), not here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python\s*$")
SKIP = re.compile(r"^<!--\s*skip:\s*(?P<reason>\S.*?)\s*-->$")
# Skipped examples are the exception: each needs a reason a reader accepts (a file no registry ships).
MAX_SKIPPED = 3


@dataclass(frozen=True)
class Example:
    page: Path
    line: int  # 1-based line of the first line of code
    code: str
    skip: str | None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def examples(page: Path) -> list[Example]:
    lines = page.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        if FENCE.match(lines[i]):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
            assert end is not None, f"{page.relative_to(ROOT)}:{i + 1}: a ```python block that is never closed"
            before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            skip = SKIP.match(before)
            found.append(Example(page, i + 2, "\n".join(lines[i + 1:end]) + "\n", skip and skip["reason"]))
            i = end
        i += 1
    return found


ALL = [e for page in PAGES for e in examples(page)]
RUN_PAGES = sorted({e.page for e in ALL if e.skip is None})
SKIPPED = [e for e in ALL if e.skip is not None]


def test_the_pages_have_examples():
    assert len(ALL) >= 10 and len(RUN_PAGES) >= 6, [e.where for e in ALL]
    assert len(SKIPPED) <= MAX_SKIPPED, [e.where for e in SKIPPED]


@pytest.fixture
def one_thread():
    """The examples run on one thread. The suite runs on shared, busy CPUs, where the ncnn runtime's
    threads (as many as torch's) wait by spinning: docs/images.md took 26.7 s on two threads against
    3.1 s on one, with other jobs on the two cores. What the examples compute is the same."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("page", RUN_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_run(page: Path, tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for example in examples(page):
        if example.skip is None:
            # Padding keeps the page's own line numbers in tracebacks.
            code = compile("\n" * (example.line - 1) + example.code, str(example.page), "exec")
            exec(code, namespace)


@pytest.mark.parametrize("example", SKIPPED, ids=lambda e: e.where)
def test_skipped_examples(example: Example):
    compile(example.code, example.where, "exec")  # still valid Python
    pytest.skip(f"{example.where}: {example.skip}")
