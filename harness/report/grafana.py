"""Uploading the dashboards to Grafana (grafana-client): env-backed config, error class, idempotent push.

`push_dashboards` finds or creates the folder, then creates or overwrites each dashboard by its uid,
so pushing twice leaves Grafana as pushing once did. The token never appears in output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException

from harness.errors import HarnessError
from harness.report.dashboards import DEFAULT_OUT, load_dashboards


class GrafanaError(HarnessError):
    """Grafana is misconfigured, unreachable, or refused the dashboards."""


@dataclass(frozen=True)
class GrafanaConfig:
    """GRAFANA_URL and GRAFANA_TOKEN (a service-account token); flags override."""

    url: str | None = None
    token: str | None = None
    timeout_s: float = 10.0

    @classmethod
    def from_env(cls, url: str | None = None, token: str | None = None) -> GrafanaConfig:
        return cls(url=url or os.environ.get("GRAFANA_URL") or None,
                   token=token or os.environ.get("GRAFANA_TOKEN") or None)

    def validate(self) -> None:
        if not self.url:
            raise GrafanaError("no Grafana URL: set GRAFANA_URL or pass --url")
        if not self.url.startswith(("http://", "https://")):
            raise GrafanaError(f"Grafana URL must start with http:// or https://, got {self.url!r}")
        if not self.token:
            raise GrafanaError("no Grafana token: set GRAFANA_TOKEN (a service-account token with "
                               "dashboard write access)")

    def redact(self, text: str) -> str:
        return text.replace(self.token, "***") if self.token else text


@dataclass
class PushResult:
    """What `push_dashboards` did."""

    folder_uid: str
    folder_created: bool
    dashboards: list[dict[str, Any]] = field(default_factory=list)  # uid, title, url, version


def _folder(api: GrafanaApi, title: str) -> tuple[str, bool]:
    for f in api.folder.get_all_folders():
        if f.get("title") == title:
            return str(f["uid"]), False
    created = api.folder.create_folder(title)
    return str(created["uid"]), True


def push_dashboards(config: GrafanaConfig, folder: str = "Harness", src: str | Path = DEFAULT_OUT) -> PushResult:
    """Create or overwrite every dashboard of `src` in `folder` (created when missing)."""
    config.validate()
    dashboards = load_dashboards(src)
    api = GrafanaApi.from_url(config.url, credential=config.token, timeout=config.timeout_s)
    try:
        uid, created = _folder(api, folder)
        result = PushResult(uid, created)
        for dash in dashboards:
            body = {k: v for k, v in dash.items() if k not in ("id", "version")}
            resp = api.dashboard.update_dashboard({"dashboard": body, "folderUid": uid, "overwrite": True,
                                                   "message": "harness dashboards push"})
            result.dashboards.append({"uid": dash["uid"], "title": dash["title"], "url": resp.get("url"),
                                      "version": resp.get("version")})
    except GrafanaClientError as exc:
        raise GrafanaError(config.redact(f"Grafana refused the request: HTTP {exc.status_code} "
                                         f"{exc.message}".strip())) from None
    except (GrafanaException, OSError, ValueError) as exc:
        raise GrafanaError(config.redact(f"cannot reach Grafana at {config.url}: {type(exc).__name__}: "
                                         f"{exc}")) from None
    return result
