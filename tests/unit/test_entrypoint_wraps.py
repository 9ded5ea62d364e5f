import inspect

import pytest

import blocktrain
from blocktrain.entry import main


@blocktrain.entrypoint
def train(*, epochs: int = 3, lr: float = 0.1) -> dict[str, float]:
    """Train something.

    Args:
        epochs: passes over the data
        lr: learning rate
    """
    return {"epochs": epochs, "lr": lr}


def test_entrypoint_keeps_signature_and_docstring():
    assert (
        str(inspect.signature(train)) == "(*, epochs: int = 3, lr: float = 0.1) -> dict[str, float]"
    )
    assert train.__doc__ is not None
    assert train.__doc__.startswith("Train something.")
    assert train.__name__ == "train"


def test_defopt_reads_the_wrapped_signature(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        main(train, argv=["train", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "--epochs EPOCHS" in out
    assert "passes over the data" in out
    assert "learning rate" in out
