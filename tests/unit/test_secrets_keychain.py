"""The OS keychain path of ``blocktrain secrets``, through keyring's public backend interface.

No machine that runs these tests has a desktop keychain, so the tests register their own
backends with ``keyring.set_keyring``. ``DictKeyring`` is a complete, real implementation of
``keyring.backend.KeyringBackend`` that keeps its entries in a dict; keyring and blocktrain call
it exactly as they call the macOS Keychain or Secret Service backends. The other backends are
keyring's own ``null`` backend and two that misbehave the way broken keychains do.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from cryptography.fernet import Fernet, InvalidToken
from keyring.backend import KeyringBackend
from keyring.backends import null
from keyring.errors import KeyringLocked, PasswordDeleteError

from blocktrain.cli import secrets as cli
from blocktrain.secrets.keys import SERVICE
from blocktrain.secrets.vault import Sealed, generate_key

# keyring picks its default backend once, among every backend class defined when it first
# looks; it looks now, so that the classes below are never picked by other tests.
keyring.get_keyring()


class DictKeyring(KeyringBackend):
    priority = 1  # pyright: ignore[reportAssignmentType] - keyring declares a classproperty

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.entries.pop((service, username), None) is None:
            raise PasswordDeleteError(username)


class ForgetfulKeyring(DictKeyring):
    """Accepts every password and keeps none."""

    def set_password(self, service: str, username: str, password: str) -> None:
        pass


class LockedKeyring(DictKeyring):
    """A keychain the user has not unlocked."""

    def get_password(self, service: str, username: str) -> str | None:
        raise KeyringLocked("the login keychain\nis locked")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise KeyringLocked("the login keychain\nis locked")


@pytest.fixture
def use_backend() -> Iterator[object]:
    previous = keyring.get_keyring()

    def use(backend: KeyringBackend) -> None:
        keyring.set_keyring(backend)

    yield use
    keyring.set_keyring(previous)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'proj'\n")
    monkeypatch.chdir(root)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return root


def run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: str = ""
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def key_id(project: Path) -> str:
    return Sealed.parse((project / "secrets.enc").read_text(), "f").key_id


def key_file(project: Path) -> Path:
    return project.parent / "config" / "blocktrain" / "keys" / f"{key_id(project)}.key"


def test_key_goes_to_the_keychain_and_rotation_replaces_it(
    project: Path, use_backend, capsys, monkeypatch
) -> None:
    chain = DictKeyring()
    use_backend(chain)
    code, out, _ = run(capsys, monkeypatch, "init")
    assert code == 0
    assert f"the OS keychain ({__name__}), entry {SERVICE}/{key_id(project)}" in out
    assert not key_file(project).parent.exists()
    [(service, account)] = chain.entries
    assert (service, account) == (SERVICE, key_id(project))
    assert run(capsys, monkeypatch, "set", "S3_SECRET_KEY", stdin="abc-123456")[0] == 0
    assert run(capsys, monkeypatch, "get", "S3_SECRET_KEY")[1] == "abc-123456\n"
    old_key = chain.entries[(SERVICE, account)]
    assert run(capsys, monkeypatch, "rotate")[0] == 0
    new_key = chain.entries[(SERVICE, account)]
    assert new_key != old_key
    assert " " not in new_key  # only the new key is left
    token = Sealed.parse((project / "secrets.enc").read_text(), "f").token
    with pytest.raises(InvalidToken):
        Fernet(old_key).decrypt(token)
    assert run(capsys, monkeypatch, "get", "S3_SECRET_KEY")[1] == "abc-123456\n"


def test_keychain_comes_before_the_key_file(project: Path, use_backend, capsys, monkeypatch):
    use_backend(DictKeyring())
    run(capsys, monkeypatch, "init")
    run(capsys, monkeypatch, "set", "A_TOKEN", stdin="value-123456")
    path = key_file(project)
    path.parent.mkdir(parents=True, mode=0o700)
    path.write_text(generate_key() + "\n")
    path.chmod(0o600)
    assert run(capsys, monkeypatch, "get", "A_TOKEN") == (0, "value-123456\n", "")


def test_key_file_when_the_keychain_has_no_entry(project: Path, use_backend, capsys, monkeypatch):
    chain = DictKeyring()
    use_backend(chain)
    code, out, _ = run(capsys, monkeypatch, "init", "--key-store", "file")
    assert code == 0
    assert f"key file {key_file(project)}" in out
    assert chain.entries == {}
    run(capsys, monkeypatch, "set", "A_TOKEN", stdin="value-123456")
    assert run(capsys, monkeypatch, "get", "A_TOKEN") == (0, "value-123456\n", "")


def test_a_locked_keychain_falls_back_to_the_key_file(
    project: Path, use_backend, capsys, monkeypatch
):
    use_backend(DictKeyring())
    run(capsys, monkeypatch, "init", "--key-store", "file")
    run(capsys, monkeypatch, "set", "A_TOKEN", stdin="value-123456")
    use_backend(LockedKeyring())
    assert run(capsys, monkeypatch, "get", "A_TOKEN") == (0, "value-123456\n", "")
    key_file(project).unlink()
    code, _, err = run(capsys, monkeypatch, "get", "A_TOKEN")
    assert code == 2
    assert "not in the OS keychain (KeyringLocked: the login keychain is locked)" in err
    assert err.count("\n") == 1


def test_a_locked_keychain_refuses_a_new_key(project: Path, use_backend, capsys, monkeypatch):
    use_backend(LockedKeyring())
    code, _, err = run(capsys, monkeypatch, "init")
    assert code == 2
    assert "refused the key (KeyringLocked: the login keychain is locked); unlock it" in err
    assert err.count("\n") == 1
    assert not (project / "secrets.enc").exists()


def test_null_backend_means_no_keychain(project: Path, use_backend, capsys, monkeypatch):
    use_backend(null.Keyring())
    code, _, err = run(capsys, monkeypatch, "init", "--key-store", "keychain")
    assert code == 2
    assert "no OS keychain: keyring has no usable backend" in err
    assert "use --key-store file" in err
    assert not (project / "secrets.enc").exists()
    code, out, _ = run(capsys, monkeypatch, "init")
    assert code == 0
    assert f"key file {key_file(project)}" in out


def test_a_keychain_that_keeps_nothing_creates_nothing(
    project: Path, use_backend, capsys, monkeypatch
):
    use_backend(ForgetfulKeyring())
    code, _, err = run(capsys, monkeypatch, "init")
    assert code == 2
    assert "did not keep the key; use --key-store file" in err
    assert not (project / "secrets.enc").exists()
