"""The image builder's pure parts (scripts/training-image): the Debian archive apt uses, the
cached base's name, the mount points, and the content-dated build context."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "training-image"


@pytest.fixture(scope="module")
def builder() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("training_image", str(SCRIPT))
    spec = importlib.util.spec_from_loader("training_image", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while defined
    loader.exec_module(module)
    return module


DEB822 = """\
Types: deb
URIs: http://mirror.invalid/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.invalid/debian-security
Suites: bookworm-security
Components: main
"""


def test_the_debian_archive_is_read_from_either_sources_format(builder: ModuleType):
    assert builder.debian_mirror([DEB822], "bookworm") == "http://mirror.invalid/debian"
    one_line = "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://other.invalid/d bookworm main\n"
    assert builder.debian_mirror(["", one_line], "bookworm") == "http://other.invalid/d"
    assert builder.debian_mirror([DEB822], "trixie") is None


def test_the_base_is_named_by_suite_architecture_and_packages(builder: ModuleType):
    tag = builder.base_tag("bookworm", ["python3", "ca-certificates"], "amd64")
    assert tag.startswith("blocktrain-base:bookworm-")
    assert tag == builder.base_tag("bookworm", ["ca-certificates", "python3"], "amd64")
    assert tag != builder.base_tag("bookworm", ["python3"], "amd64")
    assert tag != builder.base_tag("bookworm", ["python3", "ca-certificates"], "arm64")
    assert builder.storage_path("a/b:c") == "a%b+c"


def test_mount_points_leave_out_tmp_and_relative_paths(builder: ModuleType):
    paths = ["/home/ada/proj/", "/tmp/pytest/proj", "/tmp", "data", "/scratch", "/scratch"]
    assert builder.mount_points(paths) == ["/home/ada/proj", "/scratch"]


def test_context_files_are_dated_by_their_content(builder: ModuleType, tmp_path: Path):
    first, second, third = (tmp_path / n for n in ("a", "b", "c"))
    first.write_bytes(b"same")
    second.write_bytes(b"same")
    third.write_bytes(b"other")
    assert builder.content_time(first) == builder.content_time(second)
    assert builder.content_time(first) != builder.content_time(third)
    assert builder.content_time(tmp_path) == 0
