"""The error family for user mistakes: each message names the problem and the fix."""


class BlocktrainError(Exception):
    """A mistake the user can fix; command-line front ends print it on one line and exit 2."""


class ArgsError(BlocktrainError):
    """Arguments (YAML files or flags) that do not fit an entry function's signature."""


class TrackingError(BlocktrainError):
    """A tracking request that cannot be honoured, such as changing an immutable param."""


class RequeueRequested(BaseException):
    """Raised after a checkpoint when the job should stop now and continue in a new attempt.

    It derives from BaseException so that broad ``except Exception`` blocks in user code do not
    swallow it; the annotators record the run as paused rather than failed.
    """


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM (scancel, node shutdown)."""


class StopRequested(BaseException):
    """``slurm-stop``: checkpointed, ending without a requeue; the run can be relaunched."""
