"""`harness dashboards push`. FakeGrafana is a local HTTP server that STANDS IN FOR GRAFANA's HTTP API
(/api/folders, /api/dashboards/db): it keeps folders and dashboards in memory like Grafana does, so
pushing twice can be checked to leave the same state."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cli import main
from harness.report.dashboards import build_dashboards
from harness.report.grafana import GrafanaConfig, GrafanaError, push_dashboards

from .fake_http import FakeServer, Reply, Request

TOKEN = "glsa_SECRET_service_account_token"


class FakeGrafana:
    def __init__(self) -> None:
        self.folders: dict[str, str] = {}  # uid -> title
        self.dashboards: dict[str, dict] = {}  # uid -> {"dashboard", "folderUid", "version"}

    def __call__(self, req: Request) -> Reply:
        if req.headers.get("Authorization") != f"Bearer {TOKEN}":
            return 401, {}, {"message": "invalid API key"}
        if req.method == "GET" and req.path == "/api/folders":
            return 200, {}, [{"uid": u, "title": t} for u, t in self.folders.items()]
        if req.method == "POST" and req.path == "/api/folders":
            uid = f"f{len(self.folders) + 1}"
            self.folders[uid] = req.body["title"]
            return 200, {}, {"uid": uid, "title": req.body["title"]}
        if req.method == "POST" and req.path == "/api/dashboards/db":
            dash, folder = req.body["dashboard"], req.body.get("folderUid")
            if folder not in self.folders:
                return 400, {}, {"message": "folder not found"}
            if dash["uid"] in self.dashboards and not req.body.get("overwrite"):
                return 412, {}, {"message": "version-mismatch"}
            version = self.dashboards.get(dash["uid"], {}).get("version", 0) + 1
            self.dashboards[dash["uid"]] = {"dashboard": dash, "folderUid": folder, "version": version}
            return 200, {}, {"uid": dash["uid"], "version": version, "status": "success",
                             "url": f"/d/{dash['uid']}"}
        return 404, {}, {"message": "not found"}


@pytest.fixture
def grafana() -> Iterator[tuple[FakeServer, FakeGrafana]]:
    state = FakeGrafana()
    server = FakeServer(state)
    yield server, state
    server.close()


@pytest.fixture
def built(tmp_path: Path) -> Path:
    build_dashboards(tmp_path / "json")
    return tmp_path / "json"


def test_push_is_idempotent(grafana: tuple[FakeServer, FakeGrafana], built: Path) -> None:
    server, state = grafana
    cfg = GrafanaConfig(url=server.url, token=TOKEN)
    first = push_dashboards(cfg, folder="Harness CI", src=built)
    assert first.folder_created and state.folders == {first.folder_uid: "Harness CI"}
    assert sorted(state.dashboards) == ["harness-benchmarks", "harness-ci-overview", "harness-test-history"]
    snapshot = {uid: d["dashboard"] for uid, d in state.dashboards.items()}
    second = push_dashboards(cfg, folder="Harness CI", src=built)
    assert not second.folder_created and second.folder_uid == first.folder_uid
    assert len(state.folders) == 1
    assert {uid: d["dashboard"] for uid, d in state.dashboards.items()} == snapshot
    assert [d["version"] for d in second.dashboards] == [2, 2, 2]  # overwritten, not duplicated
    assert all(d["folderUid"] == first.folder_uid for d in state.dashboards.values())
    assert json.loads((built / "harness-ci-overview.json").read_text())["uid"] == "harness-ci-overview"


def test_bad_token_is_one_clear_error(grafana: tuple[FakeServer, FakeGrafana], built: Path,
                                      monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    server, _ = grafana
    monkeypatch.setenv("GRAFANA_TOKEN", "glsa_wrong_token")
    assert main(["dashboards", "push", "--url", server.url, "--src", str(built)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: Grafana refused the request: HTTP 401")
    assert "glsa_wrong_token" not in err and err.count("\n") == 1


def test_cli_push_json(grafana: tuple[FakeServer, FakeGrafana], built: Path, monkeypatch: pytest.MonkeyPatch,
                       capsys: pytest.CaptureFixture[str]) -> None:
    server, state = grafana
    monkeypatch.setenv("GRAFANA_URL", server.url)
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    assert main(["dashboards", "push", "--src", str(built), "--folder", "CI", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["folder_created"] is True and len(out["dashboards"]) == 3
    assert TOKEN not in json.dumps(out)
    assert list(state.folders.values()) == ["CI"]


def test_unreachable_grafana(built: Path) -> None:
    server = FakeServer(FakeGrafana())
    url = server.url
    server.close()
    with pytest.raises(GrafanaError, match=f"cannot reach Grafana at {url}"):
        push_dashboards(GrafanaConfig(url=url, token=TOKEN, timeout_s=2), src=built)


@pytest.mark.parametrize(("cfg", "message"), [
    (GrafanaConfig(token=TOKEN), "no Grafana URL"),
    (GrafanaConfig(url="grafana.local", token=TOKEN), "must start with http"),
    (GrafanaConfig(url="http://127.0.0.1:9"), "no Grafana token"),
])
def test_bad_config(cfg: GrafanaConfig, message: str, built: Path) -> None:
    with pytest.raises(GrafanaError, match=message):
        push_dashboards(cfg, src=built)


def test_nothing_to_push(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no dashboard JSON in"):
        push_dashboards(GrafanaConfig(url="http://127.0.0.1:9", token=TOKEN), src=tmp_path)
