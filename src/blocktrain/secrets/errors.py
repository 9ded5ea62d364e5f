"""The errors of the secrets file: each names the problem and the fix on one line."""

from blocktrain.errors import BlocktrainError


class SecretsError(BlocktrainError):
    """A secrets operation that cannot be done; nothing was written."""


class NoSecretsFileError(SecretsError):
    """The secrets file does not exist (yet)."""


class MissingKeyError(SecretsError):
    """Neither the OS keychain nor the key file holds the file's key."""


class WrongKeyError(SecretsError):
    """A key was found, but the file was encrypted with another one."""


class TamperedError(SecretsError):
    """The file fails its authentication check: changed, truncated or corrupted."""


class UnknownNameError(SecretsError):
    """No secret of that name is in the file."""
