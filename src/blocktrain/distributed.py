"""torch.distributed for a job's tasks: where rank 0 listens, the process group, collectives.

Who this process is (rank, local rank, world size) is read by
:func:`blocktrain.core.jobenv.ranks`; this module adds where rank 0 listens. :func:`rendezvous`
is a pure function of an environment mapping, :func:`process_group` applies it for a block of
code, and :func:`rank_and_world` asks the process group once there is one.

The collectives: :func:`all_agree` (True on every rank when any rank says so), behind
:func:`blocktrain.restart.should_stop`; :class:`Reduction`, an all-reduce started now and read
later, behind the training metrics and the trainer's step boundaries (which reach the same
agreement a step later without making any rank wait, see :mod:`blocktrain.train.exchange`);
:func:`barrier`.

Must not: import torch at module level (the functions that need it import it when called), or
read rank variables other than through :mod:`blocktrain.core.jobenv`.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import os
import re
import socket
import sys
import threading
from collections.abc import Callable, Generator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from blocktrain.core import envvars
from blocktrain.core.jobenv import env_int, ranks

if TYPE_CHECKING:
    import torch

# All tasks of a Slurm job derive the same port from the job id, inside [BASE, BASE + SPAN).
_PORT_BASE = 15000
_PORT_SPAN = 20000
_TORCH_DEFAULT_PORT = 29500
_LOOPBACK = "127.0.0.1"
_ENV_NAMES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")
_BRACKETS = re.compile(r"\[([^\[\]]*)\]")
_RANGE = re.compile(r"(\d+)(?:-(\d+))?")
_MEETING_POLL_S = 0.2


@dataclass(frozen=True, kw_only=True, slots=True)
class Rendezvous:
    """Where this process sits in the job and where rank 0 listens."""

    rank: int
    local_rank: int
    world_size: int
    master_addr: str
    master_port: int
    node_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def env(self) -> dict[str, str]:
        """The torch-style variables (``env://`` initialisation reads them; ``GROUP_RANK``, the
        node rank, as torchrun sets it)."""
        values = (
            self.rank, self.local_rank, self.world_size, self.master_addr, self.master_port,
            self.node_rank,
        )  # fmt: skip
        return {name: str(value) for name, value in zip(_ENV_NAMES, values, strict=True)}


def _split_top_level(hostlist: str) -> list[str]:
    items: list[str] = []
    depth = start = 0
    for i, char in enumerate(hostlist):
        if char in "[]":
            depth += 1 if char == "[" else -1
        if depth not in (0, 1):
            raise ValueError(f"unbalanced brackets in Slurm hostlist {hostlist!r}")
        if char == "," and depth == 0:
            items.append(hostlist[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"unbalanced brackets in Slurm hostlist {hostlist!r}")
    items.append(hostlist[start:])
    return [item.strip() for item in items if item.strip()]


def _expand_ranges(ranges: str, hostlist: str) -> list[str]:
    """``01-03,7`` -> ``01 02 03 7``: each range keeps the width of its lower bound."""
    numbers: list[str] = []
    for part in ranges.split(","):
        match = _RANGE.fullmatch(part.strip())
        if match is None:
            raise ValueError(f"bad range {part!r} in Slurm hostlist {hostlist!r}")
        low, high = match.group(1), match.group(2) or match.group(1)
        if int(high) < int(low):
            raise ValueError(f"descending range {part!r} in Slurm hostlist {hostlist!r}")
        numbers.extend(f"{n:0{len(low)}d}" for n in range(int(low), int(high) + 1))
    return numbers


def expand_hostlist(hostlist: str) -> list[str]:
    """Expand Slurm's compact host list (``node[01-03,07],gpu5``) as ``scontrol show hostnames``.

    Zero padding is kept, and several bracket groups in one name give their product
    (``r[1-2]-n[1-2]`` -> ``r1-n1 r1-n2 r2-n1 r2-n2``). Raises ``ValueError`` on malformed text.
    """
    hosts: list[str] = []
    for item in _split_top_level(hostlist):
        parts = _BRACKETS.split(item)  # literal, ranges, literal, ranges, ..., literal
        if any("[" in text or "]" in text for text in parts[::2]):
            raise ValueError(f"unbalanced brackets in Slurm hostlist {hostlist!r}")
        choices = [
            [text] if i % 2 == 0 else _expand_ranges(text, hostlist) for i, text in enumerate(parts)
        ]
        hosts.extend("".join(combination) for combination in itertools.product(*choices))
    return hosts


def free_port() -> int:
    """A TCP port on the loopback address that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _slurm_nodelist(env: Mapping[str, str]) -> str | None:
    # A step may run on a subset of the job's nodes: its own list comes first.
    for name in ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"):
        if env.get(name, "").strip():
            return env[name]
    return None


