"""The :class:`~blocktrain.data.objects.Storage` of files on a local or shared file system.

Must not know about S3 or the cache; writes into place only through ``blocktrain.core.atomic``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from blocktrain.core.atomic import atomic_path, write_bytes_atomic
from blocktrain.data.integrity import CHUNK
from blocktrain.data.names import is_hidden, normalize_source
from blocktrain.data.objects import Listing, ObjectInfo, SourceNotFoundError, check_expected


class LocalStorage:
    """Files on a local or shared file system."""

    concurrency = 8

    def list(self, source: str) -> Listing:
        root = Path(source)
        if root.is_file():
            return Listing(source, True, (ObjectInfo(root.name, root.stat().st_size),))
        if not root.is_dir():
            raise SourceNotFoundError(f"{source} does not exist; check the path")
        objects: list[ObjectInfo] = []
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for file in sorted(files):
                path = Path(folder, file)
                name = path.relative_to(root).as_posix()
                if not is_hidden(name) and path.is_file():
                    objects.append(ObjectInfo(name, path.stat().st_size))
        return Listing(source, False, tuple(objects))

    def exists(self, source: str) -> bool:
        return Path(source).exists()

    def read(self, uri: str) -> bytes:
        try:
            return Path(uri).read_bytes()
        except FileNotFoundError:
            raise SourceNotFoundError(f"{uri} does not exist; check the path") from None

    def write(self, uri: str, data: bytes) -> None:
        write_bytes_atomic(Path(uri), data)

    def upload(self, local: Path, uri: str) -> int:
        listing = self.list(normalize_source(local))
        for info in listing.objects:
            target = Path(uri) if listing.is_file else Path(uri) / info.name
            with atomic_path(target, 0o666) as temporary:  # the umask decides, as for a copy
                shutil.copyfile(listing.member(info.name), temporary)
        return len(listing.objects)

    def download(self, uri: str, dest: Path, expected: ObjectInfo | None = None) -> str:
        digest = hashlib.md5(usedforsecurity=False)
        if not Path(uri).is_file():
            raise SourceNotFoundError(f"{uri} does not exist; check the path")
        with Path(uri).open("rb") as source, dest.open("wb") as out:
            while block := source.read(CHUNK):
                digest.update(block)
                out.write(block)
        md5 = digest.hexdigest()
        check_expected(dest, md5, expected, uri)
        return md5
