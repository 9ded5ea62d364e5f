"""The chaos harness's schedules (tests/chaos/plan.py): drawn from a seed, only of the kinds
that apply where the episode runs."""

from __future__ import annotations

import pytest

from chaos.plan import (
    SIGNAL_KINDS,
    Anchor,
    Config,
    Kind,
    applicable,
    not_applicable,
    plan_episode,
)

CONFIGS = (Config(), Config(executor="slurm"), Config(executor="slurm", nodes=2))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.label)
def test_the_same_seed_gives_the_same_plan(config: Config):
    assert plan_episode(7, 3, config) == plan_episode(7, 3, config)
    plans = {plan_episode(seed, 0, config).faults for seed in range(20)}
    assert len(plans) > 10


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.label)
def test_plans_hold_only_kinds_that_apply_and_in_time_cover_them_all(config: Config):
    seen: set[Kind] = set()
    for index in range(300):
        plan = plan_episode(1, index, config)
        assert 1 <= len(plan.faults) <= 4
        kinds = [f.kind for f in plan.faults]
        seen.update(kinds)
        assert all(not_applicable(k, config) is None for k in kinds)
        assert Kind.RELAUNCH_FINISHED not in kinds[:-1], "after the end comes nothing"
        for fault in plan.faults:
            if fault.kind in SIGNAL_KINDS:
                assert 0 <= fault.rank < config.world
                assert fault.anchor in (Anchor.TRAINING, Anchor.STARTUP)
            if fault.kind is Kind.SIGKILL_MID_CHECKPOINT:
                assert (fault.anchor, fault.delay_s) == (Anchor.CHECKPOINT, 0.0)
            if fault.kind is Kind.RELAUNCH_FINISHED:
                assert fault.anchor is Anchor.FINISHED
            if fault.kind in (Kind.CONCURRENT_RELAUNCH, Kind.RELAUNCH_FINISHED):
                assert 2 <= fault.count <= 4
            assert 1 <= fault.node <= config.nodes
            assert 0 <= fault.delay_s <= 3
        assert 1 <= plan.relaunchers_at(index) <= 3
    assert seen == set(applicable(config))


def test_what_does_not_apply_says_why():
    local, one, two = CONFIGS
    assert not_applicable(Kind.SLURMCTLD_RESTART, local) is not None
    assert not_applicable(Kind.SLURMD_RESTART, local) is not None
    assert not_applicable(Kind.NODE_KILL, local) is None  # the supervisor's process group
    assert not_applicable(Kind.NODE_KILL, one) == "needs a job on two nodes (NODES=2)"
    assert not_applicable(Kind.NODE_KILL, two) is None
    assert not_applicable(Kind.TRACKING_DOWN, two) is not None  # the nodes track embedded
    assert (local.tracking, one.tracking, two.tracking) == ("server", "server", "embedded")
    assert len(applicable(two)) == len(Kind) - 1


@pytest.mark.parametrize(("executor", "nodes"), [("local", 2), ("slurm", 3), ("pbs", 1)])
def test_a_configuration_that_cannot_run_is_refused(executor: str, nodes: int):
    with pytest.raises(ValueError, match="must be"):
        Config(executor=executor, nodes=nodes)


def test_a_fault_describes_itself_in_one_line():
    plan = plan_episode(0, 0, Config())
    for fault in plan.faults:
        line = fault.describe()
        assert line.startswith(fault.kind.value)
        assert "\n" not in line
    assert plan.name == "episode 0 (seed 0)"


def test_kinds_narrow_the_draw_and_relaunch_finished_alone_comes_last():
    config = Config(executor="slurm")
    for index in range(50):
        plan = plan_episode(3, index, config, kinds={Kind.STOP, Kind.NODE_KILL})
        assert {f.kind for f in plan.faults} == {Kind.STOP}  # node-kill needs 2 nodes
    only = plan_episode(3, 0, config, kinds={Kind.RELAUNCH_FINISHED})
    assert [f.kind for f in only.faults] == [Kind.RELAUNCH_FINISHED]
    assert plan_episode(3, 0, Config(steps=120)).faults == plan_episode(3, 0, Config()).faults
