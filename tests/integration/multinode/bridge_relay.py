"""A TCP relay from an address the cluster's nodes reach to a server on this machine's loopback.

The local services (scripts/local-s3, the MLflow server) listen on 127.0.0.1, which a node's
network namespace cannot reach; a site's login or proxy node plays this part on a real cluster.
Bytes pass through unchanged (an S3 request signed for the relay's address stays valid).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

_CHUNK = 1 << 16


class Relay:
    """Listens on ``host`` (a free port) and forwards each connection to 127.0.0.1:``port``."""

    def __init__(self, host: str, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.server = socket.create_server((host, 0))
        self.address = f"{host}:{self.server.getsockname()[1]}"
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="relay", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        self.server.close()
        with self._lock:
            for sock in self._open:
                sock.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(_CHUNK):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def relay(host: str, port: int) -> Iterator[Relay]:
    made = Relay(host, port)
    try:
        yield made
    finally:
        made.close()
