"""Posting the run report to Slack: env-backed config, error class, two senders, and `notify_slack`.

A bot token (SLACK_BOT_TOKEN) posts with chat.postMessage and puts failure details in the thread; an
incoming webhook (SLACK_WEBHOOK_URL) posts the main message only (webhooks cannot thread). Both retry
with backoff on 429 and 5xx (slack-sdk retry handlers; the senders live in `slack_send`, imported only
when a report is sent, so that `--dry-run` loads no slack-sdk). The payload is always written to a file
first; when Slack stays unreachable or refuses the message, that file is the report, the command
says so and still exits 0 so chat never fails CI. Tokens and webhook URLs never appear in output.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from harness.errors import HarnessError
from harness.report.blocks import Links, Mentions, SlackReport, build_report
from harness.report.data import ReportData, collect_report

if TYPE_CHECKING:
    from harness.store.db import Store

DEFAULT_BASE_URL = "https://slack.com/api/"


class SlackError(HarnessError):
    """Slack is misconfigured, or refused or never received the report."""


@dataclass(frozen=True)
class SlackConfig:
    """SLACK_BOT_TOKEN / SLACK_WEBHOOK_URL / SLACK_CHANNEL (flags override); SLACK_USERS_FILE maps git
    emails and GitHub logins to Slack user ids (TOML or JSON: `"ada@example.com" = "U0123"`);
    SLACK_API_URL points the Web API client elsewhere (a proxy, or a local stand-in in tests);
    SLACK_MAX_RETRIES (4) and SLACK_RETRY_BACKOFF_S (0.5: waits 0.5, 1, 2, 4 s) tune retries of 5xx
    and connection errors (429s wait as long as Slack's Retry-After says)."""

    bot_token: str | None = None
    webhook_url: str | None = None
    channel: str | None = None
    users_file: str | None = None
    base_url: str = DEFAULT_BASE_URL
    max_retries: int = 4
    backoff_s: float = 0.5
    timeout_s: int = 20

    @classmethod
    def from_env(cls, channel: str | None = None, users_file: str | None = None, **overrides: Any) -> SlackConfig:
        return cls(bot_token=os.environ.get("SLACK_BOT_TOKEN") or None,
                   webhook_url=os.environ.get("SLACK_WEBHOOK_URL") or None,
                   channel=channel or os.environ.get("SLACK_CHANNEL") or None,
                   users_file=users_file or os.environ.get("SLACK_USERS_FILE") or None,
                   base_url=os.environ.get("SLACK_API_URL") or DEFAULT_BASE_URL,
                   max_retries=_env_number("SLACK_MAX_RETRIES", cls.max_retries, int),
                   backoff_s=_env_number("SLACK_RETRY_BACKOFF_S", cls.backoff_s, float), **overrides)

    def secrets(self) -> list[str]:
        return [s for s in (self.bot_token, self.webhook_url) if s]

    def redact(self, text: str) -> str:
        """`text` with every token and webhook URL replaced by ***."""
        for secret in self.secrets():
            text = text.replace(secret, "***")
        return text

    def validate(self) -> None:
        """Raise SlackError unless a message could be sent with this config."""
        if not self.bot_token and not self.webhook_url:
            raise SlackError("no Slack credentials: set SLACK_BOT_TOKEN (with SLACK_CHANNEL) or "
                             "SLACK_WEBHOOK_URL, or use --dry-run")
        if self.bot_token and not self.webhook_url and not self.channel:
            raise SlackError("SLACK_BOT_TOKEN needs a channel: set SLACK_CHANNEL or pass --channel")

    def mentions(self) -> Mentions:
        """The author map of `users_file` (missing or unreadable file: a one-line SlackError)."""
        if not self.users_file:
            return Mentions()
        path = Path(self.users_file)
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix == ".json":
                data = json.loads(text)
            else:
                import tomllib  # Python 3.11+; use a .json users file on 3.10

                data = tomllib.loads(text)
        except (OSError, ValueError) as exc:
            raise SlackError(f"cannot read the Slack users file {path}: {exc}") from None
        users = data.get("users", data) if isinstance(data, dict) else None
        if not isinstance(users, dict) or not all(isinstance(v, str) for v in users.values()):
            raise SlackError(f"{path} must map emails / GitHub logins to Slack user ids, "
                             'e.g. "ada@example.com" = "U0123ABC"')
        return Mentions(users)


def _env_number(name: str, default: Any, kind: type) -> Any:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SlackError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise SlackError(f"{name}={raw!r} must be >= 0")
    return value


class Sender(Protocol):
    """Delivers a report; returns how many messages Slack accepted."""

    def send(self, report: SlackReport) -> int: ...


@dataclass
class NotifyResult:
    """What `notify_slack` did."""

    run_id: int
    out: Path | None
    posted: int = 0
    delivered: bool = False
    error: str | None = None
    payload: dict[str, Any] | None = None


def _collect(source: Store | str | Any, run_id: int | None) -> ReportData:
    """The report, read from a store URL (through `read_connection`, closed before anything is sent: no
    SQLAlchemy on a current store), a `Store` or a connection."""
    if not isinstance(source, str):
        return collect_report(source, run_id)
    from harness.store.reading import read_connection

    with read_connection(source) as conn:
        return collect_report(conn, run_id)


def notify_slack(source: Store | str | Any, config: SlackConfig, *, run_id: int | None = None,
                 out: str | Path | None = None, dry_run: bool = False, links: Links | None = None,
                 sender: Sender | None = None) -> NotifyResult:
    """Collect the run's report from `source` (a store URL, a `Store` or a connection), keep it as a
    file, and post it (unless `dry_run`)."""
    if not dry_run and sender is None:
        config.validate()
    mentions = config.mentions()
    data = _collect(source, run_id)
    report = build_report(data, links or Links.from_env(), mentions)
    payload = report.payload(config.channel)
    path = Path(out) if out else (None if dry_run else Path(".harness") / "reports" / f"slack-run-{data.run_id}.json")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    result = NotifyResult(run_id=data.run_id, out=path, payload=payload)
    if dry_run:
        return result
    from harness.report.slack_send import SEND_ERRORS, describe, make_sender  # slack-sdk: only when sending

    sender = sender or make_sender(config)
    try:
        result.posted = sender.send(report)
        result.delivered = True
    except SEND_ERRORS as exc:
        result.posted = getattr(sender, "sent", 0)
        result.error = config.redact(describe(exc))
    return result


def outcome_line(result: NotifyResult) -> str:
    """One line for the terminal about what happened to the report."""
    where = f"; report kept in {result.out}" if result.out else ""
    if result.delivered:
        return f"posted the report of run {result.run_id} to Slack ({result.posted} message(s)){where}"
    part = f", {result.posted} message(s) got through" if result.posted else ""
    kept = f"; payload kept in {result.out}" if result.out else ""
    return f"harness: report of run {result.run_id} NOT sent to Slack ({result.error}{part}){kept}"
