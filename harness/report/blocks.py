"""Slack Block Kit for one run's report, built from `ReportData` alone (no I/O).

Within Slack's limits: at most 50 blocks a message, 3000 characters a section text, 150 a header,
10 fields of 2000; longer lists end in "… N more" with a link. Every piece of text that comes from
tests, commits or people is escaped (`&`, `<`, `>`), so a test name can never become a mention
(`<!channel>`) or a link. New failures are grouped by culprit, then by failure signature: one entry
per culprit naming its tests, models and runner groups compactly, then one line per way of failing
("12 models: `RuntimeError: expected scalar type BFloat16` since abc1234"), so one broken code path
in every model family is one line, not one per test. Every failing test (new, still
failing, flaky) is in the thread replies, one model at a time, grouped by signature; the header's
failing count, the counts line and the thread add up to the same number.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any
from urllib.parse import quote

from harness.report.data import CulpritInfo, FailureItem, ReportData, wall_time_text

MAX_BLOCKS = 50
MAX_SECTION = 3000
MAX_HEADER = 150
MAX_FIELD = 2000
MAX_FALLBACK = 3000


def escape(text: str | None) -> str:
    """Slack mrkdwn escaping: the three control characters become entities."""
    return (text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def link(url: str | None, label: str) -> str:
    """`<url|label>` with the label escaped (plain escaped label when there is no URL)."""
    if not url:
        return escape(label)
    safe = quote(url, safe=":/?#[]@!$&'()*+,;=%~.-_")
    return f"<{safe}|{escape(label).replace('|', '¦')}>"


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Links:
    """Where the report links to: the repository (commits, PRs), the CI run and the dashboards."""

    repo_url: str | None = None
    run_url: str | None = None
    dashboard_url: str | None = None

    @classmethod
    def from_env(cls, dashboard_url: str | None = None) -> Links:
        """From GitHub Actions' variables (GITHUB_SERVER_URL, GITHUB_REPOSITORY, GITHUB_RUN_ID)."""
        server = os.environ.get("GITHUB_SERVER_URL", "https://github.com")
        repo = os.environ.get("GITHUB_REPOSITORY")
        run = os.environ.get("GITHUB_RUN_ID")
        repo_url = f"{server}/{repo}" if repo else None
        return cls(repo_url, f"{repo_url}/actions/runs/{run}" if repo_url and run else None,
                   dashboard_url or os.environ.get("GRAFANA_URL"))

    def commit(self, sha: str | None) -> str | None:
        return f"{self.repo_url}/commit/{sha}" if self.repo_url and sha else None

    def pr(self, number: int | None) -> str | None:
        return f"{self.repo_url}/pull/{number}" if self.repo_url and number else None

    @property
    def more(self) -> str | None:
        return self.run_url or self.dashboard_url


class Mentions:
    """Culprit authors to Slack: `<@U…>` for mapped git emails / GitHub logins, the name otherwise."""

    def __init__(self, users: dict[str, str] | None = None) -> None:
        self.users = {k.strip().lower(): v for k, v in (users or {}).items()}

    def user_id(self, author: str | None, email: str | None) -> str | None:
        keys = [email or "", author or ""]
        if email and email.lower().endswith("@users.noreply.github.com"):  # 123+login@users.noreply…
            keys.append(email.split("@")[0].split("+")[-1])
        for key in keys:
            if key and key.strip().lower() in self.users:
                return self.users[key.strip().lower()]
        return None

    def render(self, author: str | None, email: str | None) -> str:
        uid = self.user_id(author, email)
        if uid and uid.replace("_", "").isalnum():
            return f"<@{uid}>"
        return escape(author or email or "unknown author")


@dataclass
class SlackMessage:
    """One Slack message: fallback text and blocks."""

    text: str
    blocks: list[dict[str, Any]]


@dataclass
class SlackReport:
    """The main message and its thread replies."""

    main: SlackMessage
    replies: list[SlackMessage] = field(default_factory=list)

    def payload(self, channel: str | None = None) -> dict[str, Any]:
        return {"channel": channel, "text": self.main.text, "blocks": self.main.blocks,
                "thread_replies": [{"text": r.text, "blocks": r.blocks} for r in self.replies]}


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, MAX_SECTION)}}


