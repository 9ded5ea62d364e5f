"""Lightning code under blocktrain's restarts and tracking: ``L.Trainer`` and ``L.Fabric``.

What a Lightning script adds (docs/lightning.md)::

    trainer = blocktrain.lightning.trainer(max_epochs=20)       # instead of L.Trainer(...)
    trainer.fit(model, loader, ckpt_path=blocktrain.lightning.resume_path())

with its training data in a :class:`DataLoader` (torch's, with its position in the epoch in
every checkpoint). A Fabric loop takes :func:`fabric` and :class:`Restarts`.

- :mod:`.trainer`: :func:`trainer`, :func:`fabric`, :func:`resume_path`, and the settings
  blocktrain refuses, each with its fix;
- :mod:`.callback`: :class:`Restartable`, the restart protocol at the Trainer's step boundaries;
- :mod:`.fabric`: :class:`Restarts`, the same for a Fabric loop;
- :mod:`.plugins`: the job's ranks as Lightning's cluster environment, and atomic, checksummed
  checkpoint files;
- :mod:`.logger`: :class:`BlocktrainLogger`, Lightning's metrics and hyperparameters into the
  run;
- :mod:`.data`: :class:`DataLoader`, resumable mid-epoch;
- :mod:`.exports`: :func:`export`, the trained module in the Trainer's export formats, into
  the run.

Lightning is an optional extra (``blocktrain[lightning]``): without it, importing this package
raises an ImportError that says so (the launcher prints it on one line, exit status 2). Nothing
else in blocktrain imports this package.
"""

from blocktrain.lightning._requirement import LightningMissingError
from blocktrain.lightning.callback import Restartable
from blocktrain.lightning.data import DataLoader, EpochRandomSampler
from blocktrain.lightning.exports import export
from blocktrain.lightning.fabric import Restarts
from blocktrain.lightning.logger import BlocktrainLogger
from blocktrain.lightning.plugins import BlocktrainEnvironment, DurableCheckpointIO
from blocktrain.lightning.trainer import fabric, refusal, resume_path, trainer

__all__ = [
    "BlocktrainEnvironment",
    "BlocktrainLogger",
    "DataLoader",
    "DurableCheckpointIO",
    "EpochRandomSampler",
    "LightningMissingError",
    "Restartable",
    "Restarts",
    "export",
    "fabric",
    "refusal",
    "resume_path",
    "trainer",
]
