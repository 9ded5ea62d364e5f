"""One interface to the members of a folder, a zip, a tar (also .tar.gz) or an S3 prefix,
read one at a time without extracting anything.

Member names are relative POSIX paths; archives holding an absolute name or ``..`` are refused
when opened. Hidden members (a component starting with ``.``) and folders are not listed. A
fetcher can be pickled into DataLoader workers: each process opens its own handle.

Must not cache or extract to disk, nor decode what it reads (``images``).
"""

from __future__ import annotations

import os
import tarfile
import threading
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

from blocktrain.data.names import (
    ARCHIVE_SUFFIXES,
    basename,
    is_hidden,
    is_s3,
    normalize_source,
    safe_member_name,
    split_suffix,
)
from blocktrain.data.storage import SourceNotFoundError, Storage, storage_for
from blocktrain.errors import BlocktrainError

_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError)
_TAR_ERRORS = (tarfile.TarError, zlib.error, EOFError, OSError)
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")


class ArchiveError(BlocktrainError):
    """An archive that cannot be read."""


class Fetcher(Protocol):
    """The members of one dataset source."""

    @property
    def source(self) -> str: ...

    def names(self) -> list[str]:
        """Member names, sorted."""
        ...

    def read(self, name: str) -> bytes: ...

    def items(self, names: Iterable[str] | None = None) -> Iterator[tuple[str, bytes]]:
        """``(name, bytes)`` of the members (all, or ``names``) in the order cheapest to read."""
        ...

    def close(self) -> None: ...


def open_fetcher(source: str | Path, storage: Storage | None = None) -> Fetcher:
    """The fetcher for a folder, a .zip, a .tar/.tar.gz/.tgz, or an ``s3://`` prefix."""
    origin = normalize_source(source)
    if is_s3(origin):
        if split_suffix(basename(origin))[1].lower() in ARCHIVE_SUFFIXES:
            raise BlocktrainError(
                f"{origin} is an archive in S3; fetch it first: open_fetcher(localize({origin!r}))"
            )
        return S3PrefixFetcher(origin, storage or storage_for(origin))
    path = Path(origin)
    if path.is_dir():
        return DirFetcher(path)
    if not path.exists():
        raise SourceNotFoundError(f"{path} does not exist; check the path")
    suffix = split_suffix(path.name)[1].lower()
    if suffix == ".zip":
        return ZipFetcher(path)
    if suffix in (".tar", ".tar.gz", ".tgz"):
        return TarFetcher(path)
    if zipfile.is_zipfile(path):
        return ZipFetcher(path)
    if tarfile.is_tarfile(path):
        return TarFetcher(path)
    raise ArchiveError(f"{path} is neither a folder, a zip nor a tar archive; check the path")


def _unknown(source: str, name: str) -> BlocktrainError:
    return SourceNotFoundError(f"{source} has no member {name!r}; check the name")


class DirFetcher:
    """Files below a folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def source(self) -> str:
        return str(self.root)

    def names(self) -> list[str]:
        found: list[str] = []
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for file in files:
                name = Path(folder, file).relative_to(self.root).as_posix()
                if not is_hidden(name):
                    found.append(name)
        return sorted(found)

    def read(self, name: str) -> bytes:
        try:
            return (self.root / safe_member_name(name, self.source)).read_bytes()
        except FileNotFoundError:
            raise _unknown(self.source, name) from None

    def items(self, names: Iterable[str] | None = None) -> Iterator[tuple[str, bytes]]:
        for name in self.names() if names is None else names:
            yield name, self.read(name)

    def close(self) -> None:
        pass


class ZipFetcher:
    """Members of a zip archive (stored or deflated), read on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._names = self._index()
        self._zip: zipfile.ZipFile | None = None
        self._pid = 0

    @property
    def source(self) -> str:
        return str(self.path)

    def __getstate__(self) -> dict[str, object]:
        return {"path": self.path, "_names": self._names, "_zip": None, "_pid": 0}

    def _open(self) -> zipfile.ZipFile:
        try:
            return zipfile.ZipFile(self.path)
        except _ZIP_ERRORS as error:
            raise ArchiveError(
                f"cannot read {self.path} as a zip archive ({error}); the file is damaged or "
                "not a zip: fetch it again or rebuild it"
            ) from None

    def _index(self) -> list[str]:
        with self._open() as archive:
            names = [
                safe_member_name(info.filename, self.source)
                for info in archive.infolist()
                if not info.is_dir()
            ]
        return sorted(name for name in names if not is_hidden(name))

    def _handle(self) -> zipfile.ZipFile:
        if self._zip is None or self._pid != os.getpid():
            self._zip, self._pid = self._open(), os.getpid()
        return self._zip

    def names(self) -> list[str]:
        return list(self._names)

    def read(self, name: str) -> bytes:
        try:
            return self._handle().read(name)
        except KeyError:
            raise _unknown(self.source, name) from None
        except _ZIP_ERRORS as error:
            raise ArchiveError(
                f"cannot read member {name!r} of {self.path} ({error}); the archive is "
                "damaged: fetch it again or rebuild it"
            ) from None

    def items(self, names: Iterable[str] | None = None) -> Iterator[tuple[str, bytes]]:
        for name in self._names if names is None else names:
            yield name, self.read(name)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None


