"""blocktrain.lightning in one process: the resumable DataLoader, the refused settings, the
durable checkpoint files, the logger's params, and exact resumes of a Lightning Trainer
interrupted at any step (mid-epoch, at an epoch's end, between accumulated batches)."""

from __future__ import annotations

import signal
from pathlib import Path

import lightning as L  # noqa: N812
import pytest
import torch
from lightning.fabric.plugins.environments.slurm import SLURMEnvironment
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import nn
from torch.utils.data import DataLoader as TorchDataLoader
from torch.utils.data import TensorDataset

import blocktrain.lightning as bl
import blocktrain.restart
from blocktrain.core import checkpointfiles
from blocktrain.errors import BlocktrainError, RequeueRequested
from blocktrain.lightning.logger import hyperparameter_params


def dataset(n: int = 200) -> TensorDataset:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n, 8, generator=generator)
    return TensorDataset(x, torch.sin(x.sum(1, keepdim=True)))


def set_epoch(loader: bl.DataLoader, epoch: int) -> None:
    sampler = loader.sampler
    assert isinstance(sampler, bl.EpochRandomSampler)
    sampler.set_epoch(epoch)


def indices(loader) -> list[list[int]]:
    return [batch[0][:, 0].tolist() for batch in loader]


# -- the DataLoader ----------------------------------------------------------------------------


def test_the_order_of_an_epoch_depends_on_the_seed_and_the_epoch_alone():
    first, second = (bl.DataLoader(dataset(), batch_size=16, shuffle=True) for _ in range(2))
    torch.manual_seed(0)
    a = indices(first)
    torch.manual_seed(123)
    assert indices(second) == a
    set_epoch(first, 1)
    assert indices(first) != a
    other = bl.DataLoader(dataset(), batch_size=16, shuffle=True, seed=5)
    assert indices(other) != a


@pytest.mark.parametrize("workers", [0, 2])
def test_a_loaded_position_continues_with_the_next_batch(workers: int):
    loader = bl.DataLoader(dataset(), batch_size=16, shuffle=True, num_workers=workers)
    set_epoch(loader, 3)
    whole = indices(loader)
    iterator = iter(loader)
    for _ in range(5):
        next(iterator)
    state = loader.state_dict()
    assert state == {"epoch": 3, "batches": 5}

    resumed = bl.DataLoader(dataset(), batch_size=16, shuffle=True, num_workers=workers)
    resumed.load_state_dict(state)
    assert indices(resumed) == whole[5:]
    assert resumed.state_dict() == {"epoch": 3, "batches": len(whole)}
    assert len(resumed) == len(whole)  # the length of an epoch stays whole


def test_a_caller_that_counts_passes_from_zero_again_gets_the_run_s_epochs():
    """Fabric sets the sampler's epoch to the number of passes of this process."""
    loader = bl.DataLoader(dataset(), batch_size=16, shuffle=True)
    runs = []
    for epoch in range(3):
        set_epoch(loader, epoch)
        runs.append(indices(loader))
    resumed = bl.DataLoader(dataset(), batch_size=16, shuffle=True)
    resumed.load_state_dict({"epoch": 1, "batches": 4})
    set_epoch(resumed, 0)  # the new process's first pass
    assert indices(resumed) == runs[1][4:]
    set_epoch(resumed, 1)
    assert indices(resumed) == runs[2]


def test_a_finished_pass_rolls_over_to_the_next_epoch_for_lightning():
    loader = bl.DataLoader(dataset(), batch_size=16, shuffle=True)
    loader.load_state_dict({"epoch": 2, "batches": len(loader)})
    loader.roll_over_finished_pass()
    set_epoch(loader, 3)  # what Lightning sets before the pass
    expected = bl.DataLoader(dataset(), batch_size=16, shuffle=True)
    set_epoch(expected, 3)
    assert indices(loader) == indices(expected)


def test_an_iterable_dataset_is_refused():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield from range(3)

    with pytest.raises(BlocktrainError, match="map-style dataset"):
        bl.DataLoader(Stream())


