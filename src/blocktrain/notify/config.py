"""Where and how notifications go: the webhook, mention and timeout, read from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from blocktrain.core import envvars
from blocktrain.core.values import env_seconds

WEBHOOK_VARIABLES = (envvars.SLACK_WEBHOOK_URL.name, "SLACK_WEBHOOK_URL")
DEFAULT_TIMEOUT_S = 3.0


@dataclass(frozen=True, kw_only=True, slots=True)
class NotifyConfig:
    """Where and how notifications are posted; read from the environment when a call starts."""

    webhook_url: str | None = None
    """``None`` turns every notification into a no-op."""
    mention: str | None = None
    """Prepended to end and crash messages: ``<@U123>`` for a member, ``<!here>`` for a channel."""
    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = 1

    def __post_init__(self) -> None:
        if self.webhook_url is not None and not self.webhook_url.startswith(
            ("https://", "http://")
        ):
            # The URL is itself a credential, so the message does not repeat it.
            raise ValueError("the Slack webhook URL must start with https://")
        if not self.timeout_s > 0:
            raise ValueError(f"the Slack timeout must be positive, got {self.timeout_s}")
        if self.retries < 0:
            raise ValueError(f"retries must be zero or more, got {self.retries}")

    @property
    def enabled(self) -> bool:
        return self.webhook_url is not None

    @property
    def max_post_s(self) -> float:
        """The longest one message can take: every try timing out."""
        return self.timeout_s * (self.retries + 1)

    @classmethod
    def from_environ(cls, env: Mapping[str, str], *, mention: str | None = None) -> NotifyConfig:
        """Read the webhook, mention and timeout; an explicit ``mention`` wins over the variable."""
        urls = (env.get(name, "").strip() for name in WEBHOOK_VARIABLES)
        return cls(
            webhook_url=next((url for url in urls if url), None),
            mention=mention or env.get(envvars.SLACK_MENTION.name, "").strip() or None,
            timeout_s=env_seconds(env, envvars.SLACK_TIMEOUT_SECONDS.name, DEFAULT_TIMEOUT_S),
        )
