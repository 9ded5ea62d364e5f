"""The only I/O of notifications: one POST to the incoming webhook, retried, never raising."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from http.client import HTTPException

from blocktrain.core.outcome import one_line
from blocktrain.core.redact import Redactor
from blocktrain.core.retry import RetryPolicy, retry_call
from blocktrain.core.values import JSON
from blocktrain.notify.config import NotifyConfig

_log = logging.getLogger("blocktrain.notify")
# A failed post is tried again at once: the job waits for the message, so no backoff.
_RETRYABLE = (OSError, HTTPException, ValueError)


def post(payload: Mapping[str, JSON], config: NotifyConfig, redact: Redactor) -> bool:
    """Send one message, retrying once; a failure is a one-line warning, never an exception."""
    if config.webhook_url is None:
        return False
    url, body = config.webhook_url, json.dumps(redact.value(payload)).encode()
    policy = RetryPolicy(attempts=config.retries + 1, first_delay_s=0.0, max_delay_s=0.0)
    try:
        retry_call(
            lambda: _send(url, body, config.timeout_s),
            policy=policy,
            retryable=lambda exc: isinstance(exc, _RETRYABLE),
            what="Slack notification",
            log=None,  # one warning below, redacted, instead of one per try
        )
    except _RETRYABLE as exc:
        _log.warning(
            "Slack notification not sent after %d tries (%s); the job goes on",
            policy.attempts,
            redact(one_line(exc)),
        )
        return False
    return True


def _send(url: str, body: bytes, timeout_s: float) -> None:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    # NotifyConfig restricts the scheme to http(s), which is what S310 asks to check.
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            response.read()
    except urllib.error.HTTPError as exc:
        exc.close()  # its unread body would keep the connection open
        raise
