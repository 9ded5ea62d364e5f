"""docs/porting.md shows the files of tests/integration/porting as they are, and diffs of them.

Each marked code block of the page (``<!-- porting: file PATH -->`` or ``<!-- porting: diff
OLD NEW -->`` on the line before it, paths under tests/integration/porting) must equal what
this module generates from the files that the integration tests run, so the page cannot
drift from code that works. ``python tests/unit/test_porting_doc.py`` rewrites the blocks.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "porting.md"
PORTING = ROOT / "tests" / "integration" / "porting"
# A marker line, then a fenced block (its closing fence at the start of a line).
BLOCK = re.compile(
    r"^<!-- porting: (?P<kind>file|diff) (?P<paths>[^>]+?) -->\n"
    r"(?P<fence>```[a-z]*\n)(?P<body>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)
LANGUAGES = {".py": "python", ".yaml": "yaml", ".toml": "toml"}


def unified_diff(old: str, new: str) -> str:
    """``diff -u old new`` of two files under the porting folder, named by those paths."""
    before = (PORTING / old).read_text().splitlines(keepends=True)
    after = (PORTING / new).read_text().splitlines(keepends=True)
    return "".join(difflib.unified_diff(before, after, fromfile=old, tofile=new))


def generated(kind: str, paths: str) -> tuple[str, str]:
    """The fence line and the body the block named by ``kind`` and ``paths`` must have."""
    if kind == "diff":
        old, new = paths.split()
        return "```diff\n", unified_diff(old, new)
    language = LANGUAGES.get(Path(paths).suffix, "")
    return f"```{language}\n", (PORTING / paths).read_text()


def regenerate(text: str) -> str:
    """``text`` with every marked block replaced by what it must hold."""

    def block(match: re.Match[str]) -> str:
        fence, body = generated(match["kind"], match["paths"])
        return match.group(0)[: match.start("fence") - match.start()] + fence + body + "```"

    return BLOCK.sub(block, text)


def test_every_marked_block_is_generated_from_the_tested_files():
    text = DOC.read_text()
    stale = [
        f"{m['kind']} {m['paths']}"
        for m in BLOCK.finditer(text)
        if (m["fence"], m["body"]) != generated(m["kind"], m["paths"])
    ]
    assert stale == [], "stale blocks in docs/porting.md; run python tests/unit/test_porting_doc.py"


def test_the_page_shows_both_ports_and_the_files_of_a_project():
    shown = {(m["kind"], m["paths"]) for m in BLOCK.finditer(DOC.read_text())}
    assert {
        ("file", "original/train.py"),
        ("diff", "original/train.py ported_loop/train.py"),
        ("diff", "original/train.py ported_trainer/train.py"),
        ("diff", "ported_loop/train.py ported_loop_ddp/train.py"),
        ("file", "ported_loop/experiments/baseline.yaml"),
        ("file", "ported_trainer/experiments/baseline.yaml"),
        ("file", "ported_loop/pyproject.toml"),
        ("file", "ported_loop/slurm/local.yaml"),
    } <= shown


if __name__ == "__main__":
    DOC.write_text(regenerate(DOC.read_text()))
