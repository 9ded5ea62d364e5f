"""Slurm's commands, called in one place; the parsers of their output are pure functions."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from blocktrain.errors import BlocktrainError

_TIMEOUT_S = 30


class SlurmError(BlocktrainError):
    """A Slurm command failed or could not be run."""


def run(command: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """Run a Slurm client command and return its stdout; one-line error otherwise."""
    try:
        done = subprocess.run(
            list(command), capture_output=True, text=True, timeout=_TIMEOUT_S, check=False,
            env=dict(os.environ if env is None else env),
        )  # fmt: skip
    except FileNotFoundError:
        raise SlurmError(f"{command[0]} not found: is Slurm installed and on PATH?") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(
            f"{command[0]} did not answer in {_TIMEOUT_S} s: is the cluster up?"
        ) from None
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise SlurmError(
            f"{' '.join(command[:2])} failed: {message[-1] if message else done.returncode}"
        )
    return done.stdout


@dataclass(frozen=True, slots=True)
class QueueEntry:
    job_id: str
    """``123`` or ``120_3`` for an array element."""
    state: str
    elapsed: str
    nodes: str


SQUEUE_FORMAT = "%i|%T|%M|%N"


def parse_squeue(text: str) -> list[QueueEntry]:
    """Lines of ``squeue -h -o '%i|%T|%M|%N'``; pending arrays (``120_[0-3]``) are expanded."""
    entries: list[QueueEntry] = []
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) < 4:
            continue
        job_id, state, elapsed, nodes = fields[:4]
        entries.extend(QueueEntry(one, state, elapsed, nodes) for one in expand_array_id(job_id))
    return entries


def expand_array_id(job_id: str) -> list[str]:
    """``120_[0-2,5]`` (a pending array range, maybe with ``%4``) to its element ids."""
    if "_[" not in job_id:
        return [job_id]
    base, _, spec = job_id.partition("_[")
    spec = spec.rstrip("]").split("%", 1)[0]
    ids: list[str] = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        if low.isdigit() and (not high or high.isdigit()):
            ids += [f"{base}_{i}" for i in range(int(low), int(high or low) + 1)]
    return ids


def squeue(job_ids: Sequence[str] = ()) -> list[QueueEntry]:
    command = ["squeue", "-h", "-o", SQUEUE_FORMAT]
    if job_ids:
        command += ["-j", ",".join(sorted({j.split("_", 1)[0] for j in job_ids}))]
    try:
        return parse_squeue(run(command))
    except SlurmError as exc:
        if "Invalid job id" in str(exc):
            return []  # every job asked for has left the queue
        raise


def max_array_size() -> int:
    """``MaxArraySize`` of the cluster (arrays hold at most that many minus one elements)."""
    for line in run(["scontrol", "show", "config"]).splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize" and value.strip().isdigit():
            return int(value.strip())
    return 1001
