"""Copy everything a process writes to stdout and stderr into log files, secrets masked.

Works on file descriptors, not ``sys.stdout``, so output from C extensions, NCCL and child
processes is kept too. The original streams still receive the (masked) output.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
from collections.abc import Callable, Generator
from pathlib import Path
from typing import BinaryIO, TextIO

# A partial line is held back this long for its end, so that a secret split across two
# writes is still masked, without delaying prompts and progress bars noticeably.
_PARTIAL_LINE_WAIT_S = 0.2
_CHUNK = 65536


def _split_complete(buffer: bytes) -> tuple[bytes, bytes]:
    cut = max(buffer.rfind(b"\n"), buffer.rfind(b"\r"))
    return (buffer[: cut + 1], buffer[cut + 1 :]) if cut >= 0 else (b"", buffer)


class FdTee:
    """Redirects one file descriptor through a pipe; a thread copies to the original and a file."""

    def __init__(self, fd: int, path: Path, redact: Callable[[str], str]) -> None:
        self._fd = fd
        self._path = path
        self._redact = redact
        self._saved = -1
        self._read_end = -1
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._saved = os.dup(self._fd)
        read_end, write_end = os.pipe()
        os.dup2(write_end, self._fd)
        os.close(write_end)
        self._read_end = read_end
        self._thread = threading.Thread(target=self._pump, name=f"blocktrain-tee-{self._fd}")
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        # Putting the original back closes our pipe's last write end, so the pump sees EOF,
        # unless a child process still holds a copy: then give up waiting after a moment.
        os.dup2(self._saved, self._fd)
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        os.close(self._saved)

    def _pump(self) -> None:
        held = b""
        with self._path.open("ab") as log:
            while True:
                ready, _, _ = select.select([self._read_end], [], [], _PARTIAL_LINE_WAIT_S)
                chunk = os.read(self._read_end, _CHUNK) if ready else b""
                if ready and not chunk:
                    break
                complete, held = _split_complete(held + chunk)
                if not ready:
                    complete, held = held, b""
                if complete:
                    self._emit(complete, log)
            if held:
                self._emit(held, log)
        os.close(self._read_end)

    def _emit(self, data: bytes, log: BinaryIO) -> None:
        text = self._redact(data.decode("utf-8", "surrogateescape"))
        out = text.encode("utf-8", "surrogateescape")
        with contextlib.suppress(OSError):
            os.write(self._saved, out)
        log.write(out)
        log.flush()


@contextlib.contextmanager
def captured(out_path: Path, err_path: Path, redact: Callable[[str], str]) -> Generator[None]:
    """Tee fds 1 and 2 into ``out_path`` and ``err_path`` (appending) for the block's duration."""
    streams: list[TextIO] = [sys.stdout, sys.stderr]
    for stream in streams:
        stream.flush()
    tees = [FdTee(1, out_path, redact), FdTee(2, err_path, redact)]
    started: list[FdTee] = []
    line_buffered = [s.line_buffering for s in streams]
    try:
        for tee in tees:
            tee.start()
            started.append(tee)
        for stream in streams:
            # Under Slurm stdout is a file and block-buffered; lines should reach the log now.
            with contextlib.suppress(AttributeError, ValueError):
                stream.reconfigure(line_buffering=True)  # pyright: ignore[reportAttributeAccessIssue,reportUnknownMemberType]
        yield
    finally:
        for stream, was in zip(streams, line_buffered, strict=True):
            stream.flush()
            with contextlib.suppress(AttributeError, ValueError):
                stream.reconfigure(line_buffering=was)  # pyright: ignore[reportAttributeAccessIssue,reportUnknownMemberType]
        for tee in reversed(started):
            tee.stop()