def pack(lines: list[str], max_blocks: int, more_url: str | None, title: str = "") -> list[dict[str, Any]]:
    """Lines packed into at most `max_blocks` sections of <= 3000 characters; what does not fit is
    counted in a final "… N more" line."""
    blocks: list[str] = []
    current = title
    for i, line in enumerate(lines):
        line = clip(line, MAX_SECTION - 200)
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) <= MAX_SECTION - 120:
            current = candidate
            continue
        if len(blocks) + 1 >= max_blocks:  # keep the last block for the "more" line
            rest = len(lines) - i
            current += f"\n… {rest} more" + (f" ({link(more_url, 'see all')})" if more_url else "")
            blocks.append(current)
            return [section(b) for b in blocks]
        blocks.append(current)
        current = line
    if current:
        blocks.append(current)
    return [section(b) for b in blocks]


def _culprit_text(c: CulpritInfo | None, links: Links, mentions: Mentions) -> str:
    if c is None:
        return "culprit not found yet"
    parts = [f"culprit {link(links.commit(c.commit_sha), c.commit_sha[:7])}"]
    if c.subject:
        parts.append(f"“{escape(clip(c.subject, 80))}”")
    parts.append(f"by {mentions.render(c.author, c.email)}")
    if c.pr:
        parts.append(f"· PR {link(links.pr(c.pr), f'#{c.pr}')}")
    return " ".join(parts)


SHOWN_TESTS = 5  # test ids named per message group; the rest are counted


def _first_line(message: str | None) -> str:
    lines = [ln.strip() for ln in (message or "").splitlines() if ln.strip()]
    return lines[0] if lines else "(no message)"


def _names(values: Iterable[str | None], limit: int = 6) -> str:
    names = sorted({v for v in values if v})
    more = f" +{len(names) - limit}" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _tests_text(items: list[FailureItem]) -> str:
    ids = sorted({f.nodeid for f in items})
    shown = ", ".join(f"`{escape(clip(n, 160))}`" for n in ids[:SHOWN_TESTS])
    return shown + (f" … +{len(ids) - SHOWN_TESTS} more" if len(ids) > SHOWN_TESTS else "")


def _culprit_key(f: FailureItem) -> str:
    return f.culprit.commit_sha if f.culprit else ""


def _way(f: FailureItem) -> str:
    """How a test fails: its signature, or the first line of its message when it has none."""
    return f"sig:{f.signature}" if f.signature else f"msg:{_first_line(f.message)}"


def _shown_message(f: FailureItem) -> str:
    """The first message line of a failure, led by its exception type."""
    line = _first_line(f.message)
    short = (f.exception or "").rsplit(".", 1)[-1]
    if f.exception and not (line.startswith(f.exception) or (short and line.startswith(short))):
        line = f"{f.exception}: {line}"
    return line


def _signature_line(same: list[FailureItem], links: Links) -> str:
    """`12 models: `RuntimeError: …` since abc1234 (llama, …) — 12 failed: `test`, …`."""
    models = {f.model for f in same if f.model}
    tests = len({(f.nodeid, f.runner_group) for f in same})
    count = f"{len(models)} model{'s' if len(models) != 1 else ''}" if models else f"{tests} test{'s' if tests != 1 else ''}"
    culprit = same[0].culprit
    since = f" since {link(links.commit(culprit.commit_sha), culprit.commit_sha[:7])}" if culprit else ""
    named = f" ({escape(_names(models))})" if models else ""
    return (f"    {count}: `{escape(clip(_shown_message(same[0]), 200))}`{since}{named} — "
            f"{tests}× {_names(f.outcome for f in same)}: {_tests_text(same)}")