def _master_addr(env: Mapping[str, str]) -> str:
    if env.get("MASTER_ADDR", "").strip():
        return env["MASTER_ADDR"].strip()
    nodelist = _slurm_nodelist(env)
    if nodelist is None:
        return _LOOPBACK
    hosts = expand_hostlist(nodelist)
    if not hosts:
        raise ValueError(f"empty Slurm hostlist {nodelist!r}")
    return hosts[0]


def _master_port(env: Mapping[str, str], world_size: int) -> int:
    for name in ("MASTER_PORT", envvars.MASTER_PORT.name):
        if env.get(name, "").strip():
            return env_int(env, name, 0)
    job_id = env_int(env, "SLURM_JOB_ID", env_int(env, "SLURM_JOBID", -1))
    if job_id >= 0:
        return _PORT_BASE + job_id % _PORT_SPAN
    # Several processes without a job id to agree on: torch's own default.
    return _TORCH_DEFAULT_PORT if world_size > 1 else free_port()


def rendezvous(env: Mapping[str, str]) -> Rendezvous:
    """Rank and world size (:func:`blocktrain.core.jobenv.ranks`) and rank 0's address.

    ``MASTER_ADDR`` and ``MASTER_PORT`` (as torchrun sets them) win. Under ``srun`` the address
    is the first host of the step's (else the job's) node list, compressed or not
    (``node[1-2]``): task 0 runs there, whatever the distribution, and every node resolves it by
    name. The port is ``15000 + job id % 20000``, so that every task agrees without talking;
    ``BLOCKTRAIN_MASTER_PORT`` overrides it. Without either: 127.0.0.1, and a free port for a
    single process (torch's default, 29500, for several).
    """
    where = ranks(env)
    return Rendezvous(
        rank=where.rank,
        local_rank=where.local_rank,
        world_size=where.world_size,
        master_addr=_master_addr(env),
        master_port=_master_port(env, where.world_size),
        node_rank=where.node_rank,
    )


