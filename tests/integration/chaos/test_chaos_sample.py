"""A fixed-seed sample of the chaos harness (tests/chaos, docs/chaos.md): an uninterrupted
reference run and a few short fault episodes under ``--executor local``, every invariant
checked. ``make chaos`` runs as many episodes as asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.driver import run_campaign
from chaos.plan import Config

pytestmark = pytest.mark.integration
SEED = 20
EPISODES = (0, 1)
"""A preemption; a SIGKILL to rank 1 during start-up, then four relaunches at the same instant
while the job runs (``python -m chaos --seed 20 --episodes 2`` runs the same, with longer jobs)."""
STEPS = 100  # the harness's default is 240: about 5 s of training an attempt


def test_a_fixed_seed_sample_of_fault_episodes_violates_no_invariant(tmp_path: Path):
    results, table = run_campaign(Config(steps=STEPS), SEED, EPISODES, tmp_path / "chaos")
    print(table)
    assert [r.error for r in results if r.error] == [], table
    assert [v for r in results for v in r.violations] == [], table
