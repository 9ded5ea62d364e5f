"""Datasets in a real S3 server (SeaweedFS), localized through both cache levels and read
through every dataset kind; server crashes mid-download, corrupted cache files, concurrent
processes, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from s3_service import S3Server

from blocktrain.data.cache import CacheConfig, localize
from blocktrain.data.datasets import InMemoryImageDataset, LazyImageDataset
from blocktrain.data.fetchers import ArchiveError, open_fetcher
from blocktrain.data.layouts import LabelMismatchError
from blocktrain.data.s3 import S3AccessError, S3Storage, S3UnreachableError
from blocktrain.data.storage import SourceNotFoundError
from data_samples import class_folders, mask_pairs, tar_folder, zip_folder

pytestmark = pytest.mark.integration
WORKER = Path(__file__).with_name("localize_worker.py")


def upload(server: S3Server, local: Path, uri: str) -> int:
    return server.storage().upload(local, uri)


def count_gets(storage: S3Storage) -> list[int]:
    """A one-item list counting the GetObject requests this storage sends from now on."""
    counter = [0]

    def on_get(**_: object) -> None:
        counter[0] += 1

    storage.client.meta.events.register("before-call.s3.GetObject", on_get)
    return counter


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def cache_config(tmp_path: Path) -> CacheConfig:
    return CacheConfig(persistent=tmp_path / "shared", ephemeral=tmp_path / "node")


def worker(
    server: S3Server, tmp_path: Path, source: str, *args: str, **env: str
) -> subprocess.Popen[str]:
    variables = server.process_env(
        DATA_PATH=str(tmp_path / "shared"), DATA_EPHEMERAL_PATH=str(tmp_path / "node"), **env
    )
    return subprocess.Popen(
        [sys.executable, str(WORKER), source, *args],
        env=variables, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def outcome(process: subprocess.Popen[str], timeout: float = 90) -> tuple[str, dict[str, object]]:
    out, err = process.communicate(timeout=timeout)
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return "ok", json.loads(line.removeprefix("RESULT "))
        if line.startswith("ERROR "):
            return "error", {"message": line.removeprefix("ERROR ")}
    raise AssertionError(f"worker printed no result (exit {process.returncode}):\n{out}\n{err}")


def test_localize_through_both_levels_and_read_every_kind(s3_server: S3Server, tmp_path: Path):
    samples = class_folders(tmp_path / "animals")
    zip_folder(tmp_path / "animals", tmp_path / "animals.zip")
    tar_folder(tmp_path / "animals", tmp_path / "animals.tar.gz")
    for name in ("animals", "animals.zip", "animals.tar.gz"):
        upload(s3_server, tmp_path / name, f"s3://datasets/both/{name}")
    config = cache_config(tmp_path)
    storage = s3_server.storage()
    gets = count_gets(storage)

    folder = localize("s3://datasets/both/animals", config=config, storage=storage)
    assert folder.parent == tmp_path / "node"
    persistent = config.persistent / folder.name
    assert files_of(folder) == files_of(persistent) == files_of(tmp_path / "animals")
    assert (config.persistent / f"{folder.name}.entry.json").exists()
    assert (tmp_path / "node" / f"{folder.name}.entry.json").exists()
    assert gets[0] == len(samples)
    assert localize("s3://datasets/both/animals/", config=config, storage=storage) == folder
    assert gets[0] == len(samples)  # complete in both levels: nothing fetched again

    archives = [
        localize(f"s3://datasets/both/{name}", config=config, storage=storage)
        for name in ("animals.zip", "animals.tar.gz")
    ]
    assert [p.name for p in archives] == ["animals.zip", "animals.tar.gz"]
    sources: list[str | Path] = [folder, *archives, "s3://datasets/both/animals"]
    for source in sources:
        for kind in (LazyImageDataset, InMemoryImageDataset):
            dataset = kind(source, storage=storage)
            assert dataset.classes == ("cat", "dog", "eel")
            assert list(dataset.keys) == sorted(samples)
            for index, key in enumerate(dataset.keys):
                image, label = dataset[index]
                assert torch.equal(image, samples[key][0]), (source, kind, key)
                assert label == samples[key][1]


def test_large_object_in_parts_and_parallel_fetch(s3_server: S3Server, tmp_path: Path):
    payload = torch.randint(0, 256, (21 * 2**20,), dtype=torch.uint8).numpy().tobytes()
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "blob.bin").write_bytes(payload)
    upload(s3_server, tmp_path / "big", "s3://datasets/big")
    head = s3_server.client().head_object(Bucket="datasets", Key="big/blob.bin")
    assert head["ETag"].strip('"').endswith("-3")  # uploaded in 3 parts of 8 MiB
    path = localize("s3://datasets/big", config=cache_config(tmp_path), storage=s3_server.storage())
    assert (path / "blob.bin").read_bytes() == payload


def test_server_killed_mid_download_is_retried_after_restart(
    own_s3_server: S3Server, tmp_path: Path
):
    class_folders(tmp_path / "many", per_class=20)
    files = upload(own_s3_server, tmp_path / "many", "s3://datasets/many")
    gets = tmp_path / "gets.log"
    process = worker(own_s3_server, tmp_path, "s3://datasets/many", "--gets", str(gets),
                     "--get-delay", "0.05", BLOCKTRAIN_S3_CONCURRENCY="2")  # fmt: skip
    wait_for_lines(gets, 20)
    own_s3_server.kill()
    time.sleep(1.0)
    own_s3_server.up()
    status, result = outcome(process)
    assert status == "ok", result
    path = Path(str(result["path"]))
    assert files_of(path) == files_of(tmp_path / "many")
    assert not [p for p in (tmp_path / "shared").rglob(".*") if p.is_file()]  # no temporaries
    assert int(str(result["gets"])) > files  # the interrupted GETs were sent again


def test_server_gone_gives_clear_error_and_no_half_entry(own_s3_server: S3Server, tmp_path: Path):
    class_folders(tmp_path / "many", per_class=20)
    files = upload(own_s3_server, tmp_path / "many", "s3://datasets/many")
    gets = tmp_path / "gets.log"
    own_s3_server.env["BLOCKTRAIN_S3_ATTEMPTS"] = "2"
    process = worker(own_s3_server, tmp_path, "s3://datasets/many", "--gets", str(gets),
                     "--get-delay", "0.05", BLOCKTRAIN_S3_CONCURRENCY="2")  # fmt: skip
    wait_for_lines(gets, 20)
    own_s3_server.kill()
    status, result = outcome(process)
    assert status == "error"
    message = str(result["message"])
    assert "cannot reach S3 at http://127.0.0.1:" in message
    assert "s3://datasets/many/" in message
    assert "S3_ENDPOINT_URL" in message
    shared = tmp_path / "shared"
    assert not list(shared.glob("*.entry.json"))  # never marked complete
    assert not [p for p in shared.rglob(".*") if p.is_file()]  # no temporaries
    placed = list(shared.rglob("*.png"))
    assert 0 < len(placed) < files

    own_s3_server.up()
    storage = own_s3_server.storage()
    counter = count_gets(storage)
    config = CacheConfig(persistent=shared)
    path = localize("s3://datasets/many", config=config, storage=storage)
    assert files_of(path) == files_of(tmp_path / "many")
    assert counter[0] == files - len(placed)  # the files placed before the crash were kept


def test_corrupt_cached_file_is_detected_and_fetched_again(s3_server: S3Server, tmp_path: Path):
    class_folders(tmp_path / "ds")
    upload(s3_server, tmp_path / "ds", "s3://datasets/corrupt")
    config = CacheConfig(persistent=tmp_path / "shared")
    storage = s3_server.storage()
    counter = count_gets(storage)
    path = localize("s3://datasets/corrupt", config=config, storage=storage)
    original = files_of(path)
    counter[0] = 0

    victim = path / "dog" / "001.png"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))  # same size, other content
    assert localize("s3://datasets/corrupt", config=config, storage=storage) == path
    assert counter[0] == 1
    assert files_of(path) == original

    stat = victim.stat()
    data = bytearray(victim.read_bytes())
    data[0] ^= 0xFF
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # hide the change from `stat`
    localize("s3://datasets/corrupt", config=config, storage=storage, verify="full")
    assert counter[0] == 2
    assert files_of(path) == original


def test_two_processes_localizing_at_once_download_once(s3_server: S3Server, tmp_path: Path):
    class_folders(tmp_path / "ds", per_class=10)
    files = upload(s3_server, tmp_path / "ds", "s3://datasets/once")
    gets = tmp_path / "gets.log"
    start = f"{time.time() + 2.0:.3f}"  # both start together, after their imports
    processes = [
        worker(s3_server, tmp_path, "s3://datasets/once", "--gets", str(gets), "--start-at", start)
        for _ in range(2)
    ]
    results = [outcome(process) for process in processes]
    assert [status for status, _ in results] == ["ok", "ok"], results
    paths = {str(result["path"]) for _, result in results}
    assert len(paths) == 1
    assert sum(int(str(result["gets"])) for _, result in results) == files
    assert len(gets.read_text().splitlines()) == files
    assert files_of(Path(paths.pop())) == files_of(tmp_path / "ds")


def test_bad_input_gives_one_clear_error_naming_the_path(s3_server: S3Server, tmp_path: Path):
    config = cache_config(tmp_path)
    storage = s3_server.storage()
    with pytest.raises(SourceNotFoundError, match=r"bucket 'no-such-bucket' does not exist"):
        localize("s3://no-such-bucket/ds", config=config, storage=storage)
    s3_server.client().create_bucket(Bucket="errors")
    with pytest.raises(SourceNotFoundError, match=r"nothing at s3://errors/missing"):
        localize("s3://errors/missing", config=config, storage=storage)

    wrong = S3Storage(
        type(storage.config)(endpoint_url=s3_server.env["S3_ENDPOINT_URL"], region="us-east-1",
                             access_key=s3_server.env["AWS_ACCESS_KEY_ID"], secret_key="wrong")
    )  # fmt: skip
    with pytest.raises(S3AccessError, match=r"refused access to s3://errors/x .*AWS_SECRET"):
        localize("s3://errors/x", config=config, storage=wrong)

    (tmp_path / "broken.zip").write_bytes(b"this is not a zip archive")
    upload(s3_server, tmp_path / "broken.zip", "s3://errors/broken.zip")
    local = localize("s3://errors/broken.zip", config=config, storage=storage)
    with pytest.raises(ArchiveError, match=rf"cannot read {local} as a zip archive"):
        open_fetcher(local)

    samples = tmp_path / "pairs"
    mask_pairs(samples)
    (samples / "labels" / "002.png").unlink()
    upload(s3_server, samples, "s3://errors/pairs")
    with pytest.raises(LabelMismatchError, match=r"s3://errors/pairs: 1 images have no label"):
        LazyImageDataset("s3://errors/pairs", layout="pairs", storage=storage)


def test_unreachable_endpoint_is_one_clear_error(tmp_path: Path):
    from blocktrain.core.retry import RetryPolicy
    from blocktrain.data.s3 import S3Config

    config = S3Config(
        endpoint_url="http://127.0.0.1:9", access_key="k", secret_key="s", region="us-east-1",
        retry=RetryPolicy(attempts=2, first_delay_s=0.01, max_delay_s=0.01),
    )  # fmt: skip
    with pytest.raises(
        S3UnreachableError, match=r"cannot reach S3 at http://127.0.0.1:9 for s3://b/k"
    ):
        localize("s3://b/k", config=cache_config(tmp_path), storage=S3Storage(config))


def wait_for_lines(path: Path, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.01)
    raise AssertionError(f"fewer than {count} GETs within {timeout} s")
