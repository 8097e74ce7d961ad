"""Posting the report. FakeServer (tests/report/fake_http.py) is a local HTTP server that STANDS IN FOR
SLACK: the Web API (`chat.postMessage`, reached through slack-sdk's `base_url`) and an incoming
webhook. It records every request and answers 429 / 500 when a test tells it to."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cli import main
from harness.report.slack import SlackConfig, notify_slack
from harness.store.db import Store

from .conftest import Populated
from .fake_http import FakeServer, Reply, Request

TOKEN = "xoxb-000-SECRET-TOKEN"


class SlackScript:
    """Answers chat.postMessage: first the scripted failures, then success with a ts."""

    def __init__(self, failures: list[int] | None = None, always: int | None = None) -> None:
        self.failures = list(failures or [])
        self.always = always
        self.n = 0

    def __call__(self, req: Request) -> Reply:
        if self.always:
            return self.always, {}, {"ok": False, "error": "service_unavailable"}
        if self.failures:
            status = self.failures.pop(0)
            return status, ({"Retry-After": "0"} if status == 429 else {}), (
                {"ok": False, "error": "ratelimited"} if status == 429 else "upstream error")
        if req.path.endswith("/hook"):
            return 200, {}, "ok"
        self.n += 1
        return 200, {}, {"ok": True, "channel": "C1", "ts": f"1700000000.00{self.n:04d}"}


@pytest.fixture
def slack() -> Iterator[FakeServer]:
    server = FakeServer(SlackScript())
    yield server
    server.close()


def bot_config(server: FakeServer, **kw: object) -> SlackConfig:
    return SlackConfig(bot_token=TOKEN, channel="#ci-reports", base_url=server.url + "/api/", backoff_s=0.01,
                       **kw)  # type: ignore[arg-type]


def test_bot_posts_report_and_thread(populated: Populated, slack: FakeServer, tmp_path: Path) -> None:
    slack.script = SlackScript(failures=[429, 500, 503])  # rate limited, then two server errors
    out = tmp_path / "report.json"
    result = notify_slack(Store.open(populated.url), bot_config(slack), run_id=populated.run_bad, out=out)
    assert result.delivered and result.error is None
    ok = [r for r in slack.requests if r.status == 200]
    assert [r.status for r in slack.requests[:3]] == [429, 500, 503]
    assert all(r.path == "/api/chat.postMessage" for r in slack.requests)
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in slack.requests)
    main_msg, *replies = [r.body for r in ok]
    assert main_msg["channel"] == "#ci-reports" and "thread_ts" not in main_msg
    assert {r["thread_ts"] for r in replies} == {"1700000000.000001"}
    assert [r["text"] for r in replies] == ["llama: 4 failing", "mistral: 2 failing"]  # flaky ones too
    blocks = json.loads(main_msg["blocks"]) if isinstance(main_msg["blocks"], str) else main_msg["blocks"]
    assert blocks[0]["text"]["text"] == "🔴 Nightly CI · schedule · main"
    assert result.posted == 1 + len(replies)
    saved = out.read_text()
    assert json.loads(saved)["blocks"] == blocks
    assert TOKEN not in saved


def test_webhook_retries_server_errors(populated: Populated, slack: FakeServer, tmp_path: Path) -> None:
    slack.script = SlackScript(failures=[500, 429])
    cfg = SlackConfig(webhook_url=slack.url + "/hook", backoff_s=0.01)
    result = notify_slack(Store.open(populated.url), cfg, run_id=populated.run_bad, out=tmp_path / "r.json")
    assert result.delivered and result.posted == 1
    assert [r.status for r in slack.requests] == [500, 429, 200]
    assert slack.requests[-1].path == "/hook" and slack.requests[-1].body["blocks"][0]["type"] == "header"


def test_slack_down_keeps_file_and_exits_0(populated: Populated, slack: FakeServer, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    slack.script = SlackScript(always=503)
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("SLACK_CHANNEL", "#ci")
    monkeypatch.setenv("SLACK_API_URL", slack.url + "/api/")
    monkeypatch.setenv("SLACK_RETRY_BACKOFF_S", "0.01")
    out = tmp_path / "kept.json"
    code = main(["notify", "slack", "--db", populated.url, "--run", str(populated.run_bad), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.err.splitlines() == [
        f"harness: report of run {populated.run_bad} NOT sent to Slack (HTTP 503, error service_unavailable); "
        f"payload kept in {out}"]
    assert TOKEN not in captured.out + captured.err
    assert len(slack.requests) == 1 + 4  # the try and SlackConfig.max_retries retries
    monkeypatch.setenv("SLACK_MAX_RETRIES", "many")
    assert main(["notify", "slack", "--db", populated.url, "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "harness: SLACK_MAX_RETRIES='many' is not a number"
    assert json.loads(out.read_text())["blocks"][0]["type"] == "header"


def test_webhook_down_never_prints_the_url(populated: Populated, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    server = FakeServer(SlackScript(always=500))
    hook = server.url + "/hook/T000/B000/SECRETPATH"
    cfg = SlackConfig(webhook_url=hook, backoff_s=0.01, max_retries=1)
    try:
        result = notify_slack(Store.open(populated.url), cfg, run_id=populated.run_bad, out=tmp_path / "r.json")
    finally:
        server.close()
    assert not result.delivered and "HTTP 500" in (result.error or "")
    assert "SECRETPATH" not in (result.error or "")


def test_unreachable_slack(populated: Populated, tmp_path: Path) -> None:
    server = FakeServer(SlackScript())
    url = server.url + "/api/"
    server.close()  # nothing listens there any more
    result = notify_slack(Store.open(populated.url), SlackConfig(bot_token=TOKEN, channel="#c", base_url=url,
                                                                 backoff_s=0.01, max_retries=1),
                          run_id=populated.run_bad, out=tmp_path / "r.json")
    assert not result.delivered and result.error and TOKEN not in result.error
    assert (tmp_path / "r.json").exists()


def test_dry_run_prints_payload_without_credentials(populated: Populated, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    for var in ("SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL", "SLACK_CHANNEL"):
        monkeypatch.delenv(var, raising=False)
    assert main(["notify", "slack", "--db", populated.url, "--run", str(populated.run_bad), "--dry-run",
                 "--channel", "#x"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["channel"] == "#x" and payload["blocks"][0]["type"] == "header"
    assert len(payload["thread_replies"]) == 2


def test_missing_credentials_is_bad_input(populated: Populated, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for var in ("SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL", "SLACK_CHANNEL"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "never.json"
    assert main(["notify", "slack", "--db", populated.url, "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("harness: no Slack credentials: set SLACK_BOT_TOKEN")
    assert not out.exists()


def test_users_file_mentions_culprit(populated: Populated, tmp_path: Path) -> None:
    users = tmp_path / "slack-users.toml"
    users.write_text('"ada@example.com" = "U0ADA"\n')
    result = notify_slack(Store.open(populated.url), SlackConfig(channel="#c", users_file=str(users)),
                          run_id=populated.run_bad, dry_run=True)
    assert "by <@U0ADA> · PR" in json.dumps(result.payload, ensure_ascii=False)
    users.write_text("not = [valid")
    with pytest.raises(Exception, match="cannot read the Slack users file"):
        notify_slack(Store.open(populated.url), SlackConfig(users_file=str(users)), dry_run=True)
