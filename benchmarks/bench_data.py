"""Dataset cache throughput against a real S3 server (SeaweedFS, started here by scripts/local-s3).

    .venv/bin/python benchmarks/bench_data.py

Epoch 1: a prefix of many small files fetched from S3 into an empty cache by ``localize``
(parallel GETs, checked and placed atomically, fsynced) against a sequential boto3 loop
(list, then get_object and write each file), the way a script without the cache would do it;
once against the server on this machine, once with 5 ms added before every GET (a sleep in a
boto3 event hook, for both) to stand for a remote endpoint's round trip. With the server on a
machine of few cores, boto3's CPU cost per request (under the GIL) and the server's own share
of the CPUs bound the gain of parallel GETs; waiting on the network is what they overlap.

Epoch 2: every file read from the cache's copy against the same files read straight from local
disk (both already in the page cache, runs alternating); the cache adds no layer to reads, so
the goal is a ratio of at least 0.95. It also prints what the warm ``localize`` call (the check
of a complete entry at job start) costs. Each figure is a median; nothing is asserted.
"""

from __future__ import annotations

import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from botocore.hooks import BaseEventHooks

from blocktrain.data.cache import CacheConfig, localize
from blocktrain.data.s3 import S3Config, S3Storage

ROOT = Path(__file__).resolve().parent.parent
FILES = 500
FILE_BYTES = 64 * 1024
REPEATS = 3
READ_REPEATS = 21
# 0: the server on this machine; 5 ms: a remote endpoint's round trip, simulated.
LATENCIES_S = (0.0, 0.005)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")


def start_server(state: Path) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "local-s3"), "up", "--dir", str(state)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"local-s3 up failed:\n{done.stderr}")
    env: dict[str, str] = {}
    for line in done.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = shlex.split(value)[0]
    return env


def stop_server(state: Path) -> None:
    script = str(ROOT / "scripts" / "local-s3")
    subprocess.run(
        [sys.executable, script, "down", "--purge", "--dir", str(state)],
        capture_output=True, check=False,
    )  # fmt: skip


def make_dataset(folder: Path) -> None:
    for index in range(FILES):
        path = folder / f"class{index % 10}" / f"{index:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(FILE_BYTES))


def median_time(run: Callable[[], object], prepare: Callable[[], object] = lambda: None) -> float:
    times: list[float] = []
    for _ in range(REPEATS):
        prepare()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(first: Callable[[], object], second: Callable[[], object]) -> tuple[float, float]:
    """Medians of many short runs of each, alternating, so that load from other processes
    on the machine hits both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(READ_REPEATS):
        for run, into in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            run()
            into.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def read_all(folder: Path) -> int:
    total = 0
    for path in sorted(folder.rglob("*.bin")):
        total += len(path.read_bytes())
    return total


def add_latency(events: BaseEventHooks, seconds: float) -> None:
    """Wait before each GET, as a request to a remote endpoint would (GIL released)."""
    if seconds:
        events.register("before-call.s3.GetObject", lambda **_: time.sleep(seconds))


def sequential_boto3(
    env: dict[str, str], bucket: str, prefix: str, dest: Path, latency_s: float
) -> None:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=env["S3_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    add_latency(client.meta.events, latency_s)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item.get("Key", "")
            target = dest / key[len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())


def epoch_one(
    env: dict[str, str],
    work: Path,
    config: CacheConfig,
    latency: float,
    fresh_cache: Callable[[], None],
) -> tuple[float, float]:
    """Seconds for localize (parallel) and for the sequential loop, into empty folders."""
    remote = S3Storage(S3Config.from_environ(env))
    add_latency(remote.client.meta.events, latency)
    parallel_s = median_time(
        lambda: localize("s3://bench/ds", config=config, storage=remote), fresh_cache
    )
    loop_s = median_time(
        lambda: sequential_boto3(env, "bench", "ds/", work / "loop", latency), fresh_cache
    )
    return parallel_s, loop_s


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-data-") as folder:
        work = Path(folder)
        env = start_server(work / "s3")
        try:
            make_dataset(work / "source")
            storage = S3Storage(S3Config.from_environ(env))
            storage.upload(work / "source", "s3://bench/ds")
            megabytes = FILES * FILE_BYTES / 1e6
            cache = work / "cache"
            config = CacheConfig(persistent=cache)

            def fresh_cache() -> None:
                shutil.rmtree(cache, ignore_errors=True)
                shutil.rmtree(work / "loop", ignore_errors=True)

            epoch1 = {
                latency: epoch_one(env, work, config, latency, fresh_cache)
                for latency in LATENCIES_S
            }
            local = localize("s3://bench/ds", config=config, storage=storage)
            warm_s = median_time(lambda: localize("s3://bench/ds", config=config, storage=storage))
            for warm_up in (local, work / "source"):
                read_all(warm_up)  # both in the page cache
            cached_s, direct_s = interleaved(
                lambda: read_all(local), lambda: read_all(work / "source")
            )
        finally:
            stop_server(work / "s3")
    say(f"dataset: {FILES} files of {FILE_BYTES // 1024} KiB ({megabytes:.1f} MB); "
        f"epoch 1: median of {REPEATS} runs, epoch 2: of {READ_REPEATS}")  # fmt: skip
    for latency, (parallel_s, loop_s) in epoch1.items():
        where = f"+{latency * 1000:.0f} ms per GET" if latency else "local server"
        rows = [
            (f"epoch 1 ({where}), localize, {storage.concurrency} parallel GETs", parallel_s),
            (f"epoch 1 ({where}), sequential boto3 loop", loop_s),
        ]
        for label, seconds in rows:
            say(f"{label:<56} {seconds:8.3f} s {megabytes / seconds:9.1f} MB/s")
        say(f"{'  ratio parallel / sequential (speed-up)':<56} {loop_s / parallel_s:8.2f}")
    for label, seconds in (
        ("epoch 2, read from the cache", cached_s),
        ("epoch 2, read from local disk directly", direct_s),
    ):
        say(f"{label:<56} {seconds:8.3f} s {megabytes / seconds:9.1f} MB/s")
    say(f"{'  ratio cache / direct (goal >= 0.95)':<56} {direct_s / cached_s:8.3f}")
    say(f"{'warm localize() of the complete entry':<56} {warm_s * 1000:8.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
