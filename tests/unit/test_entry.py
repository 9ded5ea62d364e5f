import subprocess
import sys
from pathlib import Path

import pytest
from entry_example import CALLS, Arch, Data, Optim, evaluate, train

from blocktrain.entry import main, resolve, split_args_flag
from blocktrain.errors import ArgsError


@pytest.fixture(autouse=True)
def _clear_calls():
    CALLS.clear()


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def run_cli(*argv: str) -> object:
    return main(train, evaluate, argv=list(argv))


def test_yaml_fills_arguments_and_nested_dataclasses(tmp_path: Path):
    exp = write(
        tmp_path, "exp.yaml", "data: {root: /d}\nepochs: 5\noptim:\n  lr: 0.5\narch: large\n"
    )
    result = run_cli("train", "--args", exp)
    assert result == {
        "data": Data(root=Path("/d")),
        "epochs": 5,
        "optim": Optim(lr=0.5),
        "arch": Arch.large,
        "mode": "fast",
        "tags": None,
        "amp": False,
        "weights": None,
        "seed": None,
    }


def test_later_files_override_earlier_deeply_and_flags_override_files(tmp_path: Path):
    base = write(
        tmp_path, "base.yaml", "data: {root: /d}\nepochs: 5\noptim: {lr: 0.5, momentum: 0.5}\n"
    )
    over = write(tmp_path, "over.yaml", "optim: {momentum: 0.1}\ntags: [a, b]\n")
    result = run_cli("train", "--args", base, f"--args={over}", "--epochs", "7", "--amp")
    assert isinstance(result, dict)
    assert result["optim"] == Optim(lr=0.5, momentum=0.1)
    assert result["epochs"] == 7
    assert result["tags"] == ["a", "b"]
    assert result["amp"] is True


def test_flag_for_a_dataclass_takes_yaml_text(tmp_path: Path):
    exp = write(tmp_path, "exp.yaml", "data: {root: /d}\n")
    result = run_cli("train", "--args", exp, "--optim", "{lr: 2, betas: [0.5, 0.6]}")
    assert isinstance(result, dict)
    assert result["optim"] == Optim(lr=2.0, betas=(0.5, 0.6))


def test_second_command_and_positional_free_flags():
    assert run_cli("evaluate", "--run-id", "abc") == "abc:test"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "data: {root: /d}\nepochz: 5\n",
            "exp.yaml:2: unknown argument 'epochz' for train (did you mean 'epochs'?); valid arguments: data, epochs,",
        ),
        (
            "data: {root: /d}\noptim:\n  lr: fast\n",
            "exp.yaml:3: optim.lr: expected float, got str 'fast'",
        ),
        ("data: {root: /d}\nepochs: 2.5\n", "exp.yaml:2: epochs: expected int, got float 2.5"),
        (
            "data: {root: /d}\narch: huge\n",
            "exp.yaml:2: arch: expected one of 'small', 'large', got str 'huge'",
        ),
        (
            "data: {root: /d}\nmode: slow\n",
            "exp.yaml:2: mode: expected one of 'fast', 'exact', got str 'slow'",
        ),
        (
            "data: {root: /d}\noptim: {lr: 0.1, nesterov: true}\n",
            "exp.yaml:2: optim.nesterov: unknown field for Optim; valid fields: lr, momentum, betas",
        ),
        (
            "data: {root: /d}\noptim: {lr: 0.1, momentom: 0.9}\n",
            (
                "exp.yaml:2: optim.momentom: unknown field for Optim (did you mean 'momentum'?); "
                "valid fields: lr, momentum, betas"
            ),
        ),
        (
            "data: {root: /d}\noptim: {lr: -1}\n",
            "exp.yaml:2: optim: invalid Optim: lr must be positive",
        ),
        ("data: {splits: [0.5]}\n", "exp.yaml:1: data: missing required field(s) of Data: root"),
        (
            "data: {root: /d}\noptim: {betas: [1, 2, 3]}\n",
            "exp.yaml:2: optim.betas: expected 2 items, got 3",
        ),
        (
            "data: {root: /d}\ntags: a\n",
            "exp.yaml:2: tags: expected list of str or null, got str 'a'",
        ),
        (
            "seed: 1\n  epochs: [\n",
            "exp.yaml:2: malformed YAML: mapping values are not allowed here",
        ),
        ("- 1\n- 2\n", "exp.yaml:1: the file must be a mapping of argument names to values"),
        ("epochs: 1\nepochs: 2\n", "exp.yaml:2: key 'epochs' appears twice; keep one"),
    ],
)
def test_bad_yaml_gives_one_line_naming_file_line_key_and_expectation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
):
    exp = write(tmp_path, "exp.yaml", text)
    with pytest.raises(SystemExit) as exited:
        run_cli("train", "--args", exp)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: " + str(tmp_path / expected.split(":", maxsplit=1)[0]))
    assert expected.split(":", 1)[1] in err
    assert CALLS == []  # the function never ran


def test_missing_file_and_unknown_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        run_cli("train", "--args", str(tmp_path / "nope.yaml"))
    assert exited.value.code == 2
    assert "nope.yaml: no such arguments file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        run_cli("trian")
    assert exited.value.code == 2
    assert "unknown command 'trian'; valid commands: train, evaluate" in capsys.readouterr().err


def test_missing_required_argument_exits_2(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        run_cli("train", "--epochs", "2")
    assert exited.value.code == 2
    assert "required: --data" in capsys.readouterr().err
    assert CALLS == []


def test_help_lists_args_flag_and_documented_parameters(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        run_cli("train", "--help")
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "--args FILE.yaml" in out
    assert "passes over the training split" in out
    assert "--amp, --no-amp" in out


def test_args_flag_without_file_is_an_error():
    with pytest.raises(ArgsError, match="--args needs a YAML file"):
        split_args_flag(["--args"])
    assert split_args_flag(["--args", "a.yaml", "--x", "1", "--args=b.yaml"]) == (
        ["a.yaml", "b.yaml"],
        ["--x", "1"],
    )


def test_resolve_returns_every_argument_as_json(tmp_path: Path):
    exp = write(tmp_path, "exp.yaml", "data: {root: /d}\narch: large\noptim: {lr: 0.5}\n")
    resolved = resolve(train, [exp], overrides={"seed": 3})
    assert resolved == {
        "data": {"root": "/d", "splits": [0.6, 0.2, 0.2]},
        "epochs": 3,
        "optim": {"lr": 0.5, "momentum": 0.9, "betas": [0.9, 0.999]},
        "arch": "large",
        "mode": "fast",
        "tags": None,
        "amp": False,
        "weights": None,
        "seed": 3,
    }
    assert CALLS == []


def test_resolve_reports_missing_required_and_bad_override(tmp_path: Path):
    with pytest.raises(ArgsError, match="missing required argument 'data'"):
        resolve(train, [])
    with pytest.raises(ArgsError, match="override: epochs: expected int, got str 'x'"):
        resolve(train, [write(tmp_path, "e.yaml", "data: {root: /d}\n")], overrides={"epochs": "x"})


def test_validation_does_not_import_torch_or_mlflow():
    code = (
        "import sys; from blocktrain.entry import resolve; import entry_example as e; "
        "resolve(e.evaluate, overrides={'run_id': 'x'}); "
        "print(sorted(m for m in ('torch', 'mlflow') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"
