"""Where a baked project gets blocktrain when the template's `blocktrain` variable is empty.

hooks/template_source.py is loaded from its file, as cookiecutter loads it from the template's
folder: hooks/ is not a package of the toolkit.
"""

import importlib.util
from pathlib import Path

import pytest
from cookiecutter.environment import StrictEnvironment

REPO = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location(
    "template_source", REPO / "hooks" / "template_source.py"
)
assert SPEC is not None
assert SPEC.loader is not None
template_source = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(template_source)

FOLDER = Path("/home/ada/blocktrain")


def source(template: str, checkout: str | None = None, given: str = "") -> str:
    return template_source.blocktrain_source(given, template, checkout, FOLDER)


@pytest.mark.parametrize(
    "given",
    ["/opt/blocktrain", "git+https://example.org/lab/blocktrain.git@v0.1.0", "0.1.0"],
)
@pytest.mark.parametrize("template", ["/home/ada/blocktrain", "gh:lab/blocktrain", "t.zip"])
def test_a_given_value_wins_over_any_template(given: str, template: str):
    assert source(template, checkout="v2", given=given) == given


@pytest.mark.parametrize("template", [".", "../blocktrain", "blocktrain", "/home/ada/blocktrain"])
def test_a_local_template_is_installed_from_its_absolute_folder(template: str):
    assert source(template) == "/home/ada/blocktrain"
    assert source(template, checkout="v1") == "/home/ada/blocktrain"  # cookiecutter ignores it


@pytest.mark.parametrize(
    ("template", "checkout", "expected"),
    [
        ("gh:lab/blocktrain", None, "git+https://github.com/lab/blocktrain.git"),
        ("gh:lab/blocktrain", "v0.1.0", "git+https://github.com/lab/blocktrain.git@v0.1.0"),
        ("gl:lab/blocktrain", "main", "git+https://gitlab.com/lab/blocktrain.git@main"),
        (
            "https://example.org/lab/blocktrain.git",
            None,
            "git+https://example.org/lab/blocktrain.git",
        ),
        (
            "https://example.org/lab/blocktrain.git",
            "1a2b3c4",
            "git+https://example.org/lab/blocktrain.git@1a2b3c4",
        ),
        (
            "git+https://example.org/lab/blocktrain.git",
            "v1",
            "git+https://example.org/lab/blocktrain.git@v1",
        ),
        ("git@github.com:lab/blocktrain.git", None, "git+ssh://git@github.com/lab/blocktrain.git"),
        ("ssh://git@host/lab/blocktrain.git", "v1", "git+ssh://git@host/lab/blocktrain.git@v1"),
        ("file:///srv/git/blocktrain.git", None, "git+file:///srv/git/blocktrain.git"),
    ],
)
def test_a_git_template_is_installed_from_the_same_repository_and_checkout(
    template: str, checkout: str | None, expected: str
):
    assert source(template, checkout) == expected


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("blocktrain-main.zip", "blocktrain cannot be installed from the zip blocktrain-main.zip"),
        ("https://example.org/blocktrain/archive/main.ZIP", "from the zip https://"),
        ("hg+https://example.org/lab/blocktrain", "from git, not Mercurial"),
    ],
)
def test_any_other_template_asks_for_the_value(template: str, problem: str):
    with pytest.raises(template_source.SourceError) as caught:
        source(template)
    message = str(caught.value)
    assert problem in message
    assert "\n" not in message
    assert message.endswith(
        "pass blocktrain=/path/to/blocktrain, blocktrain=git+https://... or blocktrain=0.1.0"
    )


def render(text: str, **values: object) -> str:
    """`text` rendered as cookiecutter renders the template's files and hooks."""
    environment = StrictEnvironment(keep_trailing_newline=True)
    environment.add_extension(template_source.TemplateSource)
    return environment.from_string(text).render(cookiecutter=values)


def test_the_filters_read_the_variables_cookiecutter_adds():
    local = {"blocktrain": "", "_template": "../main", "_checkout": None}
    assert render("{{ cookiecutter | blocktrain_source }}", **local) == str(REPO)
    remote = {"blocktrain": "", "_template": "gh:lab/blocktrain", "_checkout": "v1"}
    expected = "git+https://github.com/lab/blocktrain.git@v1"
    assert render("{{ cookiecutter | blocktrain_source }}", **remote) == expected
    given = {**remote, "blocktrain": "0.1.0"}
    assert render("{{ cookiecutter | blocktrain_choice | tojson }}", **given) == (
        '{"problem": "", "source": "0.1.0"}'
    )


def test_the_hooks_learn_why_a_zip_cannot_be_used():
    values = {"blocktrain": "", "_template": "t.zip", "_checkout": None}
    assert render("[{{ cookiecutter | blocktrain_source }}]", **values) == "[]"
    choice = render("{{ (cookiecutter | blocktrain_choice).problem }}", **values)
    assert choice.startswith("blocktrain cannot be installed from the zip t.zip; pass ")