# -- refused settings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "fix"),
    [
        (lambda _: {"strategy": "ddp_spawn"}, "use strategy='ddp' or leave it out"),
        (lambda _: {"strategy": "fsdp"}, "use strategy='ddp' or leave it out"),
        (lambda _: {"plugins": [SLURMEnvironment(auto_requeue=True)]}, "leave it out"),
        (
            lambda tmp: {"logger": MLFlowLogger(tracking_uri=f"sqlite:///{tmp}/mlflow.db")},
            "opens a new MLflow run in every attempt",
        ),
        (lambda _: {"enable_checkpointing": False}, "nothing to resume from"),
        (lambda _: {"devices": 4}, "set nodes and tasks_per_node in the profile"),
        (lambda _: {"num_nodes": 2}, "set nodes and tasks_per_node in the profile"),
    ],
    ids=[
        "spawn",
        "fsdp",
        "slurm-environment",
        "mlflow-logger",
        "no-checkpoints",
        "devices",
        "nodes",
    ],
)
def test_settings_blocktrain_cannot_requeue_are_refused_with_the_fix(settings, fix, tmp_path):
    problem = bl.refusal(settings(tmp_path))
    assert problem is not None
    assert fix in problem
    assert "\n" not in problem
    with pytest.raises(BlocktrainError) as refused:
        bl.trainer(**settings(tmp_path))
    assert str(refused.value) == problem


def test_settings_it_can_run_pass(tmp_path: Path):
    assert bl.refusal({"strategy": "ddp", "devices": 1, "logger": CSVLogger(tmp_path)}) is None
    trainer = bl.trainer(max_epochs=1, logger=CSVLogger(tmp_path))
    assert isinstance(trainer.strategy.checkpoint_io, bl.DurableCheckpointIO)
    # Lightning adds no ModelCheckpoint of its own, which would write outside the run's folder.
    assert [type(c) for c in trainer.checkpoint_callbacks] == [bl.Restartable]
    assert [type(x).__name__ for x in trainer.loggers] == ["CSVLogger", "BlocktrainLogger"]


# -- checkpoint files and params --------------------------------------------------------------


def test_checkpoint_files_are_checksummed_and_a_torn_one_is_refused(tmp_path: Path):
    io = bl.DurableCheckpointIO()
    path = tmp_path / "epoch=0.ckpt"
    io.save_checkpoint({"state": torch.arange(3)}, path)
    assert checkpointfiles.is_good(path)
    assert torch.equal(io.load_checkpoint(path)["state"], torch.arange(3))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(BlocktrainError, match="does not match the checksum"):
        io.load_checkpoint(path)
    io.remove_checkpoint(path)
    assert list(tmp_path.iterdir()) == []


def test_hyperparameters_become_params_under_their_own_prefix():
    params = hyperparameter_params({"lr": 0.1, "net": {"hidden": 32}, "name": None})
    assert params == {"lightning.lr": 0.1, "lightning.net/hidden": 32, "lightning.name": "None"}


# -- exact resumes of a Trainer ---------------------------------------------------------------


class Net(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self) -> OptimizerLRScheduler:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, 7, 0.9)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class Interrupt(Callback):
    """Stands for a killed attempt: it ends the fit as step ``at`` starts."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.handler: object = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.handler = signal.getsignal(signal.SIGTERM)
        if trainer.global_step == self.at:
            raise KeyboardInterrupt  # Lightning's own way out: sys.exit(1) after its teardown


class Recorder(Logger):
    """The points Lightning logs, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.points: list[tuple[int, str, float]] = []

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> str:
        return "0"

    def log_metrics(self, metrics, step=None):
        self.points += [(int(step or 0), key, float(value)) for key, value in metrics.items()]

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def fit(
    folder: Path,
    monkeypatch,
    *,
    every: int | None = None,
    stop_at: int | None = None,
    accumulate: int = 1,
    logger: Recorder | None = None,
    callbacks: list[Callback] | None = None,
    leaves_with: type[BaseException] | None = None,
) -> dict[str, torch.Tensor]:
    monkeypatch.setenv("BLOCKTRAIN_CHECKPOINT_DIR", str(folder))
    torch.manual_seed(0)
    model = Net()
    added = [*(callbacks or []), *([Interrupt(stop_at)] if stop_at is not None else [])]
    trainer = bl.trainer(
        max_epochs=3, every_steps=every, callbacks=added, accumulate_grad_batches=accumulate,
        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
        logger=logger if logger is not None else False,
    )  # fmt: skip
    data = bl.DataLoader(dataset(), batch_size=16, shuffle=True)
    leaves = leaves_with or (SystemExit if stop_at is not None else None)
    with pytest.raises(leaves) if leaves is not None else Nothing():
        trainer.fit(model, data, data, ckpt_path=bl.resume_path())
    return {k: v.clone() for k, v in model.state_dict().items()}


class Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize(
    "case",  # (checkpoint every, killed as this step starts, checkpoint left, accumulation)
    [(5, 5, 5, 1), (13, 14, 14, 1), (25, 25, 25, 1), (38, 38, 38, 1), (4, 4, 4, 2), (7, 8, 8, 2)],
    ids=["mid-epoch", "after-an-epoch", "epoch-2", "next-to-last", "accumulating", "odd-batches"],
)
def test_a_fit_killed_at_any_step_resumes_to_the_uninterrupted_weights(
    tmp_path: Path, monkeypatch, case: tuple[int, int, int, int]
):
    """13 batches an epoch: step 13 ends one, and its checkpoint waits for step 14 (Lightning
    would resume past the epoch's validation); with accumulation over two batches an epoch has 7
    optimizer steps, the last of one batch."""
    every, killed_at, saved, accumulate = case
    whole = fit(tmp_path / "whole", monkeypatch, accumulate=accumulate)
    cut = tmp_path / "cut"
    fit(cut, monkeypatch, every=every, stop_at=killed_at, accumulate=accumulate)
    assert checkpointfiles.newest_good(cut) == checkpointfiles.checkpoint_path(cut, saved)
    resumed = fit(cut, monkeypatch, accumulate=accumulate)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


class Steps(Callback):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append(trainer.global_step)


@pytest.mark.parametrize("signalled_at", [5, 11, 12])
def test_a_stop_checkpoints_logs_its_step_leaves_and_resumes_exactly(
    tmp_path: Path, monkeypatch, signalled_at: int
):
    """The ranks act a step after the signal (the agreement is read a step later); a stop
    agreed at an epoch's last step (13) waits for the next one. Outside a launched job
    restart.stop_now raises RequeueRequested, as a requeue does."""
    whole_log, cut_log, resumed_log = Recorder(), Recorder(), Recorder()
    whole = fit(tmp_path / "whole", monkeypatch, logger=whole_log)
    steps = Steps()
    monkeypatch.setattr(
        blocktrain.restart, "signalled", lambda: bool(steps.seen) and steps.seen[-1] >= signalled_at
    )
    cut = tmp_path / "cut"
    fit(cut, monkeypatch, logger=cut_log, callbacks=[steps], leaves_with=RequeueRequested)
    stopped = signalled_at + 1 if signalled_at + 1 != 13 else 14
    assert checkpointfiles.newest_good(cut) == checkpointfiles.checkpoint_path(cut, stopped)
    assert max(step for step, _, _ in cut_log.points) == stopped - 1  # its own step's point too
    monkeypatch.setattr(blocktrain.restart, "signalled", lambda: False)
    resumed = fit(cut, monkeypatch, logger=resumed_log)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert sorted(cut_log.points + resumed_log.points) == sorted(whole_log.points)


