"""The toolkit's lock: poetry.lock is the one source, requirements.lock its hashed export.

`make lock` writes both (Poetry locks, its export plugin exports); `make init` installs the
export with uv, and `make lint` runs `poetry check --lock`. These checks need neither Poetry nor
the network: they read the files.
"""

import re
import tomllib

from lockfiles import REPO, locked, pins, template_lock_module

POETRY_LOCK = REPO / "poetry.lock"
EXPORT = REPO / "requirements.lock"


def test_requirements_lock_is_poetry_lock_exported_with_every_hash():
    exported, lock = pins(EXPORT), locked(POETRY_LOCK)
    assert len(lock) > 100
    assert all(lock.values())  # every locked package has files with hashes
    assert sorted(set(lock) - set(exported)) == []  # run `make lock` to export again
    assert sorted(set(exported) - set(lock)) == []
    assert [pin for pin in lock if lock[pin] != exported[pin]] == []


def test_the_export_says_where_it_comes_from_and_names_no_index():
    text = EXPORT.read_text()
    assert text.startswith("# Generated from poetry.lock by `make lock`")
    for option in ("--index-url", "--extra-index-url", "--find-links", "file://"):
        assert option not in text


def test_poetry_lock_is_the_lock_of_pyproject():
    """The content-hash `poetry check --lock` compares; it also checks hooks/template_lock.py's
    copy of Poetry's hash against a lock Poetry wrote."""
    lock = tomllib.loads(POETRY_LOCK.read_text())
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert lock["metadata"]["content-hash"] == template_lock_module().content_hash(pyproject)
    assert lock["metadata"]["python-versions"] == pyproject["project"]["requires-python"]


def test_each_upper_cap_says_why_and_the_mlflow_cap_is_checked_at_lock_time():
    """Caps make Poetry's resolution possible (mlflow) and are dropped when they can be: `make
    lock` asks the package index whether mlflow at the cap resolves now, and says so."""
    capped = [
        (number, line)
        for number, line in enumerate((REPO / "pyproject.toml").read_text().splitlines())
        if re.match(r'\s*"[A-Za-z0-9_.\[\]-]+[^"]*,<[\d.]+"', line)
    ]
    assert [line.split('"')[1] for _, line in capped] == [
        "mlflow-skinny>=3.0,<3.18",
        "mlflow>=3.0,<3.18",
    ]
    lines = (REPO / "pyproject.toml").read_text().splitlines()
    for number, line in capped:
        assert "#" in line or lines[number - 1].strip().startswith("#"), line
    makefile = (REPO / "Makefile").read_text()
    assert "echo 'mlflow>=3.18' | $(UV) pip compile" in makefile
    template = (REPO / "{{cookiecutter.project_slug}}" / "pyproject.toml").read_text()
    assert '"mlflow>=3.0,<3.18",' in template


MACHINES = [
    {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"},
    {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "aarch64"},
    {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "ppc64le"},
    {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64"},
    {"sys_platform": "win32", "platform_system": "Windows", "platform_machine": "AMD64"},
]
EXPORTED = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)(?: ; (.*?))? \\$")


def test_the_export_asks_for_one_version_of_each_package_on_each_machine():
    """Poetry may lock two versions of a package under overlapping markers; `uv pip sync` then
    refuses the export. The `cuda` group in pyproject.toml keeps torch's CUDA libraries whole."""
    from packaging.markers import Marker

    asked: dict[str, list[tuple[str, str]]] = {}
    for line in EXPORT.read_text().splitlines():
        match = EXPORTED.match(line)
        if match:
            asked.setdefault(match[1].lower(), []).append((match[2], match[3] or ""))
    both = []
    for python in ("3.11", "3.12", "3.13"):
        for machine in MACHINES:
            env = {**machine, "python_version": python, "python_full_version": f"{python}.0"}
            for name, versions in asked.items():
                chosen = [v for v, marker in versions if not marker or Marker(marker).evaluate(env)]
                if len(chosen) > 1:
                    both.append((name, python, machine["platform_machine"], chosen))
    assert both == []


def test_the_cuda_group_follows_what_the_locked_cuda_toolkit_asks_for():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = pyproject["tool"]["poetry"]["group"]["cuda"]["dependencies"]
    toolkit = next(
        p for p in tomllib.loads(POETRY_LOCK.read_text())["package"] if p["name"] == "cuda-toolkit"
    )
    assert {name: pin["version"] for name, pin in pins.items()} == {
        name: toolkit["dependencies"][name]["version"] for name in pins
    }
    text = (REPO / "{{cookiecutter.project_slug}}" / "pyproject.toml").read_text()
    template = tomllib.loads("\n".join(x for x in text.splitlines() if not x.startswith("{%")))
    assert (
        template["tool"]["poetry"]["group"]["cuda"] == pyproject["tool"]["poetry"]["group"]["cuda"]
    )
