"""The template's lock pins what the toolkit's lock pins, so baked projects run what is tested,
and every bake fits it to where the project takes blocktrain from.

The template's poetry.lock is made from the toolkit's (docs/template.md, "Updating the
template's lock"): when the toolkit's lock moves, this fails until the template's is refreshed.
Its requirements.lock is its export, without blocktrain (`make init` installs blocktrain from
BLOCKTRAIN). The post-generation hook rewrites blocktrain's source and the content-hash
(hooks/template_lock.py); the baked project's `make lint` runs `poetry check --lock`
(tests/integration/template).
"""

import functools
import re
import tomllib
from pathlib import Path

import pytest
from lockfiles import REPO, Pins, locked, pins, template_lock_module

TEMPLATE = REPO / "{{cookiecutter.project_slug}}"


def third_party(lock: Pins) -> Pins:
    return {pin: hashes for pin, hashes in lock.items() if pin[0] != "blocktrain"}


def test_every_template_pin_is_a_toolkit_pin_with_the_same_hashes():
    """Environment markers may differ: the template needs some packages on fewer platforms."""
    toolkit, template = locked(REPO / "poetry.lock"), third_party(locked(TEMPLATE / "poetry.lock"))
    assert len(template) > 50
    assert all(template.values())
    assert sorted(set(template) - set(toolkit)) == []
    assert [pin for pin in template if template[pin] != toolkit[pin]] == []


def test_the_template_export_is_its_poetry_lock_without_blocktrain():
    exported = pins(TEMPLATE / "requirements.lock")
    assert not any(name == "blocktrain" for name, _ in exported)  # `make init` installs it
    assert exported == third_party(locked(TEMPLATE / "poetry.lock"))


@pytest.mark.parametrize("name", ["poetry.lock", "requirements.lock"])
def test_the_template_locks_name_no_index_and_no_jinja(name: str):
    text = (TEMPLATE / name).read_text()
    for option in ("--index-url", "--extra-index-url", "--find-links", "file://"):
        assert option not in text
    for jinja in ("{{", "{%", "{#"):
        assert jinja not in text


@functools.cache
def template_lock() -> tuple[str, Pins]:
    """The template's poetry.lock: its text and its third-party pins."""
    return (TEMPLATE / "poetry.lock").read_text(), third_party(locked(TEMPLATE / "poetry.lock"))


def baked(source: str, project: Path) -> tuple[str, dict[str, str], str]:
    """The template's lock baked for `source`: its text, blocktrain's source table, and the
    pyproject.toml it was baked for."""
    pyproject = f'[project]\nname = "p"\ndependencies = ["{source}", "torch>=2.4"]\n'
    lock = template_lock()[0]
    text = template_lock_module().baked_lock(lock, pyproject, source_of(source), project)
    blocktrain = next(p for p in tomllib.loads(text)["package"] if p["name"] == "blocktrain")
    return text, blocktrain.get("source", {}), pyproject


def source_of(requirement: str) -> str:
    """The bake's source (hooks/template_source.py) of a blocktrain requirement."""
    return re.sub(r"^blocktrain( @ (file://)?|==)", "", requirement)


@pytest.mark.parametrize(
    ("requirement", "expected"),
    [
        ("blocktrain @ file:///work/blocktrain", {"type": "directory", "url": "../../blocktrain"}),
        (
            "blocktrain @ git+https://example.org/lab/blocktrain.git@v0.1.0",
            {"type": "git", "url": "https://example.org/lab/blocktrain.git", "reference": "v0.1.0"},
        ),
        (
            "blocktrain @ git+ssh://git@example.org/lab/blocktrain.git",
            {"type": "git", "url": "ssh://git@example.org/lab/blocktrain.git", "reference": "HEAD"},
        ),
        ("blocktrain==0.1.0", {}),
    ],
)
def test_a_bake_fits_blocktrain_and_the_content_hash_and_nothing_else(
    requirement: str, expected: dict[str, str]
):
    project = Path("/work/projects/p")
    text, source, pyproject = baked(requirement, project)
    assert source == expected
    assert tomllib.loads(text)["metadata"]["content-hash"] == (
        template_lock_module().content_hash(tomllib.loads(pyproject))
    )
    assert locked_without_blocktrain(text) == template_lock()[1]


def locked_without_blocktrain(text: str) -> Pins:
    packages = tomllib.loads(text)["package"]
    return {
        (p["name"], p["version"]): {f["hash"].removeprefix("sha256:") for f in p["files"]}
        for p in packages
        if p["name"] != "blocktrain"
    }
