"""docs/lightning.md shows the scripts of tests/integration/lightning_porting as they are.

Each marked code block (``<!-- lightning: file PATH -->`` or ``<!-- lightning: diff OLD NEW
-->`` on the line before it) must equal what this module generates from the files; the port is
the one tests/integration/local/test_lightning_jobs.py launches and preempts.
``python tests/unit/test_lightning_doc.py`` rewrites the blocks.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "lightning.md"
FILES = ROOT / "tests" / "integration" / "lightning_porting"
BLOCK = re.compile(
    r"^<!-- lightning: (?P<kind>file|diff) (?P<paths>[^>]+?) -->\n"
    r"(?P<fence>```[a-z]*\n)(?P<body>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)
LANGUAGES = {".py": "python", ".yaml": "yaml", ".toml": "toml"}


def generated(kind: str, paths: str) -> tuple[str, str]:
    if kind == "diff":
        old, new = paths.split()
        before = (FILES / old).read_text().splitlines(keepends=True)
        after = (FILES / new).read_text().splitlines(keepends=True)
        return "```diff\n", "".join(difflib.unified_diff(before, after, old, new))
    return f"```{LANGUAGES.get(Path(paths).suffix, '')}\n", (FILES / paths).read_text()


def regenerate(text: str) -> str:
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
    assert stale == [], (
        "stale blocks in docs/lightning.md; run python tests/unit/test_lightning_doc.py"
    )


def test_the_page_shows_the_script_and_its_port():
    shown = {(m["kind"], m["paths"]) for m in BLOCK.finditer(DOC.read_text())}
    assert shown == {
        ("file", "original/train.py"),
        ("diff", "original/train.py ported/train.py"),
        ("file", "ported/experiments/baseline.yaml"),
    }


if __name__ == "__main__":
    DOC.write_text(regenerate(DOC.read_text()))
