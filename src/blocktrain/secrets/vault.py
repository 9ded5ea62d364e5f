"""The secrets file format and its encryption: pure functions of text and keys.

A secrets file is text, safe to commit::

    # blocktrain secrets: encrypted; change it with `blocktrain secrets`, never by hand.
    format: blocktrain-secrets 1
    key-id: myproject-3f2a9c1d5e7b
    key-check: 8c1f0e6a2b4d9f03
    token: gAAAAAB...

``key-id`` says which key to look up (keychain entry, key file name). ``key-check`` is a
keyed hash of the key that encrypted the token, so that a wrong key and a changed file give
different errors. ``token`` is one Fernet token (AES-128-CBC and HMAC-SHA256) of a JSON object
``{"NAME": "value", ...}``: names are encrypted too, and any change to the token fails its
authentication check as a whole.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from blocktrain.secrets.errors import SecretsError, TamperedError, WrongKeyError
from blocktrain.secrets.names import check_name

FORMAT = "blocktrain-secrets 1"
HEADER = "# blocktrain secrets: encrypted; change it with `blocktrain secrets`, never by hand."
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")
_CHECK_LABEL = b"blocktrain-secrets key check"
_FIELDS = ("format", "key-id", "key-check", "token")


@dataclass(frozen=True, slots=True)
class Sealed:
    """A parsed secrets file: the clear header and the encrypted token."""

    key_id: str
    key_check: str
    token: str

    def render(self) -> str:
        return (
            f"{HEADER}\nformat: {FORMAT}\nkey-id: {self.key_id}\n"
            f"key-check: {self.key_check}\ntoken: {self.token}\n"
        )

    @staticmethod
    def parse(text: str, where: str) -> Sealed:
        """The fields of a secrets file; ``where`` names it in errors."""
        fields: dict[str, str] = {}
        for line in text.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            name, colon, value = line.partition(":")
            if not colon or name not in _FIELDS or name in fields:
                raise TamperedError(
                    f"{where} is damaged (unexpected line {line[:40]!r}); "
                    "restore it from version control"
                )
            fields[name] = value.strip()
        if fields.get("format") != FORMAT:
            raise TamperedError(
                f"{where} is not a {FORMAT} file; restore it from version control, "
                "or create a new one elsewhere with `blocktrain secrets init --file`"
            )
        missing = [name for name in _FIELDS if not fields.get(name)]
        if missing:
            raise TamperedError(
                f"{where} is damaged (no {missing[0]} line); restore it from version control"
            )
        return Sealed(
            key_id=check_key_id(fields["key-id"], where),
            key_check=fields["key-check"],
            token=fields["token"],
        )


def check_key_id(key_id: str, where: str) -> str:
    """A key id is a file name: no path separators, no leading dot."""
    if not _KEY_ID.match(key_id):
        raise TamperedError(
            f"{where} has an invalid key-id {key_id[:40]!r}; restore it from version control"
        )
    return key_id


def new_key_id(project_name: str) -> str:
    """The project's folder name (made file-name safe) and a random suffix."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", project_name).strip(".-_")[:40] or "project"
    return f"{stem}-{secrets.token_hex(6)}"


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


def parse_keys(text: str, where: str) -> tuple[str, ...]:
    """Keys stored one per line (or space separated), newest first."""
    keys = tuple(text.split())
    if not keys:
        raise SecretsError(f"{where} holds no key; restore it from a machine that has the key")
    for key in keys:
        try:
            Fernet(key)
        except ValueError:
            raise SecretsError(
                f"{where} does not hold a blocktrain secrets key (expected 44 base64 "
                "characters per line); restore it from a machine that has the key"
            ) from None
    return keys


def key_check(key: str) -> str:
    """A keyed hash of the key: recognises it without revealing anything about it."""
    raw = base64.urlsafe_b64decode(key)
    return hmac.new(raw, _CHECK_LABEL, hashlib.sha256).hexdigest()[:16]


def seal(values: Mapping[str, str], key_id: str, key: str) -> Sealed:
    """Encrypt every name and value with ``key``."""
    plain = json.dumps(dict(sorted(values.items())), separators=(",", ":")).encode()
    token = Fernet(key).encrypt(plain).decode("ascii")
    return Sealed(key_id=key_id, key_check=key_check(key), token=token)


def unseal(sealed: Sealed, keys: Sequence[str], where: str, key_source: str) -> dict[str, str]:
    """Decrypt with whichever of ``keys`` encrypted the file.

    ``key_source`` says where the keys came from, for the wrong-key message.
    """
    matching = [key for key in keys if hmac.compare_digest(key_check(key), sealed.key_check)]
    if not matching:
        raise WrongKeyError(
            f"the key in {key_source} does not open {where} (it was encrypted with another "
            f"key); put the key of key id {sealed.key_id} there, from a machine that opens it"
        )
    try:
        plain = Fernet(matching[0]).decrypt(sealed.token)
    except InvalidToken:
        raise TamperedError(
            f"{where} fails its authentication check: it was changed, truncated or corrupted "
            "outside blocktrain; restore it from version control"
        ) from None
    return _values(plain, where)


def reseal(sealed: Sealed, new_key: str, old_keys: Sequence[str]) -> Sealed:
    """The same content encrypted with ``new_key`` (the old key no longer opens it)."""
    fernets = MultiFernet([Fernet(new_key), *(Fernet(k) for k in old_keys)])
    token = fernets.rotate(sealed.token).decode("ascii")
    return Sealed(key_id=sealed.key_id, key_check=key_check(new_key), token=token)


def _values(plain: bytes, where: str) -> dict[str, str]:
    try:
        raw: object = json.loads(plain)
    except ValueError:
        raw = None
    if not isinstance(raw, dict):
        raise TamperedError(f"{where} decrypts to no mapping of names to values; restore it")
    values: dict[str, str] = {}
    for name, value in cast("dict[object, object]", raw).items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TamperedError(f"{where} decrypts to a non-text name or value; restore it")
        values[check_name(name)] = value
    return values
