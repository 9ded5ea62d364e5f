"""Fetchers on real folders, zip, tar and tar.gz files: listing, reading single members,
one-pass reading, pickling into another process, unsafe and damaged archives."""

import io
import multiprocessing
import pickle
import tarfile
import zipfile
from pathlib import Path

import pytest

from blocktrain.data.fetchers import ArchiveError, TarFetcher, ZipFetcher, open_fetcher
from blocktrain.data.names import UnsafeNameError
from blocktrain.data.storage import SourceNotFoundError
from blocktrain.errors import BlocktrainError

MEMBERS = {
    "a/one.txt": b"one",
    "a/b/two.bin": bytes(range(256)) * 40,
    "three.txt": b"three" * 1000,
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "folder"
    for name, data in MEMBERS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / ".hidden").write_bytes(b"x")
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "junk").write_bytes(b"x")
    return root


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a/", b"")  # a folder entry: not a member
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def make_tar(path: Path, members: dict[str, bytes], gz: bool = False) -> Path:
    with tarfile.open(path, "w:gz" if gz else "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(params=["folder", "zip", "tar", "tar.gz", "tgz-sniffed"])
def source(request: pytest.FixtureRequest, folder: Path, tmp_path: Path) -> Path:
    kind = request.param
    if kind == "folder":
        return folder
    if kind == "zip":
        return make_zip(tmp_path / "data.zip", MEMBERS)
    if kind == "tar":
        return make_tar(tmp_path / "data.tar", MEMBERS)
    if kind == "tar.gz":
        return make_tar(tmp_path / "data.tar.gz", MEMBERS, gz=True)
    return make_tar(tmp_path / "data.bin", MEMBERS, gz=True)  # no suffix: recognised by content


def test_lists_and_reads_members(source: Path):
    fetcher = open_fetcher(source)
    assert fetcher.names() == sorted(MEMBERS)
    for name, data in MEMBERS.items():
        assert fetcher.read(name) == data
    assert dict(fetcher.items()) == MEMBERS
    assert dict(fetcher.items(["three.txt"])) == {"three.txt": MEMBERS["three.txt"]}
    with pytest.raises(SourceNotFoundError, match="has no member 'nope'"):
        fetcher.read("nope")
    fetcher.close()


def read_in_child(blob: bytes, name: str, queue: "multiprocessing.Queue[bytes]") -> None:
    queue.put(pickle.loads(blob).read(name))  # noqa: S301 - our own bytes


def test_a_pickled_fetcher_reads_in_another_process(source: Path):
    fetcher = open_fetcher(source)
    fetcher.read("a/one.txt")  # an open handle in this process must not travel
    blob = pickle.dumps(fetcher)
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[bytes] = context.Queue()
    child = context.Process(target=read_in_child, args=(blob, "a/b/two.bin", queue))
    child.start()
    assert queue.get(timeout=30) == MEMBERS["a/b/two.bin"]
    child.join(30)
    assert fetcher.read("three.txt") == MEMBERS["three.txt"]


def test_uncompressed_tar_reads_members_at_their_offsets(tmp_path: Path):
    fetcher = TarFetcher(make_tar(tmp_path / "data.tar", MEMBERS))
    assert not fetcher.compressed
    assert TarFetcher(make_tar(tmp_path / "data.tgz", MEMBERS, gz=True)).compressed
    assert fetcher.read("a/b/two.bin") == MEMBERS["a/b/two.bin"]


@pytest.mark.parametrize("bad", ["../escape.txt", "/etc/passwd", "a/../../escape.txt"])
def test_archives_with_unsafe_names_are_refused(tmp_path: Path, bad: str):
    members = {"ok.txt": b"ok", bad: b"evil"}
    for path in (make_zip(tmp_path / "bad.zip", members), make_tar(tmp_path / "bad.tar", members)):
        with pytest.raises(UnsafeNameError, match=rf"^{path}: member '{bad}'"):
            open_fetcher(path)


def test_damaged_archives_are_one_clear_error(tmp_path: Path):
    (tmp_path / "junk.zip").write_bytes(b"not a zip at all")
    with pytest.raises(ArchiveError, match=rf"cannot read {tmp_path}/junk.zip as a zip archive"):
        open_fetcher(tmp_path / "junk.zip")
    (tmp_path / "junk.tar.gz").write_bytes(b"\x1f\x8b\x08 truncated gzip")
    with pytest.raises(ArchiveError, match=rf"cannot read {tmp_path}/junk.tar.gz as a tar"):
        open_fetcher(tmp_path / "junk.tar.gz")
    (tmp_path / "junk.dat").write_bytes(b"neither")
    with pytest.raises(ArchiveError, match="is neither a folder, a zip nor a tar"):
        open_fetcher(tmp_path / "junk.dat")
    with pytest.raises(SourceNotFoundError, match="missing does not exist"):
        open_fetcher(tmp_path / "missing")


def test_corrupt_member_names_the_member(tmp_path: Path):
    path = make_zip(tmp_path / "data.zip", {"big.bin": bytes(100_000)})
    fetcher = ZipFetcher(path)
    raw = bytearray(path.read_bytes())
    start = raw.index(b"big.bin") + len("big.bin")
    raw[start + 10 : start + 40] = bytes(30)  # inside the compressed data
    path.write_bytes(bytes(raw))
    fetcher.close()
    with pytest.raises(ArchiveError, match=rf"member 'big.bin' of {path}"):
        ZipFetcher(path).read("big.bin")


def test_s3_archives_must_be_localized_first():
    with pytest.raises(BlocktrainError, match=r"is an archive in S3; fetch it first"):
        open_fetcher("s3://bucket/data.tar.gz")
