"""blocktrain.notify against a real HTTP webhook on loopback: what Slack would receive."""

from __future__ import annotations

import inspect
import logging
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from webhook_server import PATH, WebhookServer

from blocktrain import track
from blocktrain.errors import RequeueRequested, Terminated
from blocktrain.notify import notifier as notify_module
from blocktrain.notify import notify, notifying

pytestmark = pytest.mark.integration

CANARY = "canary-5f2a9c"
# Variables of the surrounding shell or CI that would change who posts, where, or how.
CLEARED = (
    "SLACK_WEBHOOK_URL",
    "BLOCKTRAIN_SLACK_WEBHOOK_URL",
    "BLOCKTRAIN_SLACK_MENTION",
    "BLOCKTRAIN_SLACK_TIMEOUT_SECONDS",
    "RANK",
    "SLURM_PROCID",
    "SLURM_RESTART_COUNT",
    "BLOCKTRAIN_ATTEMPT",
    "BLOCKTRAIN_ATTEMPT_BASE",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
)
SERVER_ERROR_WARNING = (
    "Slack notification not sent after 2 tries (HTTPError: HTTP Error 500: Internal Server "
    "Error); the job goes on"
)


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def one_line(text: str) -> dict[str, Any]:
    return {"text": text, "blocks": [section(text)]}


