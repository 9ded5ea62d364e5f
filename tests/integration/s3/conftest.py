"""A real S3 server (SeaweedFS via scripts/local-s3) on private ports for the S3 tests.

`s3_server` is one server for the session; `own_s3_server` is a test's own, which the test
may kill and start again. Both are stopped and their state removed afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from s3_service import S3Server


def _start(state_dir: Path) -> S3Server:
    server = S3Server(state_dir)
    try:
        server.up()
    except RuntimeError as error:
        log = state_dir / "weed.log"
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else ""
        server.down(purge=True)
        pytest.fail(f"{error}\n{tail}", pytrace=False)
    return server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = _start(tmp_path_factory.mktemp("s3-server"))
    yield server
    server.kill()  # its graceful stop waits seconds for streams; the data goes anyway
    server.down(purge=True)


@pytest.fixture
def own_s3_server(tmp_path: Path) -> Iterator[S3Server]:
    server = _start(tmp_path / "s3-server")
    yield server
    server.kill()
    server.down(purge=True)
