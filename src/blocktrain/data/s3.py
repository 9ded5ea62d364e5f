"""S3 storage through boto3: retries with backoff, multipart and parallel transfers, and
failures explained as one line naming the path and the fix.

Configuration comes from the environment when a storage is made: ``S3_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL``), ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``,
``BLOCKTRAIN_S3_ATTEMPTS`` and ``BLOCKTRAIN_S3_CONCURRENCY``. Without keys in the environment
boto3's own credential chain (``~/.aws``, instance roles) applies.

Implements ``objects.Storage``; must not import boto3 at module level (``storage_for`` imports
this module only for ``s3://`` sources, and boto3 is imported when a client is made), nor
import ``storage`` (which imports this module).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from blocktrain.core import envvars
from blocktrain.core.retry import RetryPolicy, retry_call
from blocktrain.data.integrity import CHUNK, MIB, clean_etag, file_md5
from blocktrain.data.localfs import LocalStorage
from blocktrain.data.names import (
    S3Location,
    basename,
    is_hidden,
    normalize_source,
    parse_s3,
    safe_member_name,
)
from blocktrain.data.objects import (
    IntegrityMismatchError,
    Listing,
    ObjectInfo,
    SourceNotFoundError,
    check_expected,
)
from blocktrain.data.parallel import map_parallel
from blocktrain.errors import BlocktrainError

if TYPE_CHECKING:
    from boto3.s3.transfer import TransferConfig
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")
_log = logging.getLogger("blocktrain.data")
PARTS_IN_FLIGHT = 8  # parallel ranged GETs or part uploads of one large object
RETRYABLE_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "RequestTimeTooSkewed",
    }
)
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
ACCESS_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "Forbidden"}
)


class S3AccessError(BlocktrainError):
    """S3 refused the credentials, or there are none."""


class S3UnreachableError(BlocktrainError):
    """The S3 endpoint did not answer, after every retry."""


@dataclass(frozen=True, kw_only=True, slots=True)
class S3Config:
    """How to reach S3 and how hard to try; read from the environment by :meth:`from_environ`."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    concurrency: int = 16
    multipart_threshold: int = 8 * MIB
    multipart_chunksize: int = 8 * MIB
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    # boto3 >= 1.36 sends and expects CRC checksums that many S3-compatible servers reject.
    checksums_when_required: bool = True

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise BlocktrainError(f"S3 concurrency must be at least 1, got {self.concurrency}")
        if self.multipart_chunksize < 5 * MIB:
            raise BlocktrainError(
                f"S3 multipart parts must be at least 5 MiB, got {self.multipart_chunksize} bytes"
            )

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> S3Config:
        return cls(
            endpoint_url=env.get("S3_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL") or None,
            region=env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or None,
            access_key=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            retry=RetryPolicy(attempts=_positive_int(env, envvars.S3_ATTEMPTS.name, 6)),
            concurrency=_positive_int(env, envvars.S3_CONCURRENCY.name, 16),
            checksums_when_required=not any(
                name in env
                for name in ("AWS_REQUEST_CHECKSUM_CALCULATION", "AWS_RESPONSE_CHECKSUM_VALIDATION")
            ),
        )

    @property
    def where(self) -> str:
        return self.endpoint_url or "AWS S3"


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise BlocktrainError(f"{name}={raw!r} must be a positive whole number")
    return int(raw)


# --- failures: which to retry, and what to tell the user ---------------------------------


def _chain(error: BaseException) -> list[BaseException]:
    """The error and what it wraps (boto3 wraps transfer failures in its own types)."""
    found: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in found:
        found.append(current)
        last = getattr(current, "last_exception", None)
        current = (
            last if isinstance(last, BaseException) else current.__cause__ or current.__context__
        )
    return found


def _client_error(error: BaseException) -> tuple[str, int] | None:
    """(code, HTTP status) of a botocore ClientError anywhere in the chain."""
    from botocore.exceptions import ClientError

    for item in _chain(error):
        if isinstance(item, ClientError):
            response: Mapping[str, Any] = item.response  # pyright: ignore[reportAssignmentType]
            code = str(response.get("Error", {}).get("Code", ""))
            status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            return code, status
    return None


