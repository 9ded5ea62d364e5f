"""A Slack-like incoming webhook on loopback that records every request it receives.

Modes: ``ok`` answers 200 ``ok`` like Slack, ``error`` answers 500, ``hang`` holds the request
without answering (until the server stops) to exercise the client's timeout. Switch modes at any
time by assigning ``server.mode``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, cast

Mode = Literal["ok", "error", "hang"]
PATH = "/services/T000/B000/test-hook"


@dataclass(frozen=True)
class Received:
    path: str
    content_type: str
    raw: bytes

    @property
    def body(self) -> Any:
        return json.loads(self.raw)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        owner = cast("_Server", self.server).owner
        owner.record(Received(self.path, self.headers.get("Content-Type") or "", raw))
        if owner.mode == "hang":
            owner.stopping.wait(60)
            return
        status, text = (200, b"ok") if owner.mode == "ok" else (500, b"internal_error")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Quiet: tests read what was received, not the access log."""


class _Server(ThreadingHTTPServer):
    owner: WebhookServer


class WebhookServer:
    """``with WebhookServer() as hook:`` serves on a free loopback port until the block ends."""

    def __init__(self, mode: Mode = "ok") -> None:
        self.mode: Mode = mode
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        # A short poll interval keeps stop() (and so each test's teardown) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="webhook-server", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{PATH}"

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    @property
    def bodies(self) -> list[Any]:
        """The JSON body of every request, in arrival order."""
        return [r.body for r in self.received]

    def record(self, request: Received) -> None:
        with self._lock:
            self._received.append(request)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()  # releases handlers held in hang mode
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> WebhookServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
