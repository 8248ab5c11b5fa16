"""The README's main job, without the serving loop: build the demo and query it."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tutor.api import create_app
from tutor.cli import app
from tutor.settings import Settings


def test_demo_builds_a_working_service(tmp_path):
    work = tmp_path / "demo"
    r = CliRunner().invoke(
        app, ["demo", "--workdir", str(work), "--epochs", "2", "--no-serve", "--quiet"]
    )
    assert r.exit_code == 0, r.output
    assert "6/6 serving on http://127.0.0.1:8000" in r.output
    info = json.loads((work / "keys.json").read_text())
    assert (work / "keys.json").stat().st_mode & 0o777 == 0o600
    settings = Settings(database_url=info["database_url"], environment="test")
    with TestClient(create_app(settings)) as c:
        assert c.get("/ready").status_code == 200
        h = {"Authorization": f"Bearer {info['keys']['teacher']}"}
        lid = info["learner"]
        m = c.get(f"/v1/learners/{lid}/mastery", headers=h)
        assert m.status_code == 200 and len(m.json()["concepts"]) > 100
        nxt = c.get(f"/v1/learners/{lid}/next-items?n=3", headers=h).json()["items"]
        assert len(nxt) == 3
        g = c.get("/v1/groups/demo-class/curriculum", headers=h)
        assert g.status_code == 200 and "30 learners" in g.json()["scope"]
