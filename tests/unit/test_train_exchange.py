"""The step boundaries' exchange in one process (two real ranks: test_distributed_gloo.py)."""

from __future__ import annotations

import pytest
import torch

from blocktrain.train.exchange import Agreed, Exchange, Point
from blocktrain.train.metrics import Totals

CPU = torch.device("cpu")


def window(totals: Totals, *losses: tuple[float, int]) -> Totals:
    for loss, count in losses:
        totals.add_mean("train_loss", torch.tensor(loss), count)
    return totals


def test_nothing_started_gives_nothing() -> None:
    exchange = Exchange(1, CPU)
    assert exchange.collect() == (None, [])
    assert exchange.flush() == []
    assert not exchange.has_closed


def test_an_exchange_carries_the_flags_the_steps_and_every_window_closed_before_it() -> None:
    exchange, totals = Exchange(1, CPU), Totals(CPU)
    exchange.close(9, window(totals, (1.0, 3), (3.0, 1)), {"lr": 0.1})
    exchange.close(19, window(totals, (2.0, 2)), {"lr": 0.05})
    assert exchange.has_closed
    exchange.start(stop=True, steps=5)
    assert not exchange.has_closed
    with pytest.raises(RuntimeError, match="collect the exchange in flight"):
        exchange.start()
    agreed, points = exchange.collect()
    assert agreed == Agreed(stop=True, checkpoint_due=False, steps=5)
    # Each window its own mean (1*3 + 3*1) / 4 and 2, weighted by examples, with its extras.
    assert points == [
        Point(9, {"train_loss": 1.5, "lr": 0.1}),
        Point(19, {"train_loss": 2.0, "lr": 0.05}),
    ]
    assert exchange.collect() == (None, [])


def test_a_flush_reports_every_window_and_keeps_the_agreement_for_the_next_collect() -> None:
    exchange, totals = Exchange(1, CPU), Totals(CPU)
    exchange.close(0, window(totals, (4.0, 1)), {})
    exchange.start(checkpoint_due=True, steps=0)  # fewer than one step still means one
    exchange.close(1, window(totals, (6.0, 1)), {})
    assert exchange.flush() == [Point(0, {"train_loss": 4.0}), Point(1, {"train_loss": 6.0})]
    assert exchange.flush() == []
    assert exchange.collect() == (Agreed(stop=False, checkpoint_due=True, steps=1), [])
    exchange.start()  # allowed again once the agreement was read
    assert exchange.collect()[0] == Agreed(stop=False, checkpoint_due=False, steps=1)
