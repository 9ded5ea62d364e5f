"""Run by the multi-node cache test in every task of one Slurm job: localize one S3 source
through both cache levels, DATA_PATH (shared) and DATA_EPHEMERAL_PATH (node-local scratch).

    python cache_worker.py SOURCE

Prints `RESULT {json}`: the node and rank, the local path, the GetObject requests this process
sent, and how many entries it filled in each level (the cache logs "fetching N files ... into
FOLDER" as it fills one).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from blocktrain.data.cache import CacheConfig, localize
from blocktrain.data.s3 import S3Config, S3Storage


class Fills(logging.Handler):
    """The folders the cache filled, from its "fetching ... into FOLDER" records."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.folders: list[Path] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("fetching ") and isinstance(record.args, tuple):
            self.folders.append(Path(str(record.args[-1])))


def main() -> int:
    config = CacheConfig.from_environ(os.environ)
    assert config.ephemeral is not None
    storage = S3Storage(S3Config.from_environ(os.environ))
    gets = 0

    def on_get(**_: Any) -> None:
        nonlocal gets
        gets += 1

    storage.client.meta.events.register("before-call.s3.GetObject", on_get)
    fills = Fills()
    logger = logging.getLogger("blocktrain.data")
    logger.addHandler(fills)
    logger.setLevel(logging.INFO)
    path = localize(sys.argv[1], config=config, storage=storage)
    result = {
        "node": os.environ["SLURMD_NODENAME"],
        "rank": int(os.environ["SLURM_PROCID"]),
        "path": str(path),
        "gets": gets,
        "persistent_fills": sum(f.is_relative_to(config.persistent) for f in fills.folders),
        "ephemeral_fills": sum(f.is_relative_to(config.ephemeral) for f in fills.folders),
    }
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
