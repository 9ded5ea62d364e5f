"""What a training leaves for people: progress lines or bar, plots, exported model files."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn
from trainkit import TinyNet

from blocktrain.train import ExportConfig
from blocktrain.train.export import ExportError, export_model
from blocktrain.train.plots import confusion_matrix, curves
from blocktrain.train.progress import Display

PNG = b"\x89PNG\r\n\x1a\n"


def test_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    display = Display(100, enabled=True, bar=False, stream=out)
    display.step()
    display.values(0, {"train_loss": 1.23456, "lr": 0.1})
    display.step()  # not a logging step: nothing
    display.note("epoch   1  val_loss 0.5")
    display.close()
    assert out.getvalue() == "step    0  loss 1.235  lr 0.1\nepoch   1  val_loss 0.5\n"


def test_a_bar_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    display = Display(10, 2, enabled=True, bar=True, stream=out)
    display.step()
    display.values(2, {"train_loss": 0.5})
    display.note("evaluated")
    display.close()
    err = capsys.readouterr().err
    assert "3/10" in err
    assert "loss 0.5" in err
    assert out.getvalue() == ""  # the bar owns the screen; notes go through it


def test_nothing_off_rank_zero(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    display = Display(10, enabled=False, bar=True, stream=out)
    display.step()
    display.values(0, {"train_loss": 0.5})
    display.note("x")
    display.close()
    assert out.getvalue() == ""
    assert capsys.readouterr().err == ""


def test_plots_are_png_files_without_pyplot(tmp_path: Path) -> None:
    matrix = confusion_matrix([[5, 1], [0, 7]], tmp_path / "plots" / "cm.png", ["cat", "dog"])
    history = {"train_loss": [(0, 1.0), (10, 0.5)], "val_loss": [(9, 0.7)], "val_acc": [(9, 0.8)]}
    drawn = curves(history, tmp_path / "plots" / "curves.png")
    assert matrix.read_bytes().startswith(PNG)
    assert drawn.read_bytes().startswith(PNG)
    # In a process of its own: other tests' libraries (Lightning) import pyplot into this one.
    script = (
        "import sys; from pathlib import Path; from blocktrain.train.plots import curves; "
        f"curves({{'loss': [(0, 1.0), (1, 0.5)]}}, Path({str(tmp_path / 'again.png')!r})); "
        "sys.exit('matplotlib.pyplot' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", script], check=False).returncode == 0


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_export_all_formats_reproduce_pytorch(tmp_path: Path) -> None:
    model = TinyNet(dropout=0.5)
    sample = torch.randn(4, 1, 6, 6)
    exported = export_model(model, sample, tmp_path, ExportConfig())
    assert set(exported.files) == {"pth", "torchscript", "onnx", "mlflow"}
    assert exported.max_abs_diff["torchscript"] == 0.0
    assert exported.max_abs_diff["onnx"] < 1e-4
    assert model.training  # the caller's model is left as it was

    reference = TinyNet().eval()
    reference.load_state_dict(torch.load(tmp_path / "model.pth"))
    other_batch = torch.randn(7, 1, 6, 6)  # another batch size: the batch dimension is dynamic
    expected = reference(other_batch).detach().numpy()
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    [onnx_output] = session.run(None, {"input": other_batch.numpy()})
    np.testing.assert_allclose(np.asarray(onnx_output), expected, rtol=1e-4, atol=1e-5)
    scripted = torch.jit.load(str(tmp_path / "model.pt"))
    np.testing.assert_allclose(scripted(other_batch).detach().numpy(), expected, rtol=1e-5)

    import mlflow.pytorch
    from mlflow.models import Model

    signature = Model.load(str(tmp_path / "mlflow_model")).signature
    assert signature is not None
    assert tuple(signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, 1, 6, 6)
    loaded = mlflow.pytorch.load_model(str(tmp_path / "mlflow_model"))  # pyright: ignore[reportPrivateImportUsage]
    np.testing.assert_allclose(loaded(other_batch).detach().numpy(), expected, rtol=1e-5)


class Branchy(nn.Module):
    """Control flow on data: tracing keeps one branch, torch.export cannot export it."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale if x.sum() > 0 else x / self.scale


def test_export_names_every_failure_and_keeps_the_rest(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"failed for onnx: .*drop the format from ExportConfig"):
        export_model(Branchy(), torch.ones(2, 3), tmp_path, ExportConfig(formats=("pth", "onnx")))
    assert (tmp_path / "model.pth").exists()


def test_export_loads_the_given_weights(tmp_path: Path) -> None:
    model, best = TinyNet(seed=1), TinyNet(seed=2)
    export_model(
        model,
        torch.randn(2, 1, 6, 6),
        tmp_path,
        ExportConfig(formats=("pth",)),
        weights=best.state_dict(),
    )
    saved = torch.load(tmp_path / "model.pth")
    assert all(torch.equal(saved[k], v) for k, v in best.state_dict().items())


EXPORT_THEN_WARN = """
import logging, sys, torch
from pathlib import Path
from blocktrain.train import ExportConfig
from blocktrain.train.export import export_model
export_model(torch.nn.Linear(3, 2), torch.ones(2, 3), Path(sys.argv[1]), ExportConfig(formats=("mlflow",)))
logging.getLogger("blocktrain.track").warning("a warning after the export")
"""


def test_the_mlflow_export_leaves_warnings_audible(tmp_path: Path) -> None:
    """Importing mlflow.pytorch sets the root logger to ERROR; the export undoes that."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", EXPORT_THEN_WARN, str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert (tmp_path / "mlflow_model" / "MLmodel").exists()
    assert "a warning after the export" in done.stderr