@contextmanager
def _environ(values: Mapping[str, str]) -> Generator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _select_device(local_rank: int) -> torch.device | None:
    """Bind this process to its GPU; tasks that see one GPU each (``--gpus-per-task``) use 0."""
    import torch

    if not torch.cuda.is_available():
        return None
    device = torch.device("cuda", local_rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    return device


@contextmanager
def process_group(
    backend: str | None = None,
    timeout_s: float = 1800,
    *,
    while_meeting: Callable[[], object] | None = None,
) -> Generator[Rendezvous]:
    """Set up torch.distributed for the block from ``os.environ``; tear it down afterwards.

    Exports the torch-style variables for the block, binds the process to GPU ``local_rank``
    when CUDA is available, and, when there is more than one process, initialises the default
    process group (NCCL with CUDA, Gloo without, unless ``backend`` says otherwise). A group
    that already exists is used as it is and left alone; one made here is destroyed on exit,
    on an exception too.

    With ``while_meeting``, the main thread waits for the ranks to meet in Python, not inside
    torch (see :func:`_meet`), and calls it every 0.2 s; what it or a signal handler raises
    ends the wait.
    """
    import torch.distributed as dist

    place = rendezvous(os.environ)
    with _environ(place.env()):
        device = _select_device(place.local_rank)
        owned = place.is_distributed and not dist.is_initialized()
        if owned:
            chosen = backend or ("nccl" if device is not None else "gloo")

            def init() -> None:
                if device is not None:
                    import torch

                    torch.cuda.set_device(device)  # the current device is per thread
                dist.init_process_group(
                    backend=chosen,
                    init_method="env://",
                    rank=place.rank,
                    world_size=place.world_size,
                    timeout=timedelta(seconds=timeout_s),
                    device_id=device if chosen == "nccl" else None,
                )

            _meet(init, while_meeting)
        try:
            yield place
        finally:
            if owned and dist.is_initialized() and not _left_group:
                dist.destroy_process_group()
            _forget_leaving()


def _meet(init: Callable[[], None], poll: Callable[[], object] | None) -> None:
    """Run ``init``, the rendezvous, in a thread of its own while this thread waits and polls.

    torch waits for the other ranks in C++, where no Python signal handler runs, for as long as
    the process group's timeout (half an hour): a rank waiting there for one that will never come
    (it was killed, or left on a signal) would not even hear the SIGTERM that ends it. Waiting
    here, the handlers run, and ``poll`` may raise to give up; the thread, a daemon, is then left
    blocked until the process exits, which it soon does.
    """
    if poll is None or threading.current_thread() is not threading.main_thread():
        init()
        return
    failed: list[BaseException] = []

    def run() -> None:
        try:
            init()
        except BaseException as exc:  # noqa: BLE001 - raised again in the waiting thread
            failed.append(exc)

    thread = threading.Thread(target=run, name="blocktrain-rendezvous", daemon=True)
    thread.start()
    while thread.is_alive():
        poll()
        thread.join(_MEETING_POLL_S)
    if failed:
        poll()  # a rank that left can make the others' rendezvous fail: that is the reason
        raise failed[0]


_left_group = False


def leave_group(timeout_s: float = 5.0) -> None:
    """Destroy the default process group now, waiting at most ``timeout_s`` for it.

    For a rank that crashed while the others may wait for it in a collective: with Gloo their
    collective fails at once (the connections close), instead of after the group's timeout.
    Destroying may block with some backends, so it runs in a daemon thread; the group is not
    destroyed a second time when the block of :func:`process_group` ends.
    """
    global _left_group  # noqa: PLW0603 - one process, one default group
    if not _is_initialized():
        return
    import torch.distributed as dist

    _left_group = True
    thread = threading.Thread(
        target=dist.destroy_process_group, name="blocktrain-leave-group", daemon=True
    )
    thread.start()
    thread.join(timeout_s)


def _forget_leaving() -> None:
    global _left_group  # noqa: PLW0603 - see leave_group
    _left_group = False


_exit_status = 0


def exit_without_finalizing(status: int = 0) -> None:
    """Let this process skip the interpreter's finalization when it ends without an exception.

    A process that trained with DistributedDataParallel on Gloo (PyTorch 2.15) aborts now and
    then while the interpreter finalizes, after ``destroy_process_group`` and after all its
    work is done ("terminate called without an active exception", exit status 134): a finished
    task would count as failed. At exit, once Python has joined the non-daemon threads, and
    unless an exception is ending the process, this flushes logging and the standard streams
    and ends the process at once with ``status`` (that of the latest call). Exit handlers
    registered before this call do not run. Only for processes whose normal end is status 0,
    like a launched task.
    """
    global _exit_status  # noqa: PLW0603 - one process, one exit
    _exit_status = status
    atexit.unregister(_exit_now)
    atexit.register(_exit_now)


def _exit_now() -> None:
    if getattr(sys, "last_value", None) is not None or getattr(sys, "last_exc", None) is not None:
        return  # an unhandled exception: finalize as usual and exit with status 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(_exit_status)


def _is_initialized() -> bool:
    # No process group can exist before torch.distributed is imported; this keeps torch out of
    # processes that never use it.
    if "torch.distributed" not in sys.modules:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size: the process group's if there is one, else the
    environment's (:func:`blocktrain.core.jobenv.ranks`)."""
    if _is_initialized():
        import torch.distributed as dist

        return dist.get_rank(), dist.get_world_size()
    where = ranks(os.environ)
    return where.rank, where.world_size


def is_rank_zero() -> bool:
    """Whether this is rank 0, by :func:`rank_and_world`."""
    return rank_and_world()[0] == 0


def barrier() -> None:
    """Wait for every rank of the process group; nothing to wait for without one."""
    if _is_initialized():
        import torch.distributed as dist

        dist.barrier()


def _collective_device() -> torch.device:
    import torch
    import torch.distributed as dist

    if "nccl" in str(dist.get_backend()) and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_agree(flag: bool) -> bool:
    """True on every rank when any rank passes True (a collective: every rank must call it).

    Without a process group, ``flag`` itself.
    """
    if not _is_initialized():
        return flag
    import torch
    import torch.distributed as dist

    vote = torch.tensor([int(flag)], dtype=torch.int32, device=_collective_device())
    dist.all_reduce(vote, op=dist.ReduceOp.MAX)
    return bool(vote.item())


class Reduction:
    """An all-reduce (sum or max) over the ranks, started now and read later.

    Nothing waits when it starts: on the CPU, Gloo runs it in its own threads; with NCCL the
    GPU's stream queues it behind the work already queued, followed by a copy into pinned
    host memory, so the CPU goes on launching kernels. :meth:`result` waits for it, by then
    usually long done. Without a process group the tensor is its own result.
    """

    def __init__(self, tensor: torch.Tensor, op: Literal["sum", "max"] = "sum") -> None:
        import torch

        self._tensor, self._work, self._done = tensor, None, None
        if _is_initialized():
            import torch.distributed as dist

            if dist.get_world_size() > 1:
                reduce_op = dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX
                self._work = dist.all_reduce(tensor, op=reduce_op, async_op=True)
        if tensor.is_cuda:
            if self._work is not None:
                self._work.wait()  # with NCCL: the stream waits for the reduction, the CPU not
                self._work = None
            self._tensor = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            self._tensor.copy_(tensor, non_blocking=True)
            self._done = torch.cuda.Event()
            self._done.record()

    def result(self) -> torch.Tensor:
        """The reduced tensor, on the CPU (waits for the reduction when still running)."""
        if self._work is not None:
            self._work.wait()
            self._work = None
        if self._done is not None:
            self._done.synchronize()
        return self._tensor