@pytest.fixture
def job_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Rank 0 of Slurm job 4242 on node07, first attempt, no webhook yet."""
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURMD_NODENAME", "node07")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    return monkeypatch


@pytest.fixture
def hook(job_env: pytest.MonkeyPatch) -> Iterator[WebhookServer]:
    with WebhookServer() as server:
        job_env.setenv("BLOCKTRAIN_SLACK_WEBHOOK_URL", server.url)
        yield server


@notify
def train(lr: float, epochs: int = 2, *, name: str = "base") -> dict[str, float]:
    """Train a tiny model.

    Args:
        lr: Learning rate.
        epochs: Passes over the data.
        name: Run label.
    """
    return {"val_acc": 0.5, "lr": lr}


def test_decorator_preserves_signature_and_docstring() -> None:
    assert str(inspect.signature(train)) == (
        "(lr: 'float', epochs: 'int' = 2, *, name: 'str' = 'base') -> 'dict[str, float]'"
    )
    assert train.__doc__ is not None
    assert train.__doc__.startswith("Train a tiny model.")
    assert train.__name__ == "train"


def test_success_posts_start_and_end(hook: WebhookServer) -> None:
    assert train(0.1, name="small") == {"val_acc": 0.5, "lr": 0.1}

    assert [(r.path, r.content_type) for r in hook.received] == [
        (PATH, "application/json; charset=utf-8")
    ] * 2
    start = ":rocket: *train* started on node07, job 4242 (attempt 1)"
    end = ":white_check_mark: *train* finished after 0s on node07, job 4242 (attempt 1)"
    assert hook.bodies == [
        {
            "text": start,
            "blocks": [
                section(start),
                section('*Arguments*\n```\nlr = 0.1\nepochs = 2\nname = "small"\n```'),
            ],
        },
        {
            "text": end,
            "blocks": [
                section(end),
                section('*Returned*\n```\n{"val_acc": 0.5, "lr": 0.1}\n```'),
            ],
        },
    ]


def test_crash_posts_exception_and_propagates_it(hook: WebhookServer) -> None:
    error = ValueError("boom")

    @notify
    def evaluate(split: str) -> None:
        raise error

    with pytest.raises(ValueError, match="boom") as caught:
        evaluate("test")

    assert caught.value is error
    start, crash = hook.bodies
    assert start["text"] == ":rocket: *evaluate* started on node07, job 4242 (attempt 1)"
    assert start["blocks"][1] == section('*Arguments*\n```\nsplit = "test"\n```')
    header = ":x: *evaluate* crashed after 0s on node07, job 4242 (attempt 1): ValueError: boom"
    assert crash["text"] == header
    assert crash["blocks"][0] == section(header)
    trace = crash["blocks"][1]["text"]["text"]
    assert trace.startswith("*Traceback (last 15 lines)*\n```\nTraceback (most recent call last):")
    assert "raise error" in trace
    assert trace.endswith("ValueError: boom\n```")
    assert len(crash["blocks"]) == 2


def test_requeue_is_one_line_after_the_start(hook: WebhookServer) -> None:
    @notify
    def pretrain(steps: int) -> int:
        if steps > 0:
            raise RequeueRequested
        return 7

    with pytest.raises(RequeueRequested):
        pretrain(100)

    start = ":rocket: *pretrain* started on node07, job 4242 (attempt 1)"
    assert hook.bodies == [
        {
            "text": start,
            "blocks": [section(start), section("*Arguments*\n```\nsteps = 100\n```")],
        },
        one_line(
            ":double_vertical_bar: *pretrain* paused for requeue after 0s (attempt 1) "
            "on node07, job 4242"
        ),
    ]


def test_later_attempts_resume_in_one_line(
    hook: WebhookServer, job_env: pytest.MonkeyPatch
) -> None:
    @notify
    def pretrain(steps: int) -> int:
        if steps > 0:
            raise RequeueRequested
        return 7

    job_env.setenv("SLURM_RESTART_COUNT", "1")
    with pytest.raises(RequeueRequested):
        pretrain(100)
    job_env.setenv("SLURM_RESTART_COUNT", "2")
    assert pretrain(0) == 7

    finished = ":white_check_mark: *pretrain* finished after 0s on node07, job 4242 (attempt 3)"
    assert hook.bodies == [
        one_line(":arrow_forward: *pretrain* resumed, attempt 2 on node07, job 4242"),
        one_line(
            ":double_vertical_bar: *pretrain* paused for requeue after 0s (attempt 2) "
            "on node07, job 4242"
        ),
        one_line(":arrow_forward: *pretrain* resumed, attempt 3 on node07, job 4242"),
        {"text": finished, "blocks": [section(finished), section("*Returned*\n```\n7\n```")]},
    ]


@pytest.mark.parametrize(
    ("error", "shown"),
    [(Terminated("received signal 15"), "Terminated: received signal 15"),
     (KeyboardInterrupt(), "KeyboardInterrupt")],
)  # fmt: skip
def test_sigterm_and_ctrl_c_post_killed_with_mention(
    hook: WebhookServer, job_env: pytest.MonkeyPatch, error: BaseException, shown: str
) -> None:
    job_env.setenv("BLOCKTRAIN_SLACK_MENTION", "<@U123>")

    @notify
    def serve() -> None:
        raise error

    with pytest.raises(type(error)):
        serve()

    assert hook.bodies[1] == one_line(
        f"<@U123> :octagonal_sign: *serve* killed after 0s on node07, job 4242 (attempt 1): {shown}"
    )
    assert "<@U123>" not in hook.bodies[0]["text"]


def test_decorator_mention_overrides_the_environment(
    hook: WebhookServer, job_env: pytest.MonkeyPatch
) -> None:
    job_env.setenv("BLOCKTRAIN_SLACK_MENTION", "<@U123>")

    @notify(mention="<!here>")
    def predict() -> None:
        return None

    predict()
    assert hook.bodies[1] == one_line(
        "<!here> :white_check_mark: *predict* finished after 0s on node07, job 4242 (attempt 1)"
    )


def test_other_ranks_post_nothing(hook: WebhookServer, job_env: pytest.MonkeyPatch) -> None:
    job_env.setenv("RANK", "1")
    assert train(0.1) == {"val_acc": 0.5, "lr": 0.1}
    with pytest.raises(ZeroDivisionError), notifying("train", {}):
        _ = 1 / 0
    assert hook.received == []


def test_without_webhook_nothing_is_sent(
    job_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("no webhook configured, yet a request was made")

    job_env.setattr(urllib.request, "urlopen", no_network)
    with WebhookServer() as server, caplog.at_level(logging.DEBUG, "blocktrain.notify"):
        assert train(0.2) == {"val_acc": 0.5, "lr": 0.2}
        with pytest.raises(ValueError, match="bad"), notifying("evaluate", {}):
            raise ValueError("bad")
    assert server.received == []
    assert caplog.records == []


def test_server_error_is_retried_once_then_warned(
    hook: WebhookServer, caplog: pytest.LogCaptureFixture
) -> None:
    hook.mode = "error"
    with (
        caplog.at_level(logging.WARNING, "blocktrain.notify"),
        notifying("train", {"lr": 0.1}) as session,
    ):
        session.set_result(3)

    # The start message (posted in the background) is tried twice before the end message.
    assert len(hook.received) == 4
    assert hook.bodies[0] == hook.bodies[1]
    assert hook.bodies[2] == hook.bodies[3]
    assert [r.getMessage() for r in caplog.records] == [SERVER_ERROR_WARNING] * 2
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_server_error_warning_is_one_stderr_line(hook: WebhookServer) -> None:
    hook.mode = "error"
    script = (
        "from blocktrain.notify import notify\n"
        "@notify\n"
        "def train(x: int) -> int:\n"
        "    return x * 2\n"
        "print(train(21))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0
    assert done.stdout == "42\n"
    assert done.stderr.splitlines() == [SERVER_ERROR_WARNING] * 2
    assert hook.url not in done.stderr
    assert len(hook.received) == 4


def test_hanging_server_delays_the_call_only_by_the_timeouts(
    hook: WebhookServer, job_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    hook.mode = "hang"
    job_env.setenv("BLOCKTRAIN_SLACK_TIMEOUT_SECONDS", "1")
    begin = time.monotonic()
    with caplog.at_level(logging.WARNING, "blocktrain.notify"):
        assert train(0.3) == {"val_acc": 0.5, "lr": 0.3}
    elapsed = time.monotonic() - begin

    assert elapsed < 10  # two messages, two tries each, 1 s apiece: about 4 s
    assert len(hook.received) == 4
    assert [r.getMessage() for r in caplog.records] == [
        "Slack notification not sent after 2 tries (TimeoutError: timed out); the job goes on"
    ] * 2


def test_canary_secret_never_leaves_the_process(
    hook: WebhookServer, job_env: pytest.MonkeyPatch
) -> None:
    job_env.setenv("BLOCKTRAIN_CANARY_TOKEN", CANARY)

    @notify
    def fetch(token: str, note: str, options: dict[str, str]) -> str:
        raise PermissionError(f"token {token} refused; webhook was {hook.url}")

    with pytest.raises(PermissionError, match=CANARY):
        fetch(CANARY, "x" * 290 + CANARY, {"auth": CANARY})
    with notifying("fetch", {"token": CANARY}, run_url=f"https://u:{CANARY}@mlflow/x") as session:
        session.set_result({"token": CANARY})

    assert len(hook.received) == 4
    for request in hook.received:
        assert CANARY.encode() not in request.raw
        assert b"canary" not in request.raw  # not even a truncated prefix
        assert hook.url.encode() not in request.raw
    assert "token *** refused; webhook was ***" in hook.bodies[1]["text"]


def test_notifying_takes_a_late_run_link_and_final_metrics(hook: WebhookServer) -> None:
    url = "http://mlflow.internal:5000/#/experiments/1/runs/r1"
    with notifying("train", {"lr": 0.1}, metrics=lambda: {"loss": 0.25}) as session:
        session.run_url = url
        session.set_result(None)

    end = ":white_check_mark: *train* finished after 0s on node07, job 4242 (attempt 1)"
    assert "MLflow run" not in str(hook.bodies[0])
    assert hook.bodies[1] == {
        "text": end,
        "blocks": [
            section(end),
            section(f"<{url}|MLflow run>"),
            section("*Final metrics*\n```\nloss = 0.25\n```"),
        ],
    }


def test_failing_metrics_callable_does_not_lose_the_message(
    hook: WebhookServer, caplog: pytest.LogCaptureFixture
) -> None:
    def metrics() -> dict[str, float]:
        raise RuntimeError("tracker gone")

    with (
        caplog.at_level(logging.WARNING, "blocktrain.notify"),
        notifying("train", {}, metrics=metrics),
    ):
        pass
    assert len(hook.bodies) == 2
    assert [r.getMessage() for r in caplog.records] == [
        "final metrics for the Slack message unavailable: RuntimeError: tracker gone"
    ]


@dataclass
class FakeTracker:
    run_url: str | None
    latest_metrics: dict[str, float] = field(default_factory=dict[str, float])


def test_inside_track_the_run_link_and_metrics_are_used(
    hook: WebhookServer, job_env: pytest.MonkeyPatch
) -> None:
    tracker = FakeTracker("http://mlflow.internal:5000/#/experiments/2/runs/r9")
    job_env.setattr(track, "current", lambda: tracker)

    @notify
    def finetune() -> None:
        tracker.latest_metrics["val_loss"] = 0.5

    finetune()
    start, end = hook.bodies
    assert start["blocks"][1] == section(f"<{tracker.run_url}|MLflow run>")
    assert end["blocks"][1:] == [
        section(f"<{tracker.run_url}|MLflow run>"),
        section("*Final metrics*\n```\nval_loss = 0.5\n```"),
    ]


def test_a_broken_builder_never_fails_the_job(
    hook: WebhookServer, job_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> dict[str, object]:
        raise RuntimeError("builder bug")

    job_env.setattr(notify_module, "start_message", broken)
    with caplog.at_level(logging.WARNING, "blocktrain.notify"):
        assert train(0.4) == {"val_acc": 0.5, "lr": 0.4}
    assert len(hook.bodies) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "Slack notification failed: RuntimeError: builder bug"
    ]
