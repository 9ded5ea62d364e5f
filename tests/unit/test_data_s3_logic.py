"""The pure parts of S3 storage: configuration, which failures are retried and what the user
is told, ETags single-part and multipart, and the thread pool's failure handling."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
    SSLError,
)

from blocktrain.core.retry import RetryPolicy
from blocktrain.data.integrity import (
    candidate_part_sizes,
    clean_etag,
    etag_verdict,
    file_md5,
    multipart_etag,
)
from blocktrain.data.parallel import map_parallel
from blocktrain.data.s3 import S3AccessError, S3Config, S3UnreachableError, explain, is_retryable
from blocktrain.data.storage import IntegrityMismatchError, SourceNotFoundError
from blocktrain.errors import BlocktrainError

MIB = 1 << 20
CONFIG = S3Config(endpoint_url="http://127.0.0.1:9000", retry=RetryPolicy(attempts=3))


def client_error(code: str, status: int) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "GetObject")  # pyright: ignore[reportArgumentType]


def test_configuration_from_the_environment():
    config = S3Config.from_environ({
        "S3_ENDPOINT_URL": "http://s3.local:9000", "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "secret", "AWS_DEFAULT_REGION": "eu-west-1",
        "BLOCKTRAIN_S3_ATTEMPTS": "3", "BLOCKTRAIN_S3_CONCURRENCY": "4",
    })  # fmt: skip
    assert (config.endpoint_url, config.access_key, config.secret_key, config.region) == (
        "http://s3.local:9000", "id", "secret", "eu-west-1",
    )  # fmt: skip
    assert config.retry.attempts == 3
    assert config.concurrency == 4
    assert config.checksums_when_required
    assert not S3Config.from_environ(
        {"AWS_REQUEST_CHECKSUM_CALCULATION": "when_supported"}
    ).checksums_when_required
    assert S3Config.from_environ({"AWS_ENDPOINT_URL": "http://x"}).endpoint_url == "http://x"
    with pytest.raises(BlocktrainError, match="BLOCKTRAIN_S3_ATTEMPTS='zero' must be a positive"):
        S3Config.from_environ({"BLOCKTRAIN_S3_ATTEMPTS": "zero"})
    with pytest.raises(BlocktrainError, match="at least 5 MiB"):
        S3Config(multipart_chunksize=MIB)


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (client_error("InternalError", 500), True),
        (client_error("SlowDown", 503), True),
        (client_error("RequestTimeout", 400), True),
        (client_error("NoSuchKey", 404), False),
        (client_error("NoSuchBucket", 404), False),
        (client_error("SignatureDoesNotMatch", 403), False),
        (EndpointConnectionError(endpoint_url="http://x"), True),
        (ReadTimeoutError(endpoint_url="http://x"), True),
        (ConnectionResetError(), True),
        (SSLError(endpoint_url="http://x", error=ValueError("bad certificate")), False),
        (NoCredentialsError(), False),
        (IntegrityMismatchError("short"), True),
        (SourceNotFoundError("gone"), False),
    ],
)
def test_which_failures_are_retried(error: BaseException, retried: bool):
    assert is_retryable(error) is retried


def test_wrapped_failures_are_classified_by_their_cause():
    outer = RuntimeError("transfer failed")
    outer.__cause__ = EndpointConnectionError(endpoint_url="http://x")
    assert is_retryable(outer)
    wrapped = RuntimeError("retries exceeded")
    wrapped.last_exception = client_error("NoSuchKey", 404)  # pyright: ignore[reportAttributeAccessIssue]
    assert not is_retryable(wrapped)


def test_what_the_user_is_told():
    uri = "s3://data/sets/mnist"
    missing_bucket = explain(client_error("NoSuchBucket", 404), uri, CONFIG)
    assert isinstance(missing_bucket, SourceNotFoundError)
    assert str(missing_bucket) == (
        "S3 bucket 'data' does not exist at http://127.0.0.1:9000 (for s3://data/sets/mnist); "
        "create it or correct the path"
    )
    assert isinstance(explain(client_error("NoSuchKey", 404), uri, CONFIG), SourceNotFoundError)
    denied = explain(client_error("InvalidAccessKeyId", 403), uri, CONFIG)
    assert isinstance(denied, S3AccessError)
    assert "refused access to s3://data/sets/mnist (InvalidAccessKeyId)" in str(denied)
    assert "AWS_ACCESS_KEY_ID" in str(denied)
    no_keys = explain(NoCredentialsError(), uri, CONFIG)
    assert isinstance(no_keys, S3AccessError)
    assert "scripts/local-s3 env" in str(no_keys)
    down = explain(EndpointConnectionError(endpoint_url="http://127.0.0.1:9000/x"), uri, CONFIG)
    assert isinstance(down, S3UnreachableError)
    assert str(down).startswith(
        "cannot reach S3 at http://127.0.0.1:9000 for s3://data/sets/mnist after 3 tries"
    )
    assert "S3_ENDPOINT_URL" in str(down)
    assert "\n" not in str(explain(client_error("InternalError", 500), uri, CONFIG))


def test_etags(tmp_path: Path):
    data = bytes(range(256)) * (84 * 1024) + b"tail"  # 21 MiB and a bit
    path = tmp_path / "blob"
    path.write_bytes(data)
    md5 = file_md5(path)
    assert md5 == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert clean_etag('"ABC"') == "abc"
    assert etag_verdict(f'"{md5}"', md5, path) == "match"
    assert etag_verdict('"' + "0" * 32 + '"', md5, path) == "mismatch"
    parts = [
        hashlib.md5(data[i : i + 8 * MIB], usedforsecurity=False).digest()
        for i in range(0, len(data), 8 * MIB)
    ]
    multipart = f"{hashlib.md5(b''.join(parts), usedforsecurity=False).hexdigest()}-3"
    assert multipart_etag(path, 8 * MIB) == multipart
    assert etag_verdict(multipart, md5, path) == "match"
    assert etag_verdict("0" * 32 + "-3", md5, path) == "unknown"  # other part sizes: can't tell
    assert etag_verdict(None, md5, path) == "unknown"
    assert etag_verdict("opaque-kms-etag", md5, path) == "unknown"
    assert candidate_part_sizes(len(data), 3, [10 * MIB]) == [10 * MIB, 8 * MIB]


def test_map_parallel_keeps_order_and_stops_at_the_first_failure():
    assert map_parallel(lambda x: x * 2, range(20), 4) == [x * 2 for x in range(20)]
    started: list[int] = []
    lock = threading.Lock()

    def work(x: int) -> int:
        with lock:
            started.append(x)
        if x == 3:
            raise ValueError("three")
        time.sleep(0.05)
        return x

    with pytest.raises(ValueError, match="three"):
        map_parallel(work, range(100), 2)
    assert len(started) < 100  # the rest was cancelled
