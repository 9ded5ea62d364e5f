"""The template's lock pins what the toolkit's lock pins, so baked projects run what is tested.

A baked project's `make lock` resolves with the toolkit's lock as constraints; the template
ships the result. When the toolkit's lock moves, this fails until the template's lock is
refreshed (docs/template.md, "Updating the template's lock").
"""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_LOCK = REPO / "{{cookiecutter.project_slug}}" / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)")


def pins(path: Path) -> dict[tuple[str, str], set[str]]:
    """(package, version) -> hashes, of a hashed requirements file."""
    found: dict[tuple[str, str], set[str]] = {}
    current: tuple[str, str] | None = None
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            current = (match.group(1).lower(), match.group(2))
            found[current] = set()
        elif current is not None and line.strip().startswith("--hash=sha256:"):
            found[current].add(line.strip().removeprefix("--hash=sha256:").rstrip(" \\"))
    return found


def test_every_template_pin_is_a_toolkit_pin_with_the_same_hashes():
    """Environment markers may differ: the template needs some packages on fewer platforms."""
    toolkit, template = pins(REPO / "requirements.lock"), pins(TEMPLATE_LOCK)
    assert len(template) > 50
    assert all(template.values())
    assert not any(name == "blocktrain" for name, _ in template)  # `make init` installs it
    assert sorted(set(template) - set(toolkit)) == []
    assert [pin for pin in template if template[pin] != toolkit[pin]] == []


def test_the_template_lock_names_no_index_and_no_path():
    text = TEMPLATE_LOCK.read_text()
    assert "--index-url" not in text
    assert "--extra-index-url" not in text
    assert "--find-links" not in text
    assert "file://" not in text
    assert "{{" not in text
