"""Where keys live: the OS keychain through ``keyring``, or a key file outside the project.

Both hold the keys of one secrets file under its key id, newest first (two only while a
rotation is under way). ``keyring`` is imported when a keychain is asked for, not before.
"""

from __future__ import annotations

import contextlib
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from blocktrain.core.atomic import write_text_atomic
from blocktrain.secrets.errors import MissingKeyError, SecretsError
from blocktrain.secrets.vault import parse_keys

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend

SERVICE = "blocktrain-secrets"
"""The keychain service name; the key id is the account name."""


class KeyStore(Protocol):
    """A place that keeps the keys of secrets files."""

    def location(self, key_id: str) -> str:
        """Names the place of ``key_id``'s keys in messages."""
        ...

    def load(self, key_id: str) -> tuple[str, ...] | None:
        """The keys stored for ``key_id``, newest first; None when there are none."""
        ...

    def save(self, key_id: str, keys: Sequence[str]) -> None: ...

    def delete(self, key_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class KeyFile:
    """Key files ``<folder>/<key id>.key``, mode 0600 in a folder of mode 0700."""

    folder: Path

    def location(self, key_id: str) -> str:
        return f"key file {self.path(key_id)}"

    def path(self, key_id: str) -> Path:
        return self.folder / f"{key_id}.key"

    def load(self, key_id: str) -> tuple[str, ...] | None:
        path = self.path(key_id)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            return None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretsError(
                f"key file {path} is open to other users (mode {stat.S_IMODE(mode):o}); "
                f"run `chmod 600 {path}`"
            )
        try:
            text = path.read_text()
        except OSError as exc:
            raise SecretsError(
                f"cannot read key file {path} ({exc.strerror}); fix its owner"
            ) from None
        return parse_keys(text, f"key file {path}")

    def save(self, key_id: str, keys: Sequence[str]) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The temporary file of an atomic write is created with mode 0600, and keeps it.
        write_text_atomic(self.path(key_id), "".join(k + "\n" for k in keys))

    def delete(self, key_id: str) -> None:
        self.path(key_id).unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class Keychain:
    """The OS keychain (macOS Keychain, Secret Service, Windows Credential Locker)."""

    backend: KeyringBackend

    def location(self, key_id: str) -> str:
        return f"the OS keychain ({self.backend.__module__}), entry {SERVICE}/{key_id}"

    def load(self, key_id: str) -> tuple[str, ...] | None:
        text = self.backend.get_password(SERVICE, key_id)
        return None if text is None else parse_keys(text, f"keychain entry {SERVICE}/{key_id}")

    def save(self, key_id: str, keys: Sequence[str]) -> None:
        from keyring.errors import KeyringError

        text = " ".join(keys)
        try:
            self.backend.set_password(SERVICE, key_id, text)  # pyright: ignore[reportUnknownMemberType]
            kept = self.backend.get_password(SERVICE, key_id)
        except KeyringError as exc:
            raise SecretsError(
                f"{self.location(key_id)} refused the key ({said(exc)}); unlock it, "
                "or use --key-store file"
            ) from None
        # Some backends accept a password and keep nothing (keyring's null backend).
        if kept != text:
            raise SecretsError(
                f"{self.location(key_id)} did not keep the key; use --key-store file"
            )

    def delete(self, key_id: str) -> None:
        from keyring.errors import PasswordDeleteError

        with contextlib.suppress(PasswordDeleteError):
            self.backend.delete_password(SERVICE, key_id)


def default_key_folder(env: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/blocktrain/keys``, by default ``~/.config/blocktrain/keys``."""
    config = env.get("XDG_CONFIG_HOME", "").strip()
    base = Path(config) if config else Path(env.get("HOME") or Path.home()) / ".config"
    return base / "blocktrain" / "keys"


def keychain() -> tuple[Keychain | None, str]:
    """The keychain when ``keyring`` has a usable backend, else None and the reason."""
    try:
        import keyring

        backend: KeyringBackend = keyring.get_keyring()
        usable = float(type(backend).priority) > 0  # fail and null backends rank 0 and -1
    except Exception as exc:  # noqa: BLE001 - a broken keychain set-up must not hide the key file
        return None, f"keyring failed: {said(exc)}"
    if not usable:
        return None, f"keyring has no usable backend, only {type(backend).__module__}"
    return Keychain(backend), ""


@dataclass(frozen=True, slots=True)
class KeyStores:
    """The places to look for a key, in order: the keychain first, then the key file."""

    keychain: Keychain | None
    keychain_problem: str
    key_file: KeyFile

    @staticmethod
    def default(env: Mapping[str, str]) -> KeyStores:
        chain, problem = keychain()
        return KeyStores(chain, problem, KeyFile(default_key_folder(env)))

    def find(self, key_id: str, secrets_file: Path) -> tuple[tuple[str, ...], KeyStore]:
        """The keys of ``key_id`` and the store that holds them."""
        problem = self.keychain_problem or "no entry for this key id"
        if self.keychain is not None:
            try:
                keys = self.keychain.load(key_id)
            except SecretsError:
                raise
            except Exception as exc:  # noqa: BLE001 - locked or unreachable: try the key file
                keys, problem = None, said(exc)
            if keys is not None:
                return keys, self.keychain
        keys = self.key_file.load(key_id)
        if keys is not None:
            return keys, self.key_file
        raise MissingKeyError(
            f"no key for {secrets_file} (key id {key_id}): not in the OS keychain ({problem}) "
            f"and no key file {self.key_file.path(key_id)}; copy that file (mode 600) from a "
            f"machine that has the key, or run `keyring set {SERVICE} {key_id}` and paste it"
        )

    def for_new_key(self, choice: str) -> KeyStore:
        """Where ``init`` puts a new key: ``keychain``, ``file`` or ``auto`` (keychain if any)."""
        if choice == "file" or (choice == "auto" and self.keychain is None):
            return self.key_file
        if self.keychain is None:
            raise SecretsError(
                f"no OS keychain: {self.keychain_problem}; use --key-store file "
                f"(a key file in {self.key_file.folder})"
            )
        return self.keychain


def said(exc: BaseException) -> str:
    """An exception on one line: keychain errors can span several."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())
