"""The pure side of blocktrain.notify: message builders and configuration, without network."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from blocktrain.core.jobenv import JobContext
from blocktrain.core.redact import Redactor
from blocktrain.errors import Terminated
from blocktrain.notify import NotifyConfig
from blocktrain.notify.messages import (
    BLOCK_LIMIT,
    TRUNCATED,
    crashed_message,
    finished_message,
    format_duration,
    killed_message,
    requeued_message,
    resume_message,
    run_title,
    start_message,
    traceback_tail,
)

SECRET = "canary-5f2a9c"
REDACT = Redactor.from_environ({"BLOCKTRAIN_CANARY_TOKEN": SECRET})
CONTEXT = JobContext(host="node07", job_id="4242", attempt=1)
RUN_URL = "http://mlflow.internal:5000/#/experiments/3/runs/abc123"


def section(text: str) -> dict[str, object]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def texts(payload: Mapping[str, Any]) -> list[str]:
    return [block["text"]["text"] for block in payload["blocks"]]


def throw(error: BaseException) -> None:
    raise error


def raised(error: BaseException) -> BaseException:
    """``error`` with a real traceback, as the annotators see it."""
    with pytest.raises(type(error)) as caught:
        throw(error)
    return caught.value


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.4, "0s"), (59.9, "59s"), (65, "1m05s"), (3725, "1h02m"), (90000, "25h00m")],
)
def test_format_duration(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown


def test_start_message_shows_args_job_attempt_and_run_link() -> None:
    payload = start_message(
        "train", CONTEXT, {"lr": 0.1, "epochs": 3, "data": "/data/x"}, run_url=RUN_URL,
        redact=REDACT,
    )  # fmt: skip
    header = ":rocket: *train* started on node07, job 4242 (attempt 1)"
    assert payload == {
        "text": header,
        "blocks": [
            section(header),
            section(f"<{RUN_URL}|MLflow run>"),
            section('*Arguments*\n```\nlr = 0.1\nepochs = 3\ndata = "/data/x"\n```'),
        ],
    }


def test_start_message_without_job_link_or_args() -> None:
    payload = start_message("train", JobContext(host="laptop"), {}, run_url=None, redact=REDACT)
    assert payload["text"] == ":rocket: *train* started on laptop (attempt 1)"
    assert len(texts(payload)) == 1


def test_messages_name_the_run() -> None:
    assert run_title("train", None) == "train"
    assert run_title("train", "train") == "train"
    assert run_title("train", "train-ablation-lr=0.01") == "train-ablation-lr=0.01"
    assert run_title("train", "lr-sweep-a") == "lr-sweep-a (train)"
    title = run_title("train", "train-baseline")
    start = start_message(title, CONTEXT, {}, run_url=None, redact=REDACT)
    assert start["text"] == ":rocket: *train-baseline* started on node07, job 4242 (attempt 1)"
    end = finished_message(title, CONTEXT, duration_s=5, run_url=None, mention=None, redact=REDACT)
    assert str(end["text"]).startswith(":white_check_mark: *train-baseline* finished after 5s")
    crash = crashed_message(
        title, CONTEXT, raised(ValueError("x")), duration_s=5, run_url=None, mention=None,
        redact=REDACT,
    )  # fmt: skip
    assert str(crash["text"]).startswith(":x: *train-baseline* crashed after 5s")


def test_embedded_store_run_is_named_not_linked() -> None:
    payload = start_message("train", CONTEXT, {}, run_url="run abc (sqlite:///m.db)", redact=REDACT)
    assert texts(payload)[1] == "MLflow run abc (sqlite:///m.db)"


def test_resume_is_one_line() -> None:
    context = JobContext(host="node08", job_id="4242", attempt=3)
    payload = resume_message("train", context, run_url=RUN_URL, redact=REDACT)
    line = (
        f":arrow_forward: *train* resumed, attempt 3 on node08, job 4242 · <{RUN_URL}|MLflow run>"
    )
    assert payload == {"text": line, "blocks": [section(line)]}


def test_finished_message_shows_duration_result_and_metrics() -> None:
    payload = finished_message(
        "train", CONTEXT, duration_s=3725.2, result={"val_acc": 0.93, "checkpoint": "/c/last.pt"},
        metrics={"loss": 0.1234567, "step": 5000.0}, run_url=RUN_URL, mention=None, redact=REDACT,
    )  # fmt: skip
    header = ":white_check_mark: *train* finished after 1h02m on node07, job 4242 (attempt 1)"
    assert payload == {
        "text": header,
        "blocks": [
            section(header),
            section(f"<{RUN_URL}|MLflow run>"),
            section('*Returned*\n```\n{"val_acc": 0.93, "checkpoint": "/c/last.pt"}\n```'),
            section("*Final metrics*\n```\nloss = 0.123457\nstep = 5000\n```"),
        ],
    }


def test_finished_without_result_or_metrics_is_the_header_alone() -> None:
    payload = finished_message(
        "train", CONTEXT, duration_s=4, run_url=None, mention=None, redact=REDACT
    )
    assert texts(payload) == [
        ":white_check_mark: *train* finished after 4s on node07, job 4242 (attempt 1)"
    ]


def test_crash_message_shows_exception_and_traceback_tail() -> None:
    def load() -> None:
        raise KeyError("missing shard")

    def step() -> None:
        try:
            load()
        except KeyError as exc:
            raise ValueError("loss is nan\nsecond line of the message") from exc

    with pytest.raises(ValueError, match="loss is nan") as caught:
        step()
    error = caught.value
    payload = crashed_message(
        "train", CONTEXT, error, duration_s=65, run_url=None, mention=None, redact=REDACT
    )
    header, tail = texts(payload)
    assert header == (
        ":x: *train* crashed after 1m05s on node07, job 4242 (attempt 1): ValueError: loss is nan"
    )
    assert tail.startswith("*Traceback (last 15 lines)*\n```\n")
    assert tail.endswith("ValueError: loss is nan\nsecond line of the message\n```")
    shown = tail.removeprefix("*Traceback (last 15 lines)*\n```\n").removesuffix("\n```")
    assert shown == traceback_tail(error)
    assert len(shown.splitlines()) == 15
    assert len(traceback_tail(error, lines=100).splitlines()) > 15
    assert "in step" in shown


def test_requeue_is_one_line() -> None:
    context = JobContext(host="node07", job_id="4242", attempt=2)
    payload = requeued_message("train", context, duration_s=3725, redact=REDACT)
    line = (
        ":double_vertical_bar: *train* paused for requeue after 1h02m (attempt 2) "
        "on node07, job 4242"
    )
    assert payload == {"text": line, "blocks": [section(line)]}


def test_killed_message_names_the_signal() -> None:
    error = raised(Terminated("received signal 15"))
    payload = killed_message(
        "train", CONTEXT, error, duration_s=12, run_url=None, mention=None, redact=REDACT
    )
    assert payload["text"] == (
        ":octagonal_sign: *train* killed after 12s on node07, job 4242 (attempt 1): "
        "Terminated: received signal 15"
    )


def test_mention_is_prepended_to_end_crash_and_kill_messages_only() -> None:
    mention = "<@U123>"
    error = raised(RuntimeError("boom"))
    ended = [
        finished_message("t", CONTEXT, duration_s=1, run_url=None, mention=mention, redact=REDACT),
        crashed_message(
            "t", CONTEXT, error, duration_s=1, run_url=None, mention=mention, redact=REDACT
        ),
        killed_message(
            "t",
            CONTEXT,
            raised(KeyboardInterrupt()),
            duration_s=1,
            run_url=None,
            mention=mention,
            redact=REDACT,
        ),
    ]
    for payload in ended:
        assert str(payload["text"]).startswith("<@U123> ")
        assert texts(payload)[0].startswith("<@U123> ")
    others = [
        start_message("t", CONTEXT, {}, run_url=None, redact=REDACT),
        requeued_message("t", CONTEXT, duration_s=1, redact=REDACT),
    ]
    assert all("<@U123>" not in json.dumps(p) for p in others)


def test_long_argument_dumps_are_truncated_within_slack_limits() -> None:
    args = {f"arg{i}": "x" * 1000 for i in range(20)}
    payload = start_message("train", CONTEXT, args, run_url=None, redact=REDACT)
    dump = texts(payload)[1]
    assert len(dump) <= BLOCK_LIMIT < 3000
    assert dump.startswith("*Arguments*\n```\narg0 = ")
    assert dump.endswith("\n```")
    first = dump.splitlines()[2]
    assert len(first) == len("arg0 = ") + 300
    assert first.endswith(TRUNCATED)
    assert TRUNCATED + "\n```" in dump  # the dump as a whole was cut too


def test_long_traceback_keeps_its_end() -> None:
    error = raised(ValueError("v" * 10_000))
    payload = crashed_message(
        "train", CONTEXT, error, duration_s=1, run_url=None, mention=None, redact=REDACT
    )
    header, tail = texts(payload)
    assert len(header) <= 400
    assert header.endswith(TRUNCATED)
    assert len(tail) <= BLOCK_LIMIT
    assert tail.endswith("vvvv\n```")
    assert f"```\n{TRUNCATED}" in tail


def test_results_and_metrics_are_truncated() -> None:
    payload = finished_message(
        "train", CONTEXT, duration_s=1, result=list(range(5000)),
        metrics={f"metric_{i}": float(i) for i in range(1000)}, run_url=None, mention=None,
        redact=REDACT,
    )  # fmt: skip
    _, returned, metrics = texts(payload)
    assert len(returned) < 1100
    assert TRUNCATED in returned
    assert len(metrics) <= BLOCK_LIMIT
    assert all(len(t) <= BLOCK_LIMIT for t in texts(payload))


def test_secret_in_args_is_redacted_even_across_a_truncation_boundary() -> None:
    # Placed so that a cut at the value limit would fall inside the secret.
    args = {"token": SECRET, "note": "x" * 280 + SECRET + "y" * 50, "nested": {"k": [SECRET]}}
    payload = start_message("train", CONTEXT, args, run_url=None, redact=REDACT)
    dump = json.dumps(payload)
    assert "canary" not in dump
    assert 'token = \\"***\\"' in dump


def test_secret_in_an_exception_message_is_redacted() -> None:
    error = raised(PermissionError(f"token {SECRET} rejected by https://user:pw@s3.example"))
    for payload in (
        crashed_message(
            "train", CONTEXT, error, duration_s=1, run_url=None, mention=None, redact=REDACT
        ),
        killed_message(
            "train", CONTEXT, error, duration_s=1, run_url=None, mention=None, redact=REDACT
        ),
    ):
        dump = json.dumps(payload)
        assert SECRET not in dump
        assert "user:pw" not in dump
        assert "token *** rejected by https://***@s3.example" in dump


def test_user_text_cannot_ping_or_forge_links() -> None:
    payload = start_message(
        "train", CONTEXT, {"note": "<!channel> & <http://x|y>"}, run_url=None, redact=REDACT
    )
    assert '"&lt;!channel&gt; &amp; &lt;http://x|y&gt;"' in texts(payload)[1]


def test_config_reads_the_environment_with_fallbacks() -> None:
    assert NotifyConfig.from_environ({}) == NotifyConfig()
    assert not NotifyConfig.from_environ({"SLACK_WEBHOOK_URL": "  "}).enabled
    fallback = NotifyConfig.from_environ({"SLACK_WEBHOOK_URL": "https://hooks.slack.com/a"})
    assert fallback.webhook_url == "https://hooks.slack.com/a"
    config = NotifyConfig.from_environ(
        {
            "BLOCKTRAIN_SLACK_WEBHOOK_URL": "https://hooks.slack.com/b",
            "SLACK_WEBHOOK_URL": "https://hooks.slack.com/a",
            "BLOCKTRAIN_SLACK_MENTION": "<@U123>",
            "BLOCKTRAIN_SLACK_TIMEOUT_SECONDS": "1.5",
        }
    )
    assert config == NotifyConfig(
        webhook_url="https://hooks.slack.com/b", mention="<@U123>", timeout_s=1.5
    )
    explicit = NotifyConfig.from_environ({"BLOCKTRAIN_SLACK_MENTION": "<@U1>"}, mention="<@U2>")
    assert explicit.mention == "<@U2>"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SLACK_WEBHOOK_URL": "file:///etc/passwd"}, "must start with https://"),
        ({"BLOCKTRAIN_SLACK_TIMEOUT_SECONDS": "soon"}, "is not a number of seconds"),
        ({"BLOCKTRAIN_SLACK_TIMEOUT_SECONDS": "0"}, "must be positive"),
    ],
)
def test_config_rejects_bad_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        NotifyConfig.from_environ(env)
    assert "passwd" not in str(caught.value)
