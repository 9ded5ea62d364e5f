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
from blocktrain.core.values import JSON
from blocktrain.notify.config import NotifyConfig

_log = logging.getLogger("blocktrain.notify")


def post(payload: Mapping[str, JSON], config: NotifyConfig, redact: Redactor) -> bool:
    """Send one message, retrying once; a failure is a one-line warning, never an exception."""
    if config.webhook_url is None:
        return False
    body = json.dumps(redact.value(payload)).encode()
    errors: list[str] = []
    for _ in range(config.retries + 1):
        try:
            _send(config.webhook_url, body, config.timeout_s)
        except (OSError, HTTPException, ValueError) as exc:
            errors.append(one_line(exc))
        else:
            return True
    _log.warning(
        "Slack notification not sent after %d tries (%s); the job goes on",
        len(errors),
        redact(errors[-1]),
    )
    return False


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
