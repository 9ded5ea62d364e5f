"""Metric totals (sums and counts, one division), confusion counts, accuracy."""

from __future__ import annotations

import math

import pytest
import torch

from blocktrain.train.metrics import Confusion, Totals, accuracy, is_classification, means

CPU = torch.device("cpu")


def test_totals_weigh_every_example_once() -> None:
    totals = Totals(CPU)
    totals.add("accuracy", torch.tensor([1.0, 0.0, 1.0]))  # a batch of three
    totals.add("accuracy", torch.tensor([0.0]))  # a batch of one
    totals.add_mean("loss", torch.tensor(2.0), 3)  # mean 2.0 over three examples
    totals.add_mean("loss", torch.tensor(1.0), 1)
    # The mean of the batch means would be (2/3 + 0) / 2 = 1/3 and (2 + 1) / 2 = 1.5.
    assert totals.reduce() == {"accuracy": 0.5, "loss": 1.75}


def test_totals_reduce_to_sums_and_counts() -> None:
    totals = Totals(CPU)
    totals.add_mean("loss", torch.tensor(2.0), 3)
    totals.add_total("loss", 5.0, 2)  # carried over: a sum of 5 over two examples
    totals.add("accuracy", torch.tensor([1.0, 0.0]))
    assert totals.reduce_sums() == {"loss": (11.0, 5), "accuracy": (1.0, 2)}
    assert not totals  # afresh


def test_totals_keep_first_added_order_and_clear() -> None:
    totals = Totals(CPU)
    totals.add("b", torch.ones(2))
    totals.add("a", torch.zeros(2))
    names, packed = totals.pack()
    assert not totals  # afresh
    assert totals.reduce() == {}
    assert names == ["b", "a"]
    assert packed.tolist() == [2.0, 0.0, 2.0, 2.0]  # the sums, then the counts
    assert means(names, packed.tolist()) == {"b": 1.0, "a": 0.0}


def test_totals_sum_in_double_precision() -> None:
    totals = Totals(CPU)
    for _ in range(1000):
        totals.add("x", torch.full((1000,), 0.1, dtype=torch.float32))
    assert math.isclose(totals.reduce()["x"], float(torch.tensor(0.1)), rel_tol=1e-12)


def test_totals_fold_long_windows_without_changing_the_mean() -> None:
    totals = Totals(CPU)
    expected_sum = expected_count = 0
    for index in range(1000):  # several folds, with batches of varied size and precision
        count = 1 + index % 7
        dtype = torch.bfloat16 if index % 3 == 0 else torch.float32
        totals.add_mean("loss", torch.tensor(float(index % 5), dtype=dtype), count)
        expected_sum += (index % 5) * count
        expected_count += count
    assert totals.reduce() == {"loss": expected_sum / expected_count}


def test_confusion_counts_true_rows_predicted_columns() -> None:
    confusion = Confusion(3, CPU)
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 5.0, 0], [0, 0, 5.0]])
    confusion.add(logits, torch.tensor([0, 1, 2, 2]))
    assert confusion.reduce().tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_accuracy_and_classification_shape() -> None:
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2]])
    assert accuracy(logits, torch.tensor([1, 1])).tolist() == [1.0, 0.0]
    assert is_classification(logits, torch.tensor([1, 1]))
    assert not is_classification(logits, torch.tensor([1.0, 1.0]))  # regression targets
    assert not is_classification(torch.rand(2, 3, 4), torch.tensor([1, 1]))
    assert not is_classification(logits, None)


@pytest.mark.parametrize("values", [torch.ones(2, 3), torch.ones(6)])
def test_every_element_counts(values: torch.Tensor) -> None:
    totals = Totals(CPU)
    totals.add("m", values)
    totals.add("m", torch.zeros(6))
    assert totals.reduce()["m"] == 0.5
