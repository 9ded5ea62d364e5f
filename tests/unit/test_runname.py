"""Run names: derived from the entry, the argument files and a sweep's values; validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from blocktrain.errors import ArgsError
from blocktrain.launch.sweeps import naming
from blocktrain.launch.sweeps.expand import ArgumentSet, argument_sets


def sweep_sets(tmp_path: Path, text: str) -> list[ArgumentSet]:
    sweep = tmp_path / "ablation.yaml"
    sweep.write_text(text)
    return argument_sets([], [], sweep, {})


def test_one_run_is_entry_and_file_stem(tmp_path: Path):
    [one] = argument_sets([], [tmp_path / "baseline.yaml"], None, {})
    assert naming.run_names("train", [one]) == ["train-baseline"]
    assert naming.run_names("train", [one], "mine") == ["mine"]
    [bare] = argument_sets([], [], None, {})
    assert naming.run_names("evaluate", [bare]) == ["evaluate"]
    [based] = argument_sets([tmp_path / "base.yaml"], [], None, {"seed": 3})
    assert naming.run_names("train", [based]) == ["train-base"]


def test_sweep_elements_add_their_own_values(tmp_path: Path):
    sets = sweep_sets(tmp_path, "runs:\n  - {width: 16}\ngrid:\n  lr: [0.01, 0.1]\n  width: [32]\n")
    assert naming.run_names("train", sets) == [
        "train-ablation-width=16",
        "train-ablation-lr=0.01-width=32",
        "train-ablation-lr=0.1-width=32",
    ]
    assert naming.run_names("train", sets, "abl")[0] == "abl-width=16"
    assert naming.parent_name("train", sets) == "train-ablation"
    assert naming.parent_name("train", sets, "abl") == "abl"


def test_dotted_keys_shrink_to_their_last_part_unless_that_is_ambiguous(tmp_path: Path):
    sets = sweep_sets(
        tmp_path, "grid:\n  optim.lr: [0.1]\n  sched.lr: [0.2]\n  data.aug: [false]\n"
    )
    assert naming.run_names("train", sets) == ["train-ablation-optim.lr=0.1-sched.lr=0.2-aug=false"]


def test_several_argument_files_are_named_after_each(tmp_path: Path):
    sets = argument_sets([], [tmp_path / "a.yaml", tmp_path / "b.yaml"], None, {})
    assert naming.run_names("train", sets) == ["train-a", "train-b"]
    assert naming.run_names("train", sets, "abl") == ["abl-a", "abl-b"]
    assert naming.parent_name("train", sets) == "train-a+b"
    same = argument_sets([], [tmp_path / "x" / "exp.yaml", tmp_path / "y" / "exp.yaml"], None, {})
    assert naming.run_names("train", same) == ["train-exp-0", "train-exp-1"]


def test_elements_that_set_nothing_or_the_same_get_their_index(tmp_path: Path):
    sets = sweep_sets(tmp_path, "runs:\n  - {}\n  - {lr: 0.1}\n  - {lr: 0.1}\n")
    assert naming.run_names("train", sets) == [
        "train-ablation-0",
        "train-ablation-lr=0.1-1",
        "train-ablation-lr=0.1-2",
    ]


def test_values_are_made_safe_and_names_short(tmp_path: Path):
    sets = sweep_sets(tmp_path, "runs:\n  - {note: 'a b/c', dims: [1, 2]}\n  - {note: x}\n")
    assert naming.run_names("train", sets) == [
        "train-ablation-note=a_b_c-dims=1,2",
        "train-ablation-note=x",
    ]
    long = sweep_sets(tmp_path, f"runs:\n  - {{note: {'y' * 300}}}\n  - {{note: z}}\n")
    first, second = naming.run_names("train", long)
    assert len(first) == naming.MAX_LENGTH
    assert first.startswith("train-ablation-note=yyy")
    assert first == naming.run_names("train", long)[0]  # stable
    assert second == "train-ablation-note=z"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "one non-empty line"),
        ("a\nb", "one non-empty line"),
        ("x" * 251, "251 characters long"),
    ],
)
def test_a_given_name_is_one_line_of_at_most_250_characters(name: str, message: str):
    with pytest.raises(ArgsError, match=message):
        naming.checked(name)
    assert naming.checked("x" * 250) == "x" * 250
    assert naming.checked(None) is None
