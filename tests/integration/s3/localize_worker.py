"""Run by the S3 tests as a process of its own: localize one source, counting its GETs.

    python localize_worker.py SOURCE [--gets FILE] [--get-delay S] [--start-at EPOCH]

The environment carries the server's variables and DATA_PATH / DATA_EPHEMERAL_PATH. Every
GetObject request appends a line to FILE (so the test can watch progress) and may first sleep
S seconds (so a test can stop the server mid-download). Prints `RESULT {json}` with the local
path and this process's GET count, or `ERROR message` and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from blocktrain.data.cache import localize
from blocktrain.data.s3 import S3Config, S3Storage
from blocktrain.errors import BlocktrainError


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("--gets", type=Path)
    parser.add_argument("--get-delay", type=float, default=0.0)
    parser.add_argument("--start-at", type=float, default=0.0)
    args = parser.parse_args()
    storage = S3Storage(S3Config.from_environ(os.environ))
    lock = threading.Lock()
    count = 0

    def on_get(**_: Any) -> None:
        nonlocal count
        with lock:
            count += 1
            if args.gets is not None:
                with args.gets.open("a") as out:
                    out.write(f"{os.getpid()}\n")
        if args.get_delay:
            time.sleep(args.get_delay)

    storage.client.meta.events.register("before-call.s3.GetObject", on_get)
    time.sleep(max(0.0, args.start_at - time.time()))
    try:
        path = localize(args.source, storage=storage)
    except BlocktrainError as error:
        print(f"ERROR {error}", flush=True)
        return 2
    print("RESULT " + json.dumps({"path": str(path), "gets": count}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
