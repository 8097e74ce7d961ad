"""The senders of `harness.report.slack` (slack-sdk clients with retries), imported only to send."""

from __future__ import annotations

import random

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry import (
    BackoffRetryIntervalCalculator,
    ConnectionErrorRetryHandler,
    Jitter,
    RateLimitErrorRetryHandler,
    RetryHandler,
)
from slack_sdk.http_retry.builtin_handlers import ServerErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from harness.report.blocks import SlackMessage, SlackReport
from harness.report.slack import Sender, SlackConfig, SlackError

SEND_ERRORS = (SlackApiError, SlackClientError, SlackError, OSError)  # a report not delivered, not a crash


class _ProportionalJitter(Jitter):
    """Up to +25 % of the interval (slack-sdk's default adds up to a whole second)."""

    def recalculate(self, duration: float) -> float:
        return duration * (1.0 + 0.25 * random.random())


def retry_handlers(config: SlackConfig) -> list[RetryHandler]:
    calc = BackoffRetryIntervalCalculator(backoff_factor=config.backoff_s, jitter=_ProportionalJitter())
    return [RateLimitErrorRetryHandler(max_retry_count=config.max_retries),
            ServerErrorRetryHandler(max_retry_count=config.max_retries, interval_calculator=calc),
            ConnectionErrorRetryHandler(max_retry_count=config.max_retries, interval_calculator=calc)]


class BotSender:
    """chat.postMessage with a bot token; failure details go in the message's thread."""

    def __init__(self, config: SlackConfig) -> None:
        self.config = config
        self.client = WebClient(token=config.bot_token, base_url=config.base_url, timeout=config.timeout_s,
                                retry_handlers=retry_handlers(config))

    def _post(self, message: SlackMessage, thread_ts: str | None = None) -> str:
        resp = self.client.chat_postMessage(channel=self.config.channel or "", text=message.text,
                                            blocks=message.blocks, thread_ts=thread_ts,
                                            unfurl_links=False, unfurl_media=False)
        return str(resp["ts"])

    def send(self, report: SlackReport) -> int:
        self.sent = 0
        ts = self._post(report.main)
        self.sent = 1
        for reply in report.replies:
            self._post(reply, thread_ts=ts)
            self.sent += 1
        return self.sent


class WebhookSender:
    """An incoming webhook: the main message only (webhooks cannot post into a thread)."""

    def __init__(self, config: SlackConfig) -> None:
        self.client = WebhookClient(config.webhook_url or "", timeout=config.timeout_s,
                                    retry_handlers=retry_handlers(config))

    def send(self, report: SlackReport) -> int:
        resp = self.client.send(text=report.main.text, blocks=report.main.blocks, unfurl_links=False)
        if resp.status_code != 200:
            raise SlackError(f"the webhook answered HTTP {resp.status_code}: {str(resp.body)[:200]}")
        return 1


def make_sender(config: SlackConfig) -> Sender:
    return BotSender(config) if config.bot_token else WebhookSender(config)


def describe(exc: Exception) -> str:
    if isinstance(exc, SlackApiError):
        status = getattr(exc.response, "status_code", "?")
        data = exc.response.data if isinstance(exc.response.data, dict) else {}
        return f"HTTP {status}, error {data.get('error', 'unknown')}"
    if isinstance(exc, SlackError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"
