"""What the tests read of other processes in /proc."""

from __future__ import annotations

from pathlib import Path


def environ(pid: int) -> dict[str, str]:
    """The environment process ``pid`` started with; {} once it is gone (or not ours to read)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}
