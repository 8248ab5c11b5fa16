"""The service commands of the ``tutor`` CLI on a SQLite file: db, orgs, import, models,
keys, states, prerequisites, serve; bad inputs exit 2 with a message naming the problem."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from tutor.cli import app
from tutor.db import ApiKey, Interaction, Learner, LearnerState, create_db_engine
from tutor.db import make_sessionmaker as _maker
from tutor.security import authenticate
from tutor.service import MODELS
from tutor.settings import Settings

runner = CliRunner()
KEY = re.compile(r"kt_([0-9a-f]{12})_[A-Za-z0-9_\-]{20,}")


def tutor(url: str, *args: str):  # noqa: ANN201
    return runner.invoke(app, [*args, "--database-url", url])


@pytest.fixture
def url(tmp_path: Path) -> str:
    MODELS.clear()
    u = f"sqlite:///{tmp_path / 'cli.db'}"
    r = tutor(u, "db", "upgrade")
    assert r.exit_code == 0, r.output
    assert "at revision 0005" in r.output
    yield u
    MODELS.clear()


def _one(url: str, stmt):  # noqa: ANN001, ANN202
    engine = create_db_engine(url)
    try:
        with _maker(engine)() as s:
            return s.scalar(stmt)
    finally:
        engine.dispose()


def test_service_commands_end_to_end(
    url: str, skill_data: Path, dkt_run: Path, tmp_path: Path
) -> None:
    r = tutor(url, "db", "current")
    assert r.exit_code == 0 and r.stdout.strip() == "0005", r.output

    r = tutor(url, "orgs", "create", "acme", "--name", "Acme School")
    assert r.exit_code == 0, r.output
    r = tutor(url, "orgs", "create", "acme")
    assert r.exit_code == 2 and "'acme' already exists" in r.output
    r = tutor(url, "orgs", "list")
    assert r.exit_code == 0 and "acme" in r.output and "Acme School" in r.output

    r = tutor(url, "import", str(skill_data), "--org", "acme", "-q")
    assert r.exit_code == 0, r.output
    assert "60 new learners" in r.output and "(0 already stored)" in r.output
    n = _one(url, select(func.count()).select_from(Interaction))
    assert n > 0 and f"{n:,} answers" in r.output
    r = tutor(url, "import", str(skill_data), "--org", "acme", "-q")
    assert r.exit_code == 0 and f"0 answers ({n:,} already stored)" in r.output, r.output

    r = tutor(url, "models", "register", str(dkt_run), "--org", "acme", "--activate")
    assert r.exit_code == 0 and "now active" in r.output, r.output
    mid = re.search(r"registered model (\d+)", r.output).group(1)
    r = tutor(url, "models", "list", "--org", "acme")
    assert r.exit_code == 0 and "dkt" in r.output and "yes" in r.output, r.output
    r = tutor(url, "models", "activate", mid, "--org", "acme")
    assert r.exit_code == 0 and "now active" in r.output

    r = tutor(url, "keys", "create", "--org", "acme", "--role", "admin", "--name", "ops")
    assert r.exit_code == 0, r.output
    keys = KEY.findall(r.stdout)
    full = KEY.search(r.stdout).group(0)
    assert len(keys) == 1 and r.stdout.count(full) == 1  # printed once
    assert "not stored" in r.output
    prefix = keys[0]
    engine = create_db_engine(url)
    with _maker(engine)() as s:
        assert authenticate(s, full, Settings(environment="test").key_pepper) is not None
    engine.dispose()

    r = tutor(url, "keys", "create", "--org", "acme", "--role", "learner", "--learner", "u3")
    assert r.exit_code == 0, r.output
    learner_prefix = KEY.search(r.stdout).group(1)

    r = tutor(url, "keys", "list", "--org", "acme")
    assert r.exit_code == 0, r.output
    assert prefix in r.output and learner_prefix in r.output and "learner u3" in r.output
    assert full not in r.output and full.split("_", 2)[2] not in r.output
    stored = _one(url, select(ApiKey.key_hash).where(ApiKey.prefix == prefix))
    assert stored not in r.output

    r = tutor(url, "keys", "revoke", prefix, "--org", "acme")
    assert r.exit_code == 0 and f"revoked key {prefix}" in r.output, r.output
    assert _one(url, select(ApiKey.revoked_at).where(ApiKey.prefix == prefix)) is not None
    r = tutor(url, "keys", "revoke", prefix, "--org", "acme")
    assert r.exit_code == 0 and "already revoked" in r.output

    r = tutor(url, "states", "rebuild", "--org", "acme", "-q")
    assert r.exit_code == 0 and "rebuilt 60 learner states" in r.output, r.output
    assert _one(url, select(func.count()).select_from(LearnerState)) == 60
    assert _one(url, select(func.sum(Learner.n_answers))) == n

    csv = tmp_path / "pre.csv"
    csv.write_text("prerequisite,concept\nc0,c1\nc1,c2\n")
    r = tutor(url, "prerequisites", "load", str(csv), "--org", "acme")
    assert r.exit_code == 0 and "now has 2 prerequisite edges" in r.output, r.output
    js = tmp_path / "pre.json"
    js.write_text('[["c2", "c3"]]')
    r = tutor(url, "prerequisites", "load", str(js), "--org", "acme", "--append")
    assert r.exit_code == 0 and "now has 3 prerequisite edges (1 added)" in r.output, r.output
    js.write_text('[["c3", "c0"]]')  # closes a cycle c0 -> c1 -> c2 -> c3 -> c0
    r = tutor(url, "prerequisites", "load", str(js), "--org", "acme", "--append")
    assert r.exit_code == 2 and "cycle" in r.output.lower(), r.output


def test_bad_inputs_exit_2_naming_the_problem(url: str, tmp_path: Path, skill_data: Path) -> None:
    assert tutor(url, "orgs", "create", "acme").exit_code == 0
    cases = [
        (("import", str(skill_data), "--org", "nope"), "'nope'"),
        (("models", "list", "--org", "nope"), "'nope'"),
        (("keys", "list", "--org", "nope"), "'nope'"),
        (("states", "rebuild", "--org", "nope"), "'nope'"),
        (("models", "register", str(tmp_path / "no-run"), "--org", "acme"), "no-run"),
        (("models", "register", str(tmp_path), "--org", "acme"), "no checkpoint"),
        (("models", "activate", "42", "--org", "acme"), "model 42"),
        (("import", str(tmp_path / "no-data"), "--org", "acme"), "no-data"),
        (("keys", "create", "--org", "acme", "--role", "boss"), "'boss'"),
        (("keys", "create", "--org", "acme", "--role", "learner"), "--learner"),
        (("keys", "create", "--org", "acme", "--role", "learner", "--learner", "ghost"), "ghost"),
        (("keys", "create", "--org", "acme", "--role", "teacher", "--group", "g9"), "'g9'"),
        (("keys", "revoke", "abc123", "--org", "acme"), "'abc123'"),
        (("states", "rebuild", "--org", "acme"), "no active model"),
        (("prerequisites", "load", str(tmp_path / "none.csv"), "--org", "acme"), "none.csv"),
        (("db", "upgrade", "9999"), "9999"),
    ]
    for args, needle in cases:
        r = tutor(url, *args)
        assert r.exit_code == 2, (args, r.output)
        assert "error:" in r.output and needle in r.output, (args, r.output)
    bad = tmp_path / "bad.csv"
    bad.write_text("from,to\nc0,c1\n")
    r = tutor(url, "prerequisites", "load", str(bad), "--org", "acme")
    assert r.exit_code == 2 and "prerequisite,concept" in r.output
    bad.write_text("prerequisite,concept\nc0,zz\n")
    r = tutor(url, "prerequisites", "load", str(bad), "--org", "acme")
    assert r.exit_code == 2 and "'zz'" in r.output
    # a database without the schema: the hint names the fix
    r = tutor(f"sqlite:///{tmp_path / 'empty.db'}", "orgs", "list")
    assert r.exit_code == 2 and "tutor db upgrade" in r.output, r.output


def test_db_downgrade_and_serve(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    r = tutor(url, "db", "downgrade", "base")
    assert r.exit_code == 0 and "base" in r.output, r.output
    assert tutor(url, "db", "current").stdout.strip().startswith("base")

    seen = {}

    def fake_serve(**kw: object) -> None:
        seen.update(kw, env=os.environ.get("DATABASE_URL"))

    from tutor.api import server

    monkeypatch.setattr(server, "serve", fake_serve)
    # recorded, so the URL the command exports is undone afterwards
    monkeypatch.setenv("DATABASE_URL", "sqlite:///elsewhere.db")
    r = tutor(url, "serve", "--port", "8123", "--workers", "2", "--no-access-log")
    assert r.exit_code == 0, r.output
    assert (seen["host"], seen["port"], seen["workers"]) == ("127.0.0.1", 8123, 2)
    assert seen["access_log"] is False
    assert seen["env"] == url
    assert "loop" not in seen  # uvicorn's choice (uvloop where installed)
    assert tutor(url, "db", "current").stdout.strip() == "0005"  # --migrate is the default
    # the hot routes on the event loop: the standard asyncio loop (uvloop serves a busy loop
    # unevenly, see tutor.api.app.event_loop_warning)
    monkeypatch.setenv("TUTOR_INLINE_HOT_ROUTES", "true")
    seen.clear()
    assert tutor(url, "serve", "--no-migrate").exit_code == 0
    assert seen["loop"] == "asyncio" and seen["access_log"] is True


def test_event_loop_warning_names_the_fix() -> None:
    import asyncio

    from tutor.api.app import event_loop_warning

    uvloop = pytest.importorskip("uvloop")
    fast = uvloop.new_event_loop()
    plain = asyncio.new_event_loop()
    try:
        assert "--loop asyncio" in event_loop_warning(True, fast)
        assert event_loop_warning(False, fast) is None
        assert event_loop_warning(True, plain) is None
    finally:
        fast.close()
        plain.close()


def test_prerequisites_from_junyi_exercise_table(tmp_path: Path) -> None:
    """Junyi Academy's exercise table (cut in tests/fixtures/junyi) gives the prerequisite
    graph and the concept names; the curriculum then respects it."""
    from sqlalchemy import select

    from tutor.curriculum import design_curriculum
    from tutor.db import Concept, create_db_engine, make_sessionmaker

    url = f"sqlite:///{tmp_path / 'j.db'}"
    assert tutor(url, "db", "upgrade").exit_code == 0
    assert tutor(url, "orgs", "create", "junyi").exit_code == 0
    table = Path(__file__).parents[1] / "fixtures" / "junyi" / "junyi_Exercise_table.csv"
    r = tutor(url, "prerequisites", "load", str(table), "--org", "junyi")
    assert r.exit_code == 2 and "unknown concept" in r.output
    r = tutor(url, "prerequisites", "load", str(table), "--org", "junyi", "--create-concepts")
    assert r.exit_code == 0, r.output
    engine = create_db_engine(url)
    with make_sessionmaker(engine)() as s:
        names = dict(s.execute(select(Concept.external_id, Concept.name)).all())
    engine.dispose()
    assert names["circles_and_arcs"] == "圓與弧"
    import csv

    rows = list(csv.DictReader(table.open(encoding="utf-8-sig")))
    edges = [
        (p.strip(), r["name"]) for r in rows for p in r["prerequisites"].split(",") if p.strip()
    ]
    assert f"now has {len(set(edges)):,} prerequisite edges" in r.output
    order = design_curriculum(None, list(names), prerequisites=edges).order()
    pos = {c: k for k, c in enumerate(order)}
    assert all(pos[a] < pos[b] for a, b in edges)
