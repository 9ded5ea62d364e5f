"""Checkpoints: the files on disk, and the saver that writes them during training.

- :mod:`~blocktrain.train.checkpoint.files`: the format (``step-N.pt`` + SHA-256 sidecar),
  atomic save, finding the newest good one, pruning, the best marker, RNG state, and
  ``CheckpointConfig``; torch is imported only when a function needs it;
- :mod:`~blocktrain.train.checkpoint.saver`: ``Checkpointer``, which snapshots a training
  state into reused buffers and writes it in the background, and ``resume_state``;
- :mod:`~blocktrain.train.checkpoint.args`: what an entry function keeps in every checkpoint
  (``record_args``) and reads back as its own dataclass (``recorded_args``).

Must not: decide when to stop or requeue (that is :mod:`blocktrain.restart`), or talk to Slurm.
"""

from blocktrain.train.checkpoint.files import CheckpointConfig

__all__ = ["CheckpointConfig"]