def culprit_entries(items: list[FailureItem], links: Links, mentions: Mentions) -> list[str]:
    """One entry per culprit (most tests first, "not found yet" last): its tests, models and runner
    groups, then one line per failure signature (most models first) with the tests that fail that way."""
    entries = []
    ordered = sorted(items, key=lambda f: (_culprit_key(f), f.nodeid))
    groups = [list(g) for _, g in groupby(ordered, key=_culprit_key)]
    for tests in sorted(groups, key=lambda g: (g[0].culprit is None, -len(g), _culprit_key(g[0]))):
        n = len({(f.nodeid, f.runner_group) for f in tests})
        where = " · ".join(x for x in (_names(f.model for f in tests), _names(f.runner_group for f in tests)) if x)
        head = (f"• {_culprit_text(tests[0].culprit, links, mentions)} — *{n} test{'s' if n != 1 else ''}*"
                + (f" ({escape(where)})" if where else ""))
        lines = [head]
        ways = [list(same) for _, same in groupby(sorted(tests, key=lambda f: (_way(f), f.nodeid)), key=_way)]
        for same in sorted(ways, key=lambda g: (-len({f.model or f.nodeid for f in g}), _way(g[0]))):
            lines.append(_signature_line(same, links))
        entries.append("\n".join(lines))
    return entries


def _model_table(data: ReportData, more_url: str | None) -> str:
    rows = data.models
    shown, hidden = rows[:25], len(rows) - 25
    groups = data.runner_groups or sorted({g for r in rows for g in r.counts})
    width = max([len("model")] + [len(clip(r.model, 40)) for r in shown])
    lines = [f"{'model'.ljust(width)}  " + "  ".join(g.rjust(10) for g in groups)]
    lines += [f"{clip(r.model, 40).ljust(width)}  " + "  ".join(str(r.counts.get(g, 0)).rjust(max(10, len(g)))
                                                                for g in groups) for r in shown]
    table = "```" + escape("\n".join(lines)) + "```"
    if hidden > 0:
        table += f"\n… {hidden} more models" + (f" ({link(more_url, 'see all')})" if more_url else "")
    return "*Failures per model and runner group*\n" + table


def _header(data: ReportData) -> dict[str, Any]:
    icon = "✅" if data.failed == 0 else "🔴"
    title = " · ".join(x for x in (data.workflow or "harness run", data.event, data.branch) if x)
    return {"type": "header", "text": {"type": "plain_text", "text": clip(f"{icon} {title}", MAX_HEADER),
                                       "emoji": True}}


def _summary(data: ReportData, links: Links) -> dict[str, Any]:
    sha = data.commit_sha or ""
    commit = link(links.commit(sha), sha[:7]) if sha else "unknown"
    if data.commit_subject:
        commit += f" {escape(clip(data.commit_subject, 100))}"
    order = ("passed", "failed", "error", "crashed", "timeout", "xpass", "skipped", "xfail")
    totals = " · ".join(f"{data.totals[k]} {k}" for k in order if data.totals.get(k)) or "no tests"
    gpu = f"{data.gpu_name} ×{data.gpu_count}" if data.gpu_name else ("none" if not data.gpu_count else
                                                                       f"{data.gpu_count} GPU(s)")
    fields = [("Commit", commit), ("Runner group", ", ".join(data.runner_groups) or "unknown"),
              ("GPU", escape(gpu)), ("Wall time", wall_time_text(data.wall_time_s)), ("Tests", totals),
              ("Run", link(links.run_url, f"#{data.run_id}"))]
    return {"type": "section", "fields": [{"type": "mrkdwn", "text": clip(f"*{k}*\n{v}", MAX_FIELD)}
                                          for k, v in fields]}


def _perf_line(a: Any, links: Links) -> str:
    icon = "🐢" if a.direction == "regression" else "🚀"
    where = ", ".join(x for x in (a.model, a.gpu_name) if x)
    return (f"{icon} {a.direction}: `{escape(a.metric)}` ({escape(where)}) {a.change:+.1%}"
            + (f", p={a.p_value:.1g}" if a.p_value is not None else "")
            + f" at {link(links.commit(a.commit_after), a.commit_after[:7])}")


