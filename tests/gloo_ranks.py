"""Start one process per rank, as a launcher would, for the multi-process Gloo tests.

Each rank writes its output to its own log and prints one ``RESULT {json}`` line. Every run
has a deadline, so a rank waiting for a peer that died cannot hang the suite; a failed rank
fails the test with every rank's log.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_TORCH_NAMES = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(*prefixes: str) -> dict[str, str]:
    """This process's environment without torch-style variables nor ones with ``prefixes``,
    and without GPUs (Gloo on the CPU, on a GPU machine too)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SLURM_", "BLOCKTRAIN_", *prefixes)) and name not in _TORCH_NAMES
    }
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def torch_env(rank: int, world: int, port: int) -> dict[str, str]:
    """What torchrun gives rank ``rank`` of ``world`` (nothing for a single process)."""
    if world == 1:
        return {}
    return {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def run_ranks(
    command: Sequence[str],
    envs: Sequence[Mapping[str, str]],
    logs: Sequence[Path],
    deadline_s: float,
) -> list[dict[str, Any]]:
    """Run ``command`` once per environment; every rank's RESULT, in rank order."""
    procs: list[subprocess.Popen[bytes]] = []
    for env, log in zip(envs, logs, strict=True):
        with log.open("wb") as out:
            procs.append(
                subprocess.Popen(list(command), env=dict(env), stdout=out, stderr=subprocess.STDOUT)
            )
    deadline = time.monotonic() + deadline_s
    try:
        for proc in procs:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    texts = [log.read_text() for log in logs]
    report = "\n".join(
        f"--- rank {rank} (exit {proc.returncode}):\n{text}"
        for rank, (proc, text) in enumerate(zip(procs, texts, strict=True))
    )
    assert all(proc.returncode == 0 for proc in procs), report
    return [json.loads(text.rsplit("RESULT ", 1)[1]) for text in texts]