class TarFetcher:
    """Members of a tar archive. Uncompressed members are read straight from their offset
    (fast random access); a compressed archive is read in one pass by :meth:`items`, while
    random reads of it decompress from the start and are slow: prefer .tar or .zip for lazy
    datasets."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.compressed = self._compressed()
        self._members = self._index()  # name -> (offset of data, size, readable at offset)
        self._tar: tarfile.TarFile | None = None
        self._fd: int | None = None
        self._pid = 0
        self._lock = threading.Lock()

    @property
    def source(self) -> str:
        return str(self.path)

    def __getstate__(self) -> dict[str, object]:
        return {"path": self.path, "compressed": self.compressed, "_members": self._members}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._tar, self._fd, self._pid, self._lock = None, None, 0, threading.Lock()

    def _compressed(self) -> bool:
        try:
            with self.path.open("rb") as handle:
                head = handle.read(6)
        except OSError as error:
            raise ArchiveError(f"cannot read {self.path} ({error}); check the path") from None
        return head.startswith(_COMPRESSED_MAGIC)

    def _damaged(self, error: BaseException, member: str | None = None) -> ArchiveError:
        what = f"member {member!r} of {self.path}" if member else f"{self.path} as a tar archive"
        return ArchiveError(
            f"cannot read {what} ({error or type(error).__name__}); the file is damaged or not "
            "a tar: fetch it again or rebuild it"
        )

    def _index(self) -> dict[str, tuple[int, int, bool]]:
        members: dict[str, tuple[int, int, bool]] = {}
        try:
            with tarfile.open(self.path, "r:*") as archive:
                for info in archive.getmembers():
                    name = safe_member_name(info.name, self.source)
                    if info.isreg() and not is_hidden(name):
                        plain = not self.compressed and not info.issparse()
                        members[name] = (info.offset_data, info.size, plain)
        except _TAR_ERRORS as error:
            raise self._damaged(error) from None
        return dict(sorted(members.items()))

    def names(self) -> list[str]:
        return list(self._members)

    def read(self, name: str) -> bytes:
        try:
            offset, size, plain = self._members[name]
        except KeyError:
            raise _unknown(self.source, name) from None
        try:
            if plain:
                data = os.pread(self._raw(), size, offset)
                if len(data) != size:
                    raise EOFError(f"{len(data)} of {size} bytes")
                return data
            with self._lock:
                extracted = self._archive().extractfile(name)
                if extracted is None:
                    raise _unknown(self.source, name)
                return extracted.read()
        except _TAR_ERRORS as error:
            raise self._damaged(error, name) from None

    def items(self, names: Iterable[str] | None = None) -> Iterator[tuple[str, bytes]]:
        wanted = set(self._members if names is None else names)
        if not self.compressed:
            for name in sorted(wanted, key=lambda n: self._members[n][0]):
                yield name, self.read(name)
            return
        try:
            with tarfile.open(self.path, "r|*") as stream:  # one forward pass, no seeking
                for info in stream:
                    name = safe_member_name(info.name, self.source)
                    extracted = stream.extractfile(info) if name in wanted else None
                    if extracted is not None:
                        yield name, extracted.read()
        except _TAR_ERRORS as error:
            raise self._damaged(error) from None

    def _fresh(self) -> None:
        """Forget handles inherited from a parent process: they share its file offset."""
        if self._pid != os.getpid():
            self._tar, self._fd, self._pid = None, None, os.getpid()

    def _raw(self) -> int:
        self._fresh()
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def _archive(self) -> tarfile.TarFile:
        self._fresh()
        if self._tar is None:
            self._tar = tarfile.open(self.path, "r:*")  # noqa: SIM115 - closed by close()
        return self._tar

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class S3PrefixFetcher:
    """Objects below an S3 prefix, one GET each; :meth:`items` fetches several at once."""

    def __init__(self, uri: str, storage: Storage) -> None:
        self.uri = uri
        self.storage = storage
        listing = storage.list(uri)
        if listing.is_file:
            raise BlocktrainError(
                f"{uri} is one object, not a prefix; name the folder that holds the dataset"
            )
        self._listing = listing

    @property
    def source(self) -> str:
        return self.uri

    def names(self) -> list[str]:
        return [info.name for info in self._listing.objects]

    def read(self, name: str) -> bytes:
        return self.storage.read(self._listing.member(safe_member_name(name, self.uri)))

    def items(self, names: Iterable[str] | None = None) -> Iterator[tuple[str, bytes]]:
        import concurrent.futures as cf

        todo = list(self.names() if names is None else names)
        window = max(1, self.storage.concurrency) * 4  # bounded read-ahead, not the dataset
        with cf.ThreadPoolExecutor(max_workers=self.storage.concurrency) as pool:
            for start in range(0, len(todo), window):
                chunk = todo[start : start + window]
                yield from zip(chunk, pool.map(self.read, chunk), strict=True)

    def close(self) -> None:
        pass
