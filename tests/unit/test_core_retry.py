"""The one retry helper, ``blocktrain.core.retry``: its pauses, its loop, and the three callers
that use it (S3 storage, the MLflow writer's schedule, the Slack poster), without a network."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable

import pytest

from blocktrain.core.redact import Redactor
from blocktrain.core.retry import RetryPolicy, retry_call
from blocktrain.errors import BlocktrainError
from blocktrain.notify import NotifyConfig, slack
from blocktrain.track.writer import DEFAULT_RETRY


def test_backoff_grows_to_its_cap_with_jitter():
    policy = RetryPolicy(attempts=6, first_delay_s=0.5, max_delay_s=4.0)
    assert [policy.delay(n, 0.999999) for n in range(1, 6)] == pytest.approx(
        [0.5, 1, 2, 4, 4], rel=1e-4
    )
    assert [policy.delay(n, 0.0) for n in range(1, 6)] == [0.25, 0.5, 1, 2, 2]
    assert policy.worst_case_s == 0.5 + 1 + 2 + 4 + 4


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"attempts": 0}, "at least 1"),
        ({"first_delay_s": -1.0}, "0 <= first"),
        ({"first_delay_s": 2.0, "max_delay_s": 1.0}, "<= max"),
        ({"factor": 0.5}, "cannot shrink"),
    ],
)
def test_bad_policies_are_refused(settings: dict[str, float], message: str):
    with pytest.raises(BlocktrainError, match=message):
        RetryPolicy(**settings)  # pyright: ignore[reportArgumentType]


def test_pauses_without_jitter_are_exact_and_never_end():
    """The MLflow writer's schedule: 0.5 s doubling to 30 s, for as long as the server is away
    (a float power would overflow after about a thousand failures)."""
    pauses = list(itertools.islice(DEFAULT_RETRY.delays(), 3000))
    assert pauses[:8] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert set(pauses[6:]) == {30.0}
    jittered = RetryPolicy(first_delay_s=1.0, max_delay_s=1.0).delays(draw=lambda: 0.0)
    assert list(itertools.islice(jittered, 2)) == [0.5, 0.5]


def test_retry_call_retries_then_gives_up_with_the_last_error():
    pauses: list[float] = []
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionResetError(f"try {calls['n']}")
        return "ok"

    def retryable(error: BaseException) -> bool:
        return isinstance(error, ConnectionError)

    policy = RetryPolicy(attempts=4, first_delay_s=1, max_delay_s=10)

    def call(fn: Callable[[], str]) -> str:
        return retry_call(
            fn, policy=policy, retryable=retryable, what="get", log=None,
            sleep=pauses.append, draw=lambda: 0.0,
        )  # fmt: skip

    assert call(flaky) == "ok"
    assert pauses == [0.5, 1.0]

    def broken() -> str:
        raise ConnectionResetError("always")

    with pytest.raises(ConnectionResetError, match="always"):
        call(broken)
    assert pauses == [0.5, 1.0, 0.5, 1.0, 2.0]

    def missing() -> str:
        raise FileNotFoundError("gone")

    with pytest.raises(FileNotFoundError):
        call(missing)
    assert len(pauses) == 5  # not retried


def test_each_retry_is_one_warning_naming_what_failed(caplog: pytest.LogCaptureFixture):
    log = logging.getLogger("blocktrain.test")
    failures = iter([TimeoutError("slow"), None])

    def once_slow() -> int:
        error = next(failures)
        if error is not None:
            raise error
        return 7

    with caplog.at_level(logging.WARNING, logger="blocktrain.test"):
        result = retry_call(
            once_slow, policy=RetryPolicy(attempts=3, first_delay_s=2, max_delay_s=2),
            retryable=lambda _: True, what="head s3://b/k", log=log,
            sleep=lambda _: None, draw=lambda: 0.999,
        )  # fmt: skip
    assert result == 7
    assert [r.getMessage() for r in caplog.records] == [
        "head s3://b/k failed (TimeoutError: slow); try 2 of 3 in 2.0 s"
    ]


def test_slack_post_tries_again_at_once_then_warns_once_redacted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    sent: list[bytes] = []

    def refused(url: str, body: bytes, timeout_s: float) -> None:
        sent.append(body)
        raise ConnectionRefusedError(f"no server at {url}")

    monkeypatch.setattr(slack, "_send", refused)
    config = NotifyConfig(webhook_url="https://hooks.example/T0/secret-path", retries=2)
    redact = Redactor(("secret-path",))
    with caplog.at_level(logging.WARNING, logger="blocktrain.notify"):
        assert slack.post({"text": "hi"}, config, redact) is False
    assert len(sent) == 3
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith("Slack notification not sent after 3 tries (ConnectionRefusedError")
    assert "secret-path" not in warning


def test_slack_post_that_goes_through_is_tried_once(monkeypatch: pytest.MonkeyPatch):
    sent: list[bytes] = []
    monkeypatch.setattr(slack, "_send", lambda url, body, timeout_s: sent.append(body))
    config = NotifyConfig(webhook_url="https://hooks.example/T0/x")
    assert slack.post({"text": "hi"}, config, Redactor()) is True
    assert sent == [b'{"text": "hi"}']
