"""Drives scripts/mlflow-server for tests: a real tracking server on a private port."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "mlflow-server"


class MlflowServer:
    def __init__(self, state_dir: Path, env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.env = env  # the server's environment (default: this process's)
        self.port: int | None = None

    def _run(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, str(SCRIPT), *args, "--dir", str(self.state_dir)],
            capture_output=True, text=True, timeout=180, check=False, env=self.env,
        )  # fmt: skip
        if done.returncode != 0 and args[0] == "up":
            log = (
                (self.state_dir / "server.log").read_text()
                if (self.state_dir / "server.log").exists()
                else ""
            )
            raise RuntimeError(f"mlflow-server {args[0]} failed: {done.stderr}\n{log[-3000:]}")
        return done.stdout.strip()

    def up(self, *options: str) -> str:
        """Start it (``options``: more of the script's, such as ``--artifacts URI``)."""
        uri = self._run("up", *(["--port", str(self.port)] if self.port else []), *options)
        self.port = int(uri.rsplit(":", 1)[1])
        return uri

    def down(self, purge: bool = False) -> None:
        self._run("down", *(["--purge"] if purge else []))

    @property
    def uri(self) -> str:
        if self.port is None:
            from socket import socket

            with socket() as sock:
                sock.bind(("127.0.0.1", 0))
                self.port = int(sock.getsockname()[1])
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri)
