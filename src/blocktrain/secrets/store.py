"""The secrets file on disk: read without a lock, changed under a lock, written atomically.

Every change decrypts the whole file first, so a wrong key or a damaged file stops it before
anything is written, and the new content replaces the old by a rename: a failed or interrupted
operation leaves the previous file as it was. Changes take an exclusive ``flock`` on a lock
file beside the secrets file, so concurrent ``set`` commands each see the others' results.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from blocktrain.core.atomic import locked, write_text_atomic
from blocktrain.secrets.errors import (
    NoSecretsFileError,
    SecretsError,
    TamperedError,
    UnknownNameError,
    WrongKeyError,
)
from blocktrain.secrets.keys import KeyFile, KeyStore, KeyStores
from blocktrain.secrets.names import check_name
from blocktrain.secrets.vault import Sealed, generate_key, new_key_id, reseal, seal, unseal

FILE_NAME = "secrets.enc"
"""The secrets file's name in the project root."""


@dataclass(frozen=True, slots=True)
class _Opened:
    sealed: Sealed
    keys: tuple[str, ...]
    store: KeyStore
    values: dict[str, str]


@dataclass(frozen=True, slots=True)
class SecretsFile:
    """One secrets file and the places its key may be."""

    path: Path
    keys: KeyStores

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(f".{self.path.name}.lock")

    def read(self) -> dict[str, str]:
        """Every name and value."""
        try:
            return self._open().values
        except WrongKeyError:
            # A rotation may have replaced the file between our reading it and its key: the
            # second look sees both new.
            return self._open().values

    def get(self, name: str) -> str:
        values = self.read()
        if name not in values:
            raise self._unknown(name)
        return values[name]

    def set(self, name: str, value: str) -> None:
        check_name(name)
        self._change(lambda values: values.update({name: value}))

    def unset(self, name: str) -> None:
        def remove(values: dict[str, str]) -> None:
            if values.pop(name, None) is None:
                raise self._unknown(name)

        self._change(remove)

    def init(self, key_store: str, project: Path) -> str:
        """A new, empty file with a new key; returns where the key went."""
        with locked(self.lock_path):
            if self.path.exists():
                raise SecretsError(
                    f"{self.path} already exists; `blocktrain secrets rotate` gives it a new key"
                )
            store = self.keys.for_new_key(key_store)
            key_id = new_key_id(project.name)
            if isinstance(store, KeyFile) and _inside(store.path(key_id), project):
                raise SecretsError(
                    f"the key file {store.path(key_id)} would be inside the project {project}; "
                    "set XDG_CONFIG_HOME to a folder outside it"
                )
            key = generate_key()
            store.save(key_id, (key,))
            try:
                write_text_atomic(self.path, seal({}, key_id, key).render())
            except BaseException:
                store.delete(key_id)
                raise
            # Encrypted, it may be read like any file of the project; later writes keep the mode.
            self.path.chmod(0o644)
            return store.location(key_id)

    def rotate(self) -> tuple[str, int]:
        """Re-encrypt with a new key, then forget the old one; returns where it is, and the count.

        Both keys are stored while the file is rewritten, so an interruption at any point leaves
        a file that the stored keys open.
        """
        with locked(self.lock_path):
            opened = self._open()
            new = generate_key()
            opened.store.save(opened.sealed.key_id, (new, *opened.keys))
            self._write(reseal(opened.sealed, new, opened.keys))
            opened.store.save(opened.sealed.key_id, (new,))
            return opened.store.location(opened.sealed.key_id), len(opened.values)

    def _change(self, edit: Callable[[dict[str, str]], None]) -> None:
        with locked(self.lock_path):
            opened = self._open()
            values = dict(opened.values)
            edit(values)
            self._write(seal(values, opened.sealed.key_id, opened.keys[0]))

    def _open(self) -> _Opened:
        sealed = self._sealed()
        keys, store = self.keys.find(sealed.key_id, self.path)
        values = unseal(sealed, keys, str(self.path), store.location(sealed.key_id))
        return _Opened(sealed, keys, store, values)

    def _sealed(self) -> Sealed:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise NoSecretsFileError(
                f"no secrets file {self.path}; create it with `blocktrain secrets init`"
            ) from None
        except OSError as exc:
            raise SecretsError(f"cannot read {self.path} ({exc.strerror}); fix its owner") from None
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise TamperedError(
                f"{self.path} is damaged (not text); restore it from version control"
            ) from None
        return Sealed.parse(text, str(self.path))

    def _write(self, sealed: Sealed) -> None:
        mode = stat.S_IMODE(self.path.stat().st_mode)
        write_text_atomic(self.path, sealed.render())
        self.path.chmod(mode)

    def _unknown(self, name: str) -> UnknownNameError:
        return UnknownNameError(
            f"no secret named {name!r} in {self.path}; `blocktrain secrets list` shows the names"
        )


def _inside(path: Path, folder: Path) -> bool:
    return folder.resolve() in path.resolve().parents
