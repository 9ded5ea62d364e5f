"""Drives scripts/local-s3 for tests: a real SeaweedFS S3 server on private ports."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "local-s3"


class S3Server:
    """One server with its own state directory; `kill` and `up` again keep ports and data."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.env: dict[str, str] = {}

    def _script(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(SCRIPT), *args, "--dir", str(self.state_dir)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    def up(self) -> dict[str, str]:
        done = self._script("up")
        if done.returncode != 0:
            raise RuntimeError(f"local-s3 up failed:\n{done.stdout}{done.stderr}")
        self.env = {}
        for line in done.stdout.splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            self.env[name] = shlex.split(value)[0]
        return self.env

    def down(self, purge: bool = False) -> None:
        self._script("down", *(["--purge"] if purge else []))

    @property
    def pid(self) -> int:
        return int((self.state_dir / "weed.pid").read_text())

    def kill(self) -> None:
        """SIGKILL, as a crash or a node failure would end it."""
        pid = self.pid
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    def process_env(self, **extra: str) -> dict[str, str]:
        """This process's environment with the server's variables (for subprocesses)."""
        return {**os.environ, **self.env, **extra}

    def storage(self, **overrides: Any):  # -> S3Storage
        from blocktrain.data.s3 import S3Config, S3Storage

        config = S3Config.from_environ(self.env)
        if overrides:
            import dataclasses

            config = dataclasses.replace(config, **overrides)
        return S3Storage(config)

    def client(self, **credentials: str) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.env["S3_ENDPOINT_URL"],
            aws_access_key_id=credentials.get("key", self.env["AWS_ACCESS_KEY_ID"]),
            aws_secret_access_key=credentials.get("secret", self.env["AWS_SECRET_ACCESS_KEY"]),
            region_name=self.env["AWS_DEFAULT_REGION"],
        )
