"""Masking of secret values before any text leaves the process (messages, params, tags, logs).

A value is secret when its variable's name looks like a credential, or when the variable is
listed in ``BLOCKTRAIN_SECRET_NAMES`` (the secrets loader sets it to every name it exported).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import cast

from blocktrain.core import envvars

MASK = "***"
# Names that commonly carry credentials; over-masking a harmless value is the cheap failure.
_SECRET_NAME = re.compile(
    r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|WEBHOOK|AUTH|PRIVATE|COOKIE",
    re.IGNORECASE,
)
# Short values ("1", "true", "us-east-1") are not worth masking and would mangle ordinary text.
_MIN_SECRET_LENGTH = 6
# Linear time on any input: a scheme starts only where no scheme character precedes it, and
# the possessive quantifiers never give back what they took, so a long run of letters or of
# "a:b" pairs is scanned once instead of once per starting position.
_URL_USERINFO = re.compile(
    r"(?<![a-zA-Z0-9+.-])(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*+://)[^/@\s:]++:[^/@\s]++@"
)


def secret_names(env: Mapping[str, str]) -> set[str]:
    """Names in ``env`` whose values are treated as secrets."""
    listed = {n.strip() for n in env.get(envvars.SECRET_NAMES.name, "").split(",") if n.strip()}
    return {name for name in env if name in listed or _SECRET_NAME.search(name)}


@dataclass(frozen=True, slots=True)
class Redactor:
    """Replaces every known secret value, longest first, with ``***``."""

    secrets: tuple[str, ...] = ()

    @classmethod
    def from_environ(cls, env: Mapping[str, str], extra: Iterable[str] = ()) -> Redactor:
        values = {env[name] for name in secret_names(env)} | set(extra)
        kept = sorted((v for v in values if len(v) >= _MIN_SECRET_LENGTH), key=len, reverse=True)
        return cls(tuple(kept))

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return _URL_USERINFO.sub(rf"\g<scheme>{MASK}@", text)

    def value(self, obj: object) -> object:
        """Redact every string inside a JSON-like structure."""
        if isinstance(obj, str):
            return self(obj)
        if isinstance(obj, Mapping):
            mapping = cast("Mapping[object, object]", obj)
            return {self(str(k)): self.value(v) for k, v in mapping.items()}
        if isinstance(obj, list | tuple):
            return [self.value(v) for v in cast("list[object]", obj)]
        return obj
