"""``blocktrain secrets`` on real files, with the key in a key file (no keychain here).

keyring's own ``fail`` backend is installed for these tests, as on a headless node, so that a
developer's real keychain is never touched.
"""

from __future__ import annotations

import argparse
import io
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import keyring
import pytest
from cryptography.fernet import Fernet, InvalidToken
from keyring.backends import fail

from blocktrain.cli import secrets as cli
from blocktrain.secrets.vault import Sealed, generate_key


@dataclass
class Project:
    root: Path
    keys: Path
    capsys: pytest.CaptureFixture[str]
    monkeypatch: pytest.MonkeyPatch

    @property
    def file(self) -> Path:
        return self.root / "secrets.enc"

    def key_file(self) -> Path:
        [path] = self.keys.glob("*.key")
        return path

    def run(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        self.monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = cli.main(list(argv))
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err

    def ok(self, *argv: str, stdin: str = "") -> str:
        code, out, err = self.run(*argv, stdin=stdin)
        assert (code, err) == (0, ""), err
        return out

    def fails(self, *argv: str, stdin: str = "") -> str:
        """The one error line of a command that must exit 2 and leave the file unchanged."""
        before = self.file.read_bytes() if self.file.exists() else None
        code, out, err = self.run(*argv, stdin=stdin)
        assert code == 2
        assert out == ""
        assert err.startswith("blocktrain secrets: error: ")
        assert err.count("\n") == 1
        assert (self.file.read_bytes() if self.file.exists() else None) == before
        return err


@pytest.fixture
def no_keychain() -> Iterator[None]:
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    yield
    keyring.set_keyring(previous)


@pytest.fixture
def project(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_keychain: None,
) -> Project:
    root = tmp_path / "proj"
    (root / "sub").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'proj'\n")
    monkeypatch.chdir(root / "sub")  # the project root is found from a subfolder
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("BLOCKTRAIN_SECRET_NAMES", raising=False)
    return Project(root, tmp_path / "config" / "blocktrain" / "keys", capsys, monkeypatch)


def test_round_trip(project: Project) -> None:
    out = project.ok("init")
    assert "created " in out
    assert str(project.key_file()) in out
    assert project.ok("set", "S3_SECRET_KEY", stdin="wJalrXUtnFEMI/K7MDENG\n") == (
        f"set S3_SECRET_KEY in {project.file}\n"
    )
    project.ok("set", "DB_PASSWORD", stdin="it's $x")
    project.ok("set", "DB_PASSWORD", stdin="replaced value")
    assert project.ok("get", "S3_SECRET_KEY") == "wJalrXUtnFEMI/K7MDENG\n"
    assert project.ok("get", "DB_PASSWORD") == "replaced value\n"
    assert project.ok("list") == "DB_PASSWORD\nS3_SECRET_KEY\n"
    assert project.ok("env") == (
        "export DB_PASSWORD='replaced value'\n"
        "export S3_SECRET_KEY=wJalrXUtnFEMI/K7MDENG\n"
        "export BLOCKTRAIN_SECRET_NAMES=DB_PASSWORD,S3_SECRET_KEY\n"
    )
    project.ok("unset", "DB_PASSWORD")
    assert project.ok("list") == "S3_SECRET_KEY\n"
    text = project.file.read_text()
    assert "wJalrXUtnFEMI" not in text
    assert "S3_SECRET_KEY" not in text


def test_list_prints_no_value(project: Project) -> None:
    project.ok("init")
    project.ok("set", "API_TOKEN", stdin="tok-abcdef-123")
    out = project.ok("list")
    assert out == "API_TOKEN\n"
    assert "tok-abcdef" not in out


def test_env_keeps_names_already_listed(project: Project) -> None:
    project.ok("init")
    project.ok("set", "CANARY", stdin="c-123456")
    project.monkeypatch.setenv("BLOCKTRAIN_SECRET_NAMES", "OTHER")
    assert project.ok("env").endswith("export BLOCKTRAIN_SECRET_NAMES=CANARY,OTHER\n")


@pytest.mark.parametrize(
    "argv",
    [["set", "API_TOKEN", "hunter22"], ["set", "API_TOKEN=hunter22"], ["set", "A", "b", "c"]],
)
def test_set_refuses_a_value_in_argv(project: Project, argv: list[str]) -> None:
    project.ok("init")
    err = project.fails(*argv, stdin="from-stdin")
    assert "set takes no value on the command line" in err
    assert "hunter22" not in err
    assert project.ok("list") == ""


def test_file_given_with_file_option_before_or_after_the_command(
    project: Project, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "other" / "creds.enc"
    project.ok("--file", str(elsewhere), "init")
    project.ok("set", "X_TOKEN", "--file", str(elsewhere), stdin="value-1")
    assert project.ok("--file", str(elsewhere), "get", "X_TOKEN") == "value-1\n"
    assert not project.file.exists()


def test_key_file_is_private_and_outside_the_project(project: Project) -> None:
    project.ok("init")
    key_file = project.key_file()
    assert project.root not in key_file.parents
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert key_file.read_text().count("\n") == 1
    project.ok("rotate")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_a_key_file_others_can_read_is_refused(project: Project) -> None:
    project.ok("init")
    project.key_file().chmod(0o644)
    err = project.fails("list")
    assert f"run `chmod 600 {project.key_file()}`" in err


def test_key_file_inside_the_project_is_refused(project: Project) -> None:
    project.monkeypatch.setenv("XDG_CONFIG_HOME", str(project.root / ".config"))
    assert "would be inside the project" in project.fails("init")
    assert not project.file.exists()
    assert not (project.root / ".config" / "blocktrain" / "keys").exists()


def test_init_twice_keeps_the_first(project: Project) -> None:
    project.ok("init")
    project.ok("set", "KEEP_ME", stdin="v-123456")
    assert "already exists" in project.fails("init")
    assert project.ok("get", "KEEP_ME") == "v-123456\n"


def test_missing_file_says_init(project: Project) -> None:
    err = project.fails("list")
    assert f"no secrets file {project.file}; create it with `blocktrain secrets init`" in err
    err = project.fails("set", "A_TOKEN", stdin="v")
    assert "blocktrain secrets init" in err


def test_unknown_name(project: Project) -> None:
    project.ok("init")
    project.ok("set", "KNOWN", stdin="v-123456")
    for command in ("get", "unset"):
        err = project.fails(command, "UNKNOWN")
        assert "no secret named 'UNKNOWN'" in err
        assert "blocktrain secrets list" in err


def test_invalid_name(project: Project) -> None:
    project.ok("init")
    assert "invalid secret name '9LIVES'" in project.fails("set", "9LIVES", stdin="v")


def test_empty_value(project: Project) -> None:
    project.ok("init")
    assert "empty value for A_TOKEN" in project.fails("set", "A_TOKEN", stdin="\n")


def test_tampered_file_is_one_error_and_never_rewritten(project: Project) -> None:
    project.ok("init")
    project.ok("set", "A_TOKEN", stdin="value-123456")
    text = project.file.read_text()
    token = text.rsplit("token: ", 1)[1].strip()
    flipped = token[:40] + ("B" if token[40] != "B" else "C") + token[41:]
    project.file.write_text(text.replace(token, flipped))
    for argv in (["list"], ["get", "A_TOKEN"], ["env"], ["unset", "A_TOKEN"], ["rotate"]):
        assert "fails its authentication check" in project.fails(*argv)
    assert "fails its authentication check" in project.fails("set", "B", stdin="v")


def test_truncated_file(project: Project) -> None:
    project.ok("init")
    project.ok("set", "A_TOKEN", stdin="value-123456")
    project.file.write_bytes(project.file.read_bytes()[:-40])
    assert "fails its authentication check" in project.fails("get", "A_TOKEN")


def test_wrong_key(project: Project) -> None:
    project.ok("init")
    project.ok("set", "A_TOKEN", stdin="value-123456")
    key_file = project.key_file()
    key_file.write_text(generate_key() + "\n")
    for argv in (["get", "A_TOKEN"], ["env"], ["rotate"]):
        err = project.fails(*argv)
        assert f"the key in key file {key_file} does not open {project.file}" in err
    assert "does not open" in project.fails("set", "B", stdin="v")


def test_missing_key(project: Project) -> None:
    project.ok("init")
    key_file = project.key_file()
    key_file.unlink()
    err = project.fails("env")
    assert f"no key for {project.file}" in err
    assert f"no key file {key_file}" in err
    assert "not in the OS keychain (keyring has no usable backend" in err


def test_rotation_keeps_every_value_and_the_old_key_no_longer_decrypts(project: Project) -> None:
    project.ok("init")
    values = {f"NAME_{i}": f"value-{i}-{'x' * i}" for i in range(5)}
    for name, value in values.items():
        project.ok("set", name, stdin=value)
    old_key = project.key_file().read_text().strip()
    old_token = Sealed.parse(project.file.read_text(), "f").token
    assert "rotated the key" in project.ok("rotate")
    new_key = project.key_file().read_text().strip()
    assert new_key != old_key
    assert project.key_file().read_text() == new_key + "\n"  # the old key is gone
    for name, value in values.items():
        assert project.ok("get", name) == value + "\n"
    new_token = Sealed.parse(project.file.read_text(), "f").token
    with pytest.raises(InvalidToken):
        Fernet(old_key).decrypt(new_token)
    assert Fernet(old_key).decrypt(old_token)  # the old key did open the old file
    project.key_file().write_text(old_key + "\n")
    assert "does not open" in project.fails("list")


def test_file_mode_is_kept_across_changes(project: Project) -> None:
    project.ok("init")
    assert stat.S_IMODE(project.file.stat().st_mode) == 0o644
    project.file.chmod(0o640)
    project.ok("set", "A_TOKEN", stdin="v-123456")
    assert stat.S_IMODE(project.file.stat().st_mode) == 0o640


def test_help_lists_every_command(project: Project) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    out = project.capsys.readouterr().out
    for command in ("init", "set", "unset", "list", "get", "env", "rotate"):
        assert f"    {command} " in out


def test_blocktrain_command_dispatches_to_secrets(project: Project) -> None:
    from blocktrain.cli import main

    project.ok("init")
    project.ok("set", "VIA_MAIN", stdin="v-123456")
    assert main.main(["secrets", "get", "VIA_MAIN"]) == 0
    assert project.capsys.readouterr().out == "v-123456\n"


def test_command_line_surface() -> None:
    """A new, renamed or dropped command or option must be a deliberate change of this test."""
    parser = cli.build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    surface = {
        name: sorted(s for action in sub._actions for s in action.option_strings)
        for name, sub in commands.choices.items()
    }
    common = ["--file", "--help", "-h"]
    assert surface == {
        "init": sorted([*common, "--key-store"]),
        "set": common,
        "unset": common,
        "list": common,
        "get": common,
        "env": common,
        "rotate": common,
    }
