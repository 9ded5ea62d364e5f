"""Datasets: storage (local or S3), a two-level cache, archive fetchers, torch datasets.

The modules import torch, torchvision and boto3 only where they are used, so importing
``blocktrain.data.cache`` or ``blocktrain.data.splits`` stays cheap. See ``docs/data.md``.
"""
