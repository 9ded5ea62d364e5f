import dataclasses
import enum
from pathlib import Path

import pytest

from blocktrain.core.jobenv import job_context
from blocktrain.core.redact import Redactor, secret_names
from blocktrain.core.values import bound_arguments, env_seconds, flatten, to_jsonable


def test_job_context_plain_process():
    ctx = job_context({}, host="h")
    assert (ctx.rank, ctx.world_size, ctx.attempt, ctx.job_id, ctx.run_id) == (0, 1, 1, None, None)
    assert ctx.is_rank_zero


def test_job_context_from_slurm_with_requeues_and_relaunch_base():
    env = {
        "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NTASKS": "4", "SLURM_JOB_ID": "77",
        "SLURM_RESTART_COUNT": "2", "BLOCKTRAIN_ATTEMPT_BASE": "5", "BLOCKTRAIN_RUN_ID": "abc",
        "SLURMD_NODENAME": "node7",
    }  # fmt: skip
    ctx = job_context(env)
    assert (ctx.rank, ctx.local_rank, ctx.world_size) == (3, 1, 4)
    assert (ctx.job_id, ctx.attempt, ctx.run_id, ctx.host) == ("77", 8, "abc", "node7")
    assert not ctx.is_rank_zero


def test_job_context_torch_variables_win_and_arrays_get_index():
    env = {"RANK": "0", "SLURM_PROCID": "5", "SLURM_ARRAY_JOB_ID": "120", "SLURM_ARRAY_TASK_ID": "3",
           "SLURM_JOB_ID": "123", "BLOCKTRAIN_ATTEMPT": "4"}  # fmt: skip
    ctx = job_context(env, host="h")
    assert (ctx.rank, ctx.job_id, ctx.array_index, ctx.attempt) == (0, "120_3", 3, 4)


def test_redactor_masks_credential_like_and_listed_names_longest_first():
    env = {
        "AWS_SECRET_ACCESS_KEY": "abcdef123456",
        "MY_TOKEN": "abcdef",
        "CUSTOM": "listed-value",
        "BLOCKTRAIN_SECRET_NAMES": "CUSTOM",
        "HOME": "/root",
        "SHORT_KEY": "1",
    }
    assert secret_names(env) >= {"AWS_SECRET_ACCESS_KEY", "MY_TOKEN", "CUSTOM", "SHORT_KEY"}
    redact = Redactor.from_environ(env)
    text = redact("key=abcdef123456 tok=abcdef c=listed-value home=/root one=1")
    assert text == "key=*** tok=*** c=*** home=/root one=1"
    assert redact("https://user:pa55@host/x") == "https://***@host/x"
    assert redact.value({"a": ["abcdef123456", 3]}) == {"a": ["***", 3]}


class Color(enum.Enum):
    red = 1


@dataclasses.dataclass
class Cfg:
    lr: float = 0.1
    path: Path = Path("/x")


def test_to_jsonable_and_flatten():
    value = {"cfg": Cfg(), "color": Color.red, "t": (1, 2), "s": {3, 1}, "nan": float("nan")}
    assert to_jsonable(value) == {
        "cfg": {"lr": 0.1, "path": "/x"},
        "color": "red",
        "t": [1, 2],
        "s": [1, 3],
        "nan": "nan",
    }
    assert flatten({"a": {"b": {"c": 1}, "d": [1]}, "e": {}}) == {"a.b.c": 1, "a.d": [1], "e": {}}


def test_bound_arguments_include_defaults():
    def f(a: int, *, b: Cfg = Cfg(lr=0.2)) -> None: ...

    assert bound_arguments(f, (1,), {}) == {"a": 1, "b": {"lr": 0.2, "path": "/x"}}


def test_env_seconds_default_value_and_named_error():
    assert env_seconds({}, "WAIT_S", 3.0) == 3.0
    assert env_seconds({"WAIT_S": " "}, "WAIT_S", 3.0) == 3.0
    assert env_seconds({"WAIT_S": "0.25"}, "WAIT_S", 3.0) == 0.25
    with pytest.raises(LookupError, match=r"WAIT_S='soon' is not a number of seconds"):
        env_seconds({"WAIT_S": "soon"}, "WAIT_S", 3.0, LookupError)