def _connection_failure(error: BaseException) -> BaseException | None:
    from botocore.exceptions import (
        ConnectionError as BotoConnectionError,
    )
    from botocore.exceptions import (
        HTTPClientError,
        IncompleteReadError,
        SSLError,
    )

    for item in _chain(error):
        if isinstance(item, SSLError):
            return None
        if isinstance(item, BotoConnectionError | HTTPClientError | IncompleteReadError):
            return item
        if isinstance(item, ConnectionError | TimeoutError):
            return item
    return None


def is_retryable(error: BaseException) -> bool:
    """Server trouble, throttling, dropped connections and broken transfers are retried;
    missing objects, refused credentials and bad requests are not."""
    if isinstance(error, IntegrityMismatchError):
        return True
    if isinstance(error, BlocktrainError):
        return False
    client = _client_error(error)
    if client is not None:
        code, status = client
        return status >= 500 or code in RETRYABLE_CODES
    return _connection_failure(error) is not None


def explain(error: BaseException, uri: str, config: S3Config) -> BlocktrainError:
    """One line naming the path, what went wrong and what to do."""
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    where = config.where
    if any(isinstance(e, NoCredentialsError | PartialCredentialsError) for e in _chain(error)):
        return S3AccessError(
            f"no S3 credentials to access {uri}; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (`scripts/local-s3 env` prints them for the local server)"
        )
    client = _client_error(error)
    if client is not None:
        code, status = client
        bucket = parse_s3(uri).bucket
        if code == "NoSuchBucket":
            return SourceNotFoundError(
                f"S3 bucket {bucket!r} does not exist at {where} (for {uri}); create it or "
                "correct the path"
            )
        if code in NOT_FOUND_CODES or status == 404:
            return SourceNotFoundError(f"no S3 object at {uri} ({where}); check the key")
        if code in ACCESS_CODES or status == 403:
            return S3AccessError(
                f"S3 at {where} refused access to {uri} ({code or status}); check "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and the bucket's permissions"
            )
        return BlocktrainError(
            f"S3 request for {uri} failed at {where}: {code or status}; "
            f"{'retried ' + str(config.retry.attempts) + ' times, ' if status >= 500 else ''}"
            "check the server and the path"
        )
    broken = _connection_failure(error)
    if broken is not None:
        return S3UnreachableError(
            f"cannot reach S3 at {where} for {uri} after {config.retry.attempts} tries "
            f"({type(broken).__name__}: {broken}); start the server or correct S3_ENDPOINT_URL"
        )
    return BlocktrainError(f"S3 transfer of {uri} failed ({type(error).__name__}: {error})")


# --- the storage --------------------------------------------------------------------------


