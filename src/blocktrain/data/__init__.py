"""Datasets: storage (local or S3), a two-level cache, archive fetchers, torch datasets.

Modules, from the bottom up:

- ``names``: pure naming rules (S3 URIs, member names, ``-tiny`` variants, entry names).
- ``integrity``: MD5 digests and S3 ETags. ``parallel``: a thread pool.
- ``objects``: the ``Storage`` protocol and what it lists; ``localfs``: files on disk;
  ``s3``: S3 through boto3; ``storage``: ``storage_for`` picks one (``s3`` only for
  ``s3://``).
- ``cache``: ``localize`` through the two cache levels; its parts ``cache.config``,
  ``cache.manifest``, ``cache.locks``, ``cache.fill``, ``cache.reports``.
- ``fetchers``: members of a folder, zip, tar or S3 prefix, one at a time.
- ``layouts``: the (image, label) index of a source; ``images``: decoding members.
- ``memory``: whether a preloaded dataset fits; ``datasets``: lazy and in-memory datasets;
  ``tensorcache``: a dataset preprocessed once into one tensor file.
- ``splits``: deterministic splits; ``stats``: dataset statistics; ``augment``: transforms.

Atomic writes and locks come from ``blocktrain.core.atomic``, retries with backoff from
``blocktrain.core.retry``. The modules import torch, torchvision and boto3 only where they are
used, so importing ``blocktrain.data.cache`` or ``blocktrain.data.splits`` stays cheap. See
``docs/data.md``.
"""

from blocktrain.data.cache import CacheConfig, localize

__all__ = ["CacheConfig", "localize"]
