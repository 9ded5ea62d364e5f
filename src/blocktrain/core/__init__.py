"""Facts every other package shares, each with one owner.

- :mod:`~blocktrain.core.paths`: the project root and every path under ``.blocktrain/``;
- :mod:`~blocktrain.core.jobenv`: who this process is (rank, world size, job, attempt);
- :mod:`~blocktrain.core.atomic`: durable atomic writes and file locks;
- :mod:`~blocktrain.core.retry`: retries with exponential backoff (the policy and the loop);
- :mod:`~blocktrain.core.outcome`: how a run ended (finished, failed, killed, paused);
- :mod:`~blocktrain.core.values`, :mod:`~blocktrain.core.redact`: JSON values, secret masking;
- :mod:`~blocktrain.core.envvars`: every ``BLOCKTRAIN_*`` environment variable, declared once.

Must not: import torch, mlflow, submitit or any other blocktrain package (errors aside), or
start a subprocess. Everything here is cheap to import and pure but for the file writes.
"""
