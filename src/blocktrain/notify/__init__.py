"""Slack notifications for an entry function: ``@notify`` posts start, end, crash and requeue.

- :mod:`~blocktrain.notify.config`: the webhook, mention and timeout from the environment;
- :mod:`~blocktrain.notify.messages`: the messages, as pure functions of plain values;
- :mod:`~blocktrain.notify.slack`: the one POST (the only I/O), retried and never raising;
- :mod:`~blocktrain.notify.notifier`: ``@notify`` and :func:`notifying`, one session per call.

Must not: import torch or mlflow, fail the job, or post from any rank but global rank 0.
"""

from blocktrain.notify.config import NotifyConfig
from blocktrain.notify.notifier import NotifySession, notify, notifying
from blocktrain.notify.slack import post

__all__ = ["NotifyConfig", "NotifySession", "notify", "notifying", "post"]