class S3Storage:
    """S3 or an S3-compatible server (MinIO, SeaweedFS). Safe to share between threads; a
    copy in another process (DataLoader workers) makes its own client."""

    def __init__(self, config: S3Config | None = None) -> None:
        self.config = config or S3Config()
        self._lock = threading.Lock()
        self._client: S3Client | None = None
        self._pid = 0

    def __getstate__(self) -> dict[str, object]:
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])

    @property
    def concurrency(self) -> int:
        return self.config.concurrency

    @property
    def client(self) -> S3Client:
        """The boto3 client of this process (register event hooks on ``client.meta.events``)."""
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client = self._make_client()
                self._pid = os.getpid()
            return self._client

    def _make_client(self) -> S3Client:
        import boto3
        from botocore.config import Config

        c = self.config
        options: dict[str, Any] = {}
        if c.checksums_when_required:
            options.update(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
        config = Config(
            connect_timeout=c.connect_timeout_s,
            read_timeout=c.read_timeout_s,
            # files in parallel, and the parts of each large one in parallel too
            max_pool_connections=c.concurrency * PARTS_IN_FLIGHT,
            retries={"total_max_attempts": 1},  # retry_call retries, with its own backoff
            **options,
        )
        session = boto3.session.Session()
        # The stubs overload client() for every AWS service; "s3" resolves to S3Client.
        return session.client(  # pyright: ignore[reportUnknownMemberType]
            "s3",
            endpoint_url=c.endpoint_url,
            region_name=c.region,
            aws_access_key_id=c.access_key,
            aws_secret_access_key=c.secret_key,
            config=config,
        )

    def _transfer_config(self) -> TransferConfig:
        from boto3.s3.transfer import TransferConfig

        c = self.config
        return TransferConfig(
            multipart_threshold=c.multipart_threshold,
            multipart_chunksize=c.multipart_chunksize,
            max_concurrency=PARTS_IN_FLIGHT,
        )

    def _call(self, what: str, uri: str, call: Callable[[], T]) -> T:
        try:
            return retry_call(
                call,
                policy=self.config.retry,
                retryable=is_retryable,
                what=f"{what} {uri}",
                log=_log,
            )
        except BlocktrainError:
            raise
        except Exception as error:
            raise explain(error, uri, self.config) from error

    # listing ---------------------------------------------------------------------------

    def list(self, source: str) -> Listing:
        location = parse_s3(source)
        objects = self._call("list", source, lambda: self._list_prefix(location, source))
        if objects:
            return Listing(source, False, tuple(sorted(objects, key=lambda o: o.name)))
        if location.key:
            head = self._call("head", source, lambda: self._head(location))
            if head is not None:
                return Listing(source, True, (head,))
        raise SourceNotFoundError(
            f"nothing at {source} ({self.config.where}): no object and no prefix of that name; "
            "check the path"
        )

    def _list_prefix(self, location: S3Location, source: str) -> list[ObjectInfo]:
        prefix = f"{location.key}/" if location.key else ""
        objects: list[ObjectInfo] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=location.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = item.get("Key", "")
                if key.endswith("/"):
                    continue  # a folder marker some tools create
                name = safe_member_name(key[len(prefix) :], source)
                if not is_hidden(name):
                    objects.append(
                        ObjectInfo(name, int(item.get("Size", 0)), clean_etag(item.get("ETag")))
                    )
        return objects

    def _head(self, location: S3Location) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        try:
            reply = self.client.head_object(Bucket=location.bucket, Key=location.key)
        except ClientError as error:
            client = _client_error(error)
            if client is not None and (client[0] in NOT_FOUND_CODES or client[1] == 404):
                return None
            raise
        return ObjectInfo(
            basename(location.key), int(reply["ContentLength"]), clean_etag(reply.get("ETag"))
        )

    def exists(self, source: str) -> bool:
        try:
            self.list(source)
        except SourceNotFoundError:
            return False
        return True

    # reading and writing ---------------------------------------------------------------

    def read(self, uri: str) -> bytes:
        location = parse_s3(uri)

        def get() -> bytes:
            reply = self.client.get_object(Bucket=location.bucket, Key=location.key)
            return reply["Body"].read()

        return self._call("read", uri, get)

    def write(self, uri: str, data: bytes) -> None:
        location = parse_s3(uri)
        self._call(
            "write",
            uri,
            lambda: self.client.put_object(Bucket=location.bucket, Key=location.key, Body=data),
        )

    def upload(self, local: Path, uri: str) -> int:
        listing = LocalStorage().list(normalize_source(local))
        target = parse_s3(uri)
        transfer = self._transfer_config()

        def one(info: ObjectInfo) -> None:
            dest = target if listing.is_file else target.child(info.name)
            path = listing.member(info.name)
            self._call(
                "upload",
                dest.uri,
                lambda: self.client.upload_file(path, dest.bucket, dest.key, Config=transfer),
            )

        map_parallel(one, listing.objects, self.config.concurrency)
        return len(listing.objects)

    def download(self, uri: str, dest: Path, expected: ObjectInfo | None = None) -> str:
        location = parse_s3(uri)
        small = expected is not None and expected.size < self.config.multipart_threshold

        def fetch() -> str:
            md5 = self._get_small(location, dest) if small else self._get_large(location, dest)
            check_expected(dest, md5, expected, uri, (self.config.multipart_chunksize,))
            return md5

        return self._call("download", uri, fetch)

    def _get_small(self, location: S3Location, dest: Path) -> str:
        """One GET, hashed while it is written (no HEAD request, no second read)."""
        reply = self.client.get_object(Bucket=location.bucket, Key=location.key)
        digest = hashlib.md5(usedforsecurity=False)
        with dest.open("wb") as out:
            for block in reply["Body"].iter_chunks(CHUNK):
                digest.update(block)
                out.write(block)
        return digest.hexdigest()

    def _get_large(self, location: S3Location, dest: Path) -> str:
        """Parallel ranged GETs (boto3's managed transfer), then one pass to hash."""
        self.client.download_file(
            location.bucket, location.key, str(dest), Config=self._transfer_config()
        )
        return file_md5(dest)