def build_report(data: ReportData, links: Links | None = None, mentions: Mentions | None = None) -> SlackReport:
    """The Block Kit report of `data`: header, summary, per-model table, new failures with culprits,
    flaky tests, still-failing count, perf alerts; failure messages as thread replies."""
    links, mentions = links or Links(), mentions or Mentions()
    blocks: list[dict[str, Any]] = [_header(data), _summary(data, links)]
    tail: list[dict[str, Any]] = []
    counts = [f"*{len(data.new_failures)}* new", f"*{len(data.still_failing)}* still failing",
              f"*{len(data.flaky_failing)}* flaky", f"*{data.fixed}* fixed"]
    base = f" vs run #{data.baseline_run_id}" if data.baseline_run_id else ""
    tail.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"*{data.failed}* failing: "
                                                  + " · ".join(counts) + base}]})
    if data.models:
        blocks += [{"type": "divider"}, section(_model_table(data, links.more))]
    budget = MAX_BLOCKS - len(blocks) - len(tail) - 6
    new = data.new_failures
    culprits = len({_culprit_key(f) for f in new})
    groups = [
        (f"*🆕 New failures* ({len(new)} in {culprits} group{'s' if culprits != 1 else ''}, by culprit)",
         culprit_entries(new, links, mentions)),
        ("*🎲 Flaky (flaky evidence: mixed outcomes here or in history)*",
         [f"• `{escape(clip(f.nodeid, 300))}` {f.failures}/{f.attempts} failed ({f.fail_rate:.0%})"
          + (f" on {escape(f.device)}" if f.device else "") + ("" if f.failed else ", passed on retry")
          for f in data.flaky]),
        ("*⏱ Performance alerts*", [_perf_line(a, links) for a in data.perf_alerts]),
    ]
    present = [g for g in groups if g[1]]
    for i, (title, lines) in enumerate(present):
        share = max(1, budget // (len(present) - i))
        packed = pack(lines, share, links.more, title=title if title.endswith(")") else f"{title} ({len(lines)})")
        budget -= len(packed)
        blocks += [{"type": "divider"}, *packed]
    blocks += tail
    text = clip(f"{'✅' if data.failed == 0 else '🔴'} {data.workflow or 'harness run'} on "
                f"{data.branch or '?'}: {data.failed} failing, {len(data.new_failures)} new, "
                f"{len(data.perf_alerts)} perf alert(s)", MAX_FALLBACK)
    return SlackReport(SlackMessage(escape(text), blocks[:MAX_BLOCKS]), _replies(data))


def _replies(data: ReportData) -> list[SlackMessage]:
    """One thread reply per model: every failing test, grouped by signature (its message in a code block)."""
    by_model: dict[str, list[FailureItem]] = {}
    for f in data.failures:
        by_model.setdefault(f.model or "(no model)", []).append(f)
    replies = []
    for model, items in sorted(by_model.items()):
        ordered = sorted(items, key=lambda f: (_way(f), f.nodeid))
        lines = []
        for _, same in groupby(ordered, key=_way):
            same = list(same)
            sig = f" (signature `{escape(same[0].signature)}`)" if same[0].signature else ""
            lines.append(f"```{escape(clip(same[0].message or '(no message)', 1200))}```\n"
                         f"{len(same)} test{'s' if len(same) != 1 else ''}{sig}:")
            lines += [f"• `{escape(clip(f.nodeid, 300))}` ({f.outcome}, {escape(f.runner_group or '?')}, "
                      f"{KIND_LABEL[f.kind]})" for f in same]
        blocks = pack(lines, MAX_BLOCKS, None, title=f"*{escape(model)}*: {len(items)} failing")
        replies.append(SlackMessage(escape(f"{model}: {len(items)} failing"), blocks))
    return replies


KIND_LABEL = {"new": "new", "still": "still failing", "flaky": "flaky"}


def iter_texts(blocks: Iterable[dict[str, Any]]) -> Iterable[str]:
    """Every text in a list of blocks (for checks and tests)."""
    for b in blocks:
        if "text" in b:
            yield b["text"]["text"]
        for f in b.get("fields", []):
            yield f["text"]
        for e in b.get("elements", []):
            yield e.get("text", "")
