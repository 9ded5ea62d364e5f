"""Lightning is an optional extra: without it, one line that says how to install it.

The package imports this module before its others (which import lightning), so that a missing
Lightning is this error, not a bare ModuleNotFoundError from deep inside.
"""

from blocktrain.errors import BlocktrainError


class LightningMissingError(BlocktrainError, ImportError):
    """blocktrain.lightning imported where Lightning is not installed. An ImportError too: the
    launcher reports an entry module that cannot be imported on one line, exit status 2."""


try:
    import lightning  # noqa: F401  # pyright: ignore[reportUnusedImport]
except ImportError as exc:
    raise LightningMissingError(
        "blocktrain.lightning needs Lightning, which is not installed: pip install "
        f"'blocktrain[lightning]' (or add lightning to the project's dependencies) ({exc})"
    ) from None