def test_blocktrain_s_sigterm_handler_stays_in_place_while_training(tmp_path: Path, monkeypatch):
    def ours(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, ours)
    try:
        monkeypatch.setenv("BLOCKTRAIN_CHECKPOINT_DIR", str(tmp_path))
        watcher = Interrupt(at=-1)
        trainer = bl.trainer(
            max_steps=3, callbacks=[watcher], enable_progress_bar=False, logger=False
        )
        trainer.fit(Net(), bl.DataLoader(dataset(), batch_size=16))
        assert watcher.handler is ours
        assert signal.getsignal(signal.SIGTERM) is ours
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_plain_dataloader_and_a_fit_that_ignores_the_checkpoint_are_refused(
    tmp_path: Path, monkeypatch
):
    monkeypatch.setenv("BLOCKTRAIN_CHECKPOINT_DIR", str(tmp_path))
    trainer = bl.trainer(max_steps=2, enable_progress_bar=False, logger=False)
    with pytest.raises(BlocktrainError, match=r"use blocktrain\.lightning\.DataLoader"):
        trainer.fit(Net(), TorchDataLoader(dataset(), batch_size=16))
    fit(tmp_path, monkeypatch)  # leaves a checkpoint
    trainer = bl.trainer(max_epochs=4, enable_progress_bar=False, logger=False)
    with pytest.raises(
        BlocktrainError, match=r"pass ckpt_path=blocktrain.lightning.resume_path\(\)"
    ):
        trainer.fit(Net(), bl.DataLoader(dataset(), batch_size=16))


# -- without Lightning ------------------------------------------------------------------------


def test_without_lightning_an_entry_module_and_the_package_say_how_to_install_it(
    tmp_path: Path, monkeypatch
):
    import importlib
    import sys

    from blocktrain.entry.loader import load_entry

    (tmp_path / "needs_lightning.py").write_text("import lightning\n\ndef train():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "lightning", None)  # import lightning fails, as uninstalled
    with pytest.raises(BlocktrainError) as refused:
        load_entry("needs_lightning:train")
    [line] = str(refused.value).splitlines()
    assert line.endswith("(blocktrain's 'lightning' extra: pip install 'blocktrain[lightning]')")
    for name in [m for m in sys.modules if m.startswith("blocktrain.lightning")]:
        monkeypatch.delitem(sys.modules, name)
    # A class of the package imported anew: known by its name and its bases.
    with pytest.raises(ImportError, match=r"pip install 'blocktrain\[lightning\]'") as missing:
        importlib.import_module("blocktrain.lightning")
    assert type(missing.value).__name__ == "LightningMissingError"
    assert isinstance(missing.value, BlocktrainError)


# -- exports ----------------------------------------------------------------------------------


def test_the_best_or_the_last_weights_are_exported_into_the_run_s_folder(
    tmp_path: Path, monkeypatch
):
    from blocktrain.train import ExportConfig

    monkeypatch.setenv("BLOCKTRAIN_CHECKPOINT_DIR", str(tmp_path / "run" / "checkpoints"))
    torch.manual_seed(0)
    best = ModelCheckpoint(dirpath=tmp_path / "lightning", monitor="val_loss", save_top_k=1)
    trainer = bl.trainer(max_epochs=3, callbacks=[best], enable_progress_bar=False, logger=False)
    data = bl.DataLoader(dataset(), batch_size=16, shuffle=True)
    model = Net()
    trainer.fit(model, data, data, ckpt_path=bl.resume_path())
    sample = dataset()[:4][0]

    exported = bl.export(trainer, sample, ExportConfig(formats=("pth", "torchscript")))
    assert exported is not None
    assert exported.files["pth"].parent == tmp_path / "run" / "exports"
    written = torch.load(exported.files["pth"])
    kept = torch.load(best.best_model_path, weights_only=False)["state_dict"]
    assert checkpointfiles.is_good(Path(best.best_model_path))  # Lightning's file, checksummed
    assert all(torch.equal(written[k], kept[k]) for k in kept)
    scripted = torch.jit.load(exported.files["torchscript"])
    model.load_state_dict(kept)
    model.eval()
    assert torch.allclose(scripted(sample), model(sample))

    last = ExportConfig(formats=("pth",), weights="last", folder=tmp_path / "last")
    exported = bl.export(trainer, sample, last)
    assert exported is not None
    trained = torch.load(exported.files["pth"])
    assert all(torch.equal(trained[k], trainer.lightning_module.state_dict()[k]) for k in trained)
