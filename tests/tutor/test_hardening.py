"""Hostile and clumsy inputs (issue 18): each test is named after what it guards, on SQLite and
PostgreSQL where a database is involved."""

from __future__ import annotations

import io
import pickle

import pytest


def answer(event: str, learner: str = "u0", item: str = "i5", correct: int = 1, **kw) -> dict:
    return {"event_id": event, "learner_id": learner, "item_id": item, "correct": correct, **kw}


# ---------------------------------------------------------------------- event ids
def test_a_conflict_never_shows_another_learners_answer(client, world):
    """u1's answer "shared-7" exists; u0's key posting the same event id for u0 learns nothing
    about it (event ids are unique per learner: it is simply u0's new answer)."""
    r = client.post(
        "/v1/answers",
        json=answer("shared-7", learner="u1", item="i6", correct=0),
        headers=world.headers("ingest"),
    )
    assert r.status_code == 201, r.text
    r = client.post("/v1/answers", json=answer("shared-7"), headers=world.headers("learner"))
    assert r.status_code == 201, r.text
    assert "u1" not in r.text and "i6" not in r.text
    # a conflict names only what the caller itself sent before, for its own learner
    r = client.post(
        "/v1/answers", json=answer("shared-7", correct=0), headers=world.headers("learner")
    )
    assert r.status_code == 409
    assert "u0" in r.json()["detail"] and "u1" not in r.json()["detail"]


def test_a_learner_key_cannot_claim_another_learners_event_ids(client, world):
    """An event id used first by u0's key stays free for u1's client."""
    r = client.post("/v1/answers", json=answer("evt-42"), headers=world.headers("learner"))
    assert r.status_code == 201, r.text
    r = client.post(
        "/v1/answers",
        json=answer("evt-42", learner="u1", item="i6"),
        headers=world.headers("ingest"),
    )
    assert r.status_code == 201 and r.json()["replayed"] is False, r.text
    hist = client.get("/v1/learners/u1/history", headers=world.headers("admin")).json()
    assert [a["event_id"] for a in hist["answers"]] == ["evt-42"]


# ---------------------------------------------------------------------- checkpoints
class _Boom:
    """Unpickling this calls ``open(path, "w")``: a file appears if code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.path, "w"))


def test_a_crafted_checkpoint_runs_no_code(tmp_path, dkt_run):
    import torch

    from kt_models.base import CheckpointError, load_checkpoint

    marker = tmp_path / "pwned"
    payload = torch.load(dkt_run / "best.pt", weights_only=False)
    payload["extra"] = {"x": _Boom(str(marker))}
    bad = tmp_path / "bad.pt"
    buf = io.BytesIO()
    torch.save(payload, buf, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    bad.write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="not a plain-data checkpoint"):
        load_checkpoint(bad)
    assert not marker.exists()


# ---------------------------------------------------------------------- model versions
def _foreign_run(tmp_path, items: list[str], links: list[list[int]]):
    """A (untrained) DKT checkpoint over another catalogue: items with their concept
    indices (1-based) among concepts "0", "1"."""
    import numpy as np

    from kt_models.base import save_checkpoint
    from kt_models.data import Vocab
    from kt_models.dkt import DKT, DKTConfig

    q = np.zeros((len(items) + 1, 1), dtype=np.int64)
    for k, cs in enumerate(links):
        q[k + 1, 0] = cs[0]
    vocab = Vocab(items=items, concepts=["0", "1"], item_concepts=q)
    run = tmp_path / "foreign"
    run.mkdir()
    save_checkpoint(DKT(DKTConfig(emb_dim=8, hidden=8), vocab), run / "best.pt")
    return run


def _register(world, run, activate=False, mapping=None):
    from sqlalchemy import select

    from tutor import operations as ops
    from tutor.db import Organisation, create_db_engine, make_sessionmaker

    engine = create_db_engine(world.url)
    try:
        with make_sessionmaker(engine)() as s, s.begin():
            org = s.scalar(select(Organisation).where(Organisation.slug == "acme"))
            return ops.register_model(
                s, org=org, run_dir=run, activate=activate, mapping=mapping
            ).id
    finally:
        engine.dispose()


def test_a_model_of_another_catalogue_is_refused_with_the_differences(client, world, tmp_path):
    """Simulated items "0".."5" over concepts "0", "1": none is in acme's catalogue."""
    from tutor.operations import ModelMismatch

    run = _foreign_run(tmp_path, [str(k) for k in range(6)], [[1], [1], [1], [2], [2], [2]])
    with pytest.raises(ModelMismatch, match="none of the model's 6 items"):
        _register(world, run)
    # its items did not join the catalogue
    r = client.get("/v1/items/0", headers=world.headers("admin"))
    assert r.status_code == 404


def test_a_model_whose_items_link_other_concepts_is_refused(world, tmp_path):
    """The fixture's own item ids, linked to other concepts: refused, naming an example."""
    from tutor.operations import ModelMismatch

    items = [f"i{k}" for k in range(20)]
    run = _foreign_run(tmp_path, items, [[1 + k % 2] for k in range(20)])
    with pytest.raises(ModelMismatch, match="link other concepts .*item 'i"):
        _register(world, run)


def test_activation_verifies_checksum_and_load(client, world):
    from sqlalchemy import select, update

    from tutor.db import ModelVersion, create_db_engine, make_sessionmaker

    h = world.headers("admin")
    engine = create_db_engine(world.url)
    try:
        with make_sessionmaker(engine)() as s, s.begin():
            blob = s.scalar(
                select(ModelVersion.checkpoint).where(ModelVersion.id == world.model_id)
            )
            s.execute(
                update(ModelVersion)
                .where(ModelVersion.id == world.model_id)
                .values(checkpoint=blob[: len(blob) // 2])
            )
        r = client.post(f"/v1/models/{world.model_id}/activate", headers=h)
        assert r.status_code == 409 and "checksum" in r.json()["detail"], r.text
        # bytes that match their (recomputed) checksum but do not load
        import hashlib

        junk = b"not a checkpoint"
        with make_sessionmaker(engine)() as s, s.begin():
            s.execute(
                update(ModelVersion)
                .where(ModelVersion.id == world.model_id)
                .values(checkpoint=junk, sha256=hashlib.sha256(junk).hexdigest())
            )
        r = client.post(f"/v1/models/{world.model_id}/activate", headers=h)
        assert r.status_code == 409 and "does not load" in r.json()["detail"], r.text
    finally:
        engine.dispose()


def test_a_corrupt_active_model_answers_json_503_everywhere(client, world):
    import hashlib

    from sqlalchemy import update

    from tutor.db import ModelVersion, create_db_engine, make_sessionmaker
    from tutor.service import MODELS

    junk = b"corrupt"
    engine = create_db_engine(world.url)
    with make_sessionmaker(engine)() as s, s.begin():
        s.execute(
            update(ModelVersion)
            .where(ModelVersion.id == world.model_id)
            .values(checkpoint=junk, sha256=hashlib.sha256(junk).hexdigest())
        )
    engine.dispose()
    MODELS.clear()
    h = world.headers("admin")
    for method, path, body in [
        ("get", "/v1/learners/u0/mastery", None),
        ("get", "/v1/learners/u0/next-items", None),
        ("post", "/v1/answers", answer("c1")),
        ("get", "/v1/analytics/groups/g1/students", None),
        ("get", "/v1/analytics/groups/g1/mastery", None),
    ]:
        r = getattr(client, method)(path, headers=h, **({"json": body} if body else {}))
        assert r.status_code == 503, (path, r.status_code, r.text)
        assert "active model cannot be loaded" in r.json()["detail"]
        assert r.headers["x-content-type-options"] == "nosniff"


def test_the_model_card_shows_no_server_path(client, world):
    card = client.get("/v1/analytics/model-card", headers=world.headers("teacher")).json()
    text = str(card)
    assert "/tmp" not in text and "/home" not in text and "/work" not in text, text


# ---------------------------------------------------------------------- bounds
def test_an_offset_beyond_64_bits_is_a_422_not_a_500(client, world):
    h = world.headers("admin")
    for path in (
        "/v1/learners?offset=9223372036854775808",
        "/v1/learners/u0/history?offset=9223372036854775808",
        "/v1/analytics/groups/g1/students?offset=9223372036854775808",
        "/v1/items?offset=10000000000",
    ):
        r = client.get(path, headers=h)
        assert r.status_code == 422, (path, r.text)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("elapsed_ms", 2**63),
        ("timestamp", "0001-01-01T00:00:00+01:00"),
        ("timestamp", "9999-12-31T23:59:59-01:00"),
        ("timestamp", "9999-01-01T00:00:00Z"),
        ("timestamp", "2024-01-01T10:00:00"),  # no time zone
    ],
)
def test_answer_numbers_and_times_out_of_bounds_are_422(client, world, field, value):
    r = client.post(
        "/v1/answers", json=answer("b1", **{field: value}), headers=world.headers("ingest")
    )
    assert r.status_code == 422, r.text


def test_an_answer_more_than_a_day_ahead_is_refused(client, world):
    from datetime import UTC, datetime, timedelta

    soon = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    later = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    h = world.headers("ingest")
    assert (
        client.post("/v1/answers", json=answer("f1", timestamp=soon), headers=h).status_code == 201
    )
    r = client.post("/v1/answers", json=answer("f2", timestamp=later), headers=h)
    assert r.status_code == 422 and "in the future" in r.json()["detail"], r.text


def test_next_items_at_year_one_is_a_422(client, world):
    r = client.get(
        "/v1/learners/u0/next-items",
        params={"at": "0001-01-01T00:00:00+05:00"},
        headers=world.headers("learner"),
    )
    assert r.status_code == 422, r.text


def test_a_nul_byte_anywhere_is_a_422(client, world):
    h = world.headers("admin")
    assert client.get("/v1/learners/u%000", headers=h).status_code == 422
    assert (
        client.get("/v1/learners", params={"offset": "0", "x": "a\x00b"}, headers=h).status_code
        == 422
    )
    r = client.post("/v1/answers", json=answer("n\x00ul"), headers=world.headers("ingest"))
    assert r.status_code == 422, r.text
    r = client.put("/v1/concepts/c9", json={"name": "bad\x00name"}, headers=h)
    assert r.status_code in (201, 422) and r.status_code < 500, r.text


def test_deeply_nested_json_is_refused_without_a_500(client, world):
    h = world.headers("admin")
    r = client.post(
        "/v1/answers", content=b"[" * 100_000, headers=h | {"Content-Type": "application/json"}
    )
    assert 400 <= r.status_code < 500, r.text
    r = client.get("/xapi/statements", params={"agent": "[" * 5000}, headers=h | XAPI)
    assert r.status_code == 400 and "nested too deeply" in r.json()["detail"], r.text


XAPI = {"X-Experience-API-Version": "1.0.3"}


def _statement(score):  # noqa: ANN001, ANN202
    return {
        "actor": {"account": {"homePage": "https://acme.test", "name": "u0"}},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/answered"},
        "object": {"id": "https://acme.test/items/i5"},
        "result": {"score": {"scaled": score}},
        "timestamp": "2024-03-01T10:00:00Z",
    }


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_an_xapi_score_of_nan_or_infinity_is_refused(client, world, constant):
    import json

    body = json.dumps(_statement(0.5)).replace("0.5", constant)
    h = world.headers("ingest") | XAPI | {"Content-Type": "application/json"}
    r = client.post("/xapi/statements", content=body, headers=h)
    assert r.status_code == 400 and constant.lstrip("-") in r.text, r.text
    # and the organisation's statements stay readable
    r = client.get("/xapi/statements", headers=world.headers("admin") | XAPI)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "raw", ["0001-01-01T00:00:00+00:00|1", "2024-01-01T00:00:00+00:00|99999999999999999999"]
)
def test_an_xapi_cursor_out_of_range_is_a_400(client, world, raw):
    import base64

    cursor = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    r = client.get(
        "/xapi/statements", params={"cursor": cursor}, headers=world.headers("admin") | XAPI
    )
    assert r.status_code == 400, r.text


def test_a_replay_with_another_elapsed_time_is_a_conflict(client, world):
    h = world.headers("ingest")
    assert (
        client.post("/v1/answers", json=answer("el", elapsed_ms=1000), headers=h).status_code == 201
    )
    assert (
        client.post("/v1/answers", json=answer("el", elapsed_ms=1000), headers=h).status_code == 200
    )
    r = client.post("/v1/answers", json=answer("el", elapsed_ms=9000), headers=h)
    assert r.status_code == 409, r.text


def test_a_streamed_body_over_the_limit_is_413(client, world):
    limit = world.settings.max_body_bytes

    def chunks():  # noqa: ANN202
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    r = client.post(
        "/v1/answers",
        content=chunks(),
        headers=world.headers("ingest") | {"Content-Type": "application/json"},
    )
    assert r.status_code == 413, r.text


def test_every_response_says_nosniff(client, world):
    for path in ("/health", "/v1/learners", "/v1/nope"):
        r = client.get(path, headers=world.headers("admin"))
        assert r.headers["x-content-type-options"] == "nosniff", path


def test_a_batch_of_late_answers_replays_the_history_once(client, world, monkeypatch):
    """Late answers (before what the state folded) cost one replay of the learner's history
    per request, not one per answer: the bound on how long a batch holds the write lock."""
    from tutor import states

    h = world.headers("ingest")
    r = client.post("/v1/answers", json=answer("now", timestamp="2024-06-01T10:00:00Z"), headers=h)
    assert r.status_code == 201
    calls = []
    real = states.replay_histories

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(len(args[1][0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(states, "replay_histories", counting)
    batch = [
        answer(
            f"late{k}",
            item="i5" if k % 2 else "i6",
            correct=k % 2,
            timestamp=f"2024-05-01T10:{k:02d}:00Z",
        )
        for k in range(50)
    ]
    r = client.post("/v1/answers", json={"answers": batch}, headers=h)
    assert r.status_code == 201, r.text
    assert calls == [51]  # one replay of the 51 answers
    # each late answer's response is the state right after it, in event order
    results = r.json()["results"]
    assert [x["event_id"] for x in results] == [f"late{k}" for k in range(50)]
    hist = client.get("/v1/learners/u0/history", headers=world.headers("admin")).json()
    assert [a["event_id"] for a in hist["answers"]][-1] == "now"


@pytest.mark.parametrize("where", ["actor", "verb"])
def test_a_nul_byte_in_an_xapi_statement_is_refused(client, world, where):
    st = _statement(0.9)
    if where == "actor":
        st["actor"]["account"]["name"] = "u\x000"
    else:
        st["verb"]["id"] = "http://adlnet.gov/expapi/verbs/ans\x00wered"
    r = client.post("/xapi/statements", json=st, headers=world.headers("ingest") | XAPI)
    assert 400 <= r.status_code < 500, r.text
    r = client.get("/xapi/statements", headers=world.headers("admin") | XAPI)
    assert r.status_code == 200, r.text


def test_a_model_under_other_ids_serves_through_an_explicit_mapping(client, world, tmp_path):
    """A model trained with items "m0".. and concepts "0", "1" fits acme's catalogue once
    registered with a mapping to acme's ids (CSV kind,model_id,catalogue_id): it activates,
    and an answer to acme's item moves acme's concept."""
    from tutor.operations import OperationError, read_mapping

    h = world.headers("admin")
    items = client.get("/v1/items?limit=100", headers=h).json()["items"]
    single = [i for i in items if len(i["concepts"]) == 1 and i["concepts"][0] in ("c0", "c1")]
    assert len(single) >= 2
    model_items = [f"m{k}" for k in range(len(single))]
    links = [[1 if i["concepts"][0] == "c0" else 2] for i in single]
    run = _foreign_run(tmp_path, model_items, links)
    rows = ["kind,model_id,catalogue_id"]
    rows += [f"item,m{k},{i['id']}" for k, i in enumerate(single)]
    rows += ["concept,0,c0", "concept,1,c1"]
    path = tmp_path / "map.csv"
    path.write_text("\n".join(rows) + "\n")
    mapping = read_mapping(path)
    assert mapping["items"]["m0"] == single[0]["id"] and mapping["concepts"]["1"] == "c1"
    mid = _register(world, run, mapping=mapping)
    r = client.post(f"/v1/models/{mid}/activate", headers=h)
    assert r.status_code == 200, r.text
    # the readiness probe loads the model first, with its mapping (it once cached it without)
    from tutor.service import MODELS

    MODELS.clear()
    assert client.get("/ready").status_code == 200
    r = client.post("/v1/answers", json=answer("mapped", item=single[0]["id"]), headers=h)
    assert r.status_code == 201, r.text
    assert {m["concept_id"] for m in r.json()["mastery"]} == set(single[0]["concepts"])
    assert all(m["estimate"] is not None for m in r.json()["mastery"]), "a concept it knows"
    # an eager rebuild that is the first to load it (as `tutor states rebuild` always is)
    # loads it with its mapping too: the states it writes, and the model it leaves cached
    # for the answers, know acme's ids
    MODELS.clear()
    r = client.post(f"/v1/models/{mid}/rebuild-states", headers=h)
    assert r.status_code == 200 and r.json()["learners"] == 6, r.text
    r = client.post("/v1/answers", json=answer("mapped2", item=single[1]["id"]), headers=h)
    assert r.status_code == 201, r.text
    assert all(m["estimate"] is not None for m in r.json()["mastery"]), "a concept it knows"
    # a malformed mapping names its line
    bad = tmp_path / "bad.csv"
    bad.write_text("kind,model_id,catalogue_id\nthing,a,b\n")
    with pytest.raises(OperationError, match="line 2"):
        read_mapping(bad)


def test_a_body_over_the_limit_in_several_chunks_never_reaches_the_route(client, world):
    """Valid JSON first, then padding past the limit: 413, and the answer is not stored (the
    route never ran on the truncated body)."""
    import asyncio
    import json

    limit = world.settings.max_body_bytes
    first = json.dumps(answer("chunked")).encode()
    chunks = [first] + [b" " * 65536] * (limit // 65536 + 2)
    sent: list[dict] = []

    async def receive():  # noqa: ANN202
        if chunks:
            body = chunks.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    async def send(msg):  # noqa: ANN001, ANN202
        sent.append(msg)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/answers",
        "raw_path": b"/v1/answers",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"authorization", f"Bearer {world.keys['ingest']}".encode()),
            (b"content-type", b"application/json"),
            (b"transfer-encoding", b"chunked"),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    asyncio.run(client.app(scope, receive, send))
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [413]
    hist = client.get("/v1/learners/u0/history", headers=world.headers("admin")).json()
    assert "chunked" not in [a["event_id"] for a in hist["answers"]]


def test_a_lone_surrogate_is_refused_and_reads_stay_healthy(client, world):
    """ "\\ud800" is valid JSON but no database stores it: item metadata and xAPI statements
    with it are refused, and the lists stay readable."""
    h = world.headers("admin")
    body = '{"concepts": ["c0"], "metadata": {"x": "a\\ud800"}}'
    r = client.put("/v1/items/i3", content=body, headers=h | {"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert client.get("/v1/items/i3", headers=h).status_code == 200
    import json

    st = json.dumps(_statement(0.9)).replace('/i5"', '/i5\\ud800"')
    assert "\\ud800" in st
    r = client.post(
        "/xapi/statements",
        content=st,
        headers=world.headers("ingest") | XAPI | {"Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert client.get("/xapi/statements", headers=h | XAPI).status_code == 200
    r = client.get("/xapi/statements", params={"agent": '{"name": "\\ud800"}'}, headers=h | XAPI)
    assert r.status_code == 400, r.text


def test_an_import_never_skips_a_learners_answers_for_another_learners_event_id(
    client, world, tmp_path
):
    """A learner key can post any event id for itself, even one that an import will give
    another learner: the import still stores that learner's answer."""
    from tutor import importer
    from tutor.db import create_db_engine

    h = world.headers("learner")  # u0's key
    r = client.post("/v1/answers", json=answer("import:u1:0000000000"), headers=h)
    assert r.status_code == 201, r.text
    data = _dataset(tmp_path, [("u1", "i6", 1, 0), ("u1", "i1", 0, 1)])
    engine = create_db_engine(world.url)
    try:
        counts = importer.import_dataset(engine, org_slug="acme", dataset_dir=data)
    finally:
        engine.dispose()
    assert counts["skipped"] == 0 and counts["interactions"] == 2, counts
    hist = client.get("/v1/learners/u1/history", headers=world.headers("admin")).json()
    assert [a["event_id"] for a in hist["answers"]] == [
        "import:u1:0000000000",
        "import:u1:0000000001",
    ]


def _dataset(tmp_path, rows):  # noqa: ANN001, ANN202
    """A canonical dataset of (learner, item, correct, seq) rows with times."""
    import numpy as np
    import pyarrow as pa

    from data_loaders import DatasetWriter

    out = tmp_path / "ds"
    n = len(rows)
    with DatasetWriter(out, format_name="test") as w:
        w.register_file("generated")
        w.add_interactions(
            pa.table(
                {
                    "user_id": pa.array([r[0] for r in rows]),
                    "item_id": pa.array([r[1] for r in rows]),
                    "concept_ids": pa.array([["c0"]] * n, pa.list_(pa.string())),
                    "correct": pa.array(np.array([r[2] for r in rows], dtype=np.int8)),
                    "timestamp": pa.array(
                        [1_700_000_000_000 + 60_000 * r[3] for r in rows], pa.int64()
                    ),
                    "_file": pa.array(np.zeros(n, dtype=np.int32)),
                    "_line": pa.array(np.arange(1, n + 1, dtype=np.int64)),
                    "_order": pa.array(np.arange(1, n + 1, dtype=np.int64)),
                }
            )
        )
    return out


def test_an_id_mapping_that_merges_two_items_is_refused(world, tmp_path):
    from tutor.operations import OperationError

    run = _foreign_run(tmp_path, ["m0", "m1"], [[1], [2]])
    with pytest.raises(OperationError, match="same id"):
        _register(world, run, mapping={"items": {"m0": "m1"}, "concepts": {}})


def test_late_answers_beyond_the_replay_bound_are_413_and_store_nothing(world):
    """The write lock a request holds is bounded: late answers that would replay more stored
    answers than max_replay_answers are refused whole."""
    from fastapi.testclient import TestClient

    from tutor.api import create_app

    settings = world.settings.model_copy(update={"max_replay_answers": 5})
    with TestClient(create_app(settings)) as c:
        h = world.headers("ingest")
        for k in range(4):
            body = answer(f"t{k}", timestamp=f"2024-06-01T10:0{k}:00Z")
            assert c.post("/v1/answers", json=body, headers=h).status_code == 201
        late = [answer(f"l{k}", timestamp=f"2024-05-01T10:0{k}:00Z") for k in range(2)]
        r = c.post("/v1/answers", json={"answers": late}, headers=h)
        assert r.status_code == 413 and "smaller requests" in r.json()["detail"], r.text
        hist = c.get("/v1/learners/u0/history", headers=world.headers("admin")).json()
        assert hist["total"] == 4
        r = c.post("/v1/answers", json=late[0], headers=h)  # 4 stored + 1: within the bound
        assert r.status_code == 201, r.text


def test_long_id_lists_get_short_errors(client, world):
    """An item links at most MAX_ITEM_CONCEPTS concepts (422 naming the field), and an error
    about unknown ids lists the first few and counts the rest: a request full of unknown ids
    never gets an answer as long as itself."""
    from tutor.api.schemas import MAX_ITEM_CONCEPTS
    from tutor.errors import LISTED

    h = world.headers("admin")
    many = {"concepts": [f"x{k}" for k in range(MAX_ITEM_CONCEPTS + 1)]}
    r = client.put("/v1/items/q-many", json=many, headers=h)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "concepts"]
    unknown = {"concepts": [f"x{k}" for k in range(MAX_ITEM_CONCEPTS)]}
    r = client.put("/v1/items/q-many", json=unknown, headers=h)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert f"and {MAX_ITEM_CONCEPTS - LISTED} more" in detail and "'x0'" in detail
    assert f"'x{LISTED}'" not in detail, detail
    members = [f"nobody{k}" for k in range(500)]
    r = client.put("/v1/groups/g1/members", json=members, headers=h)
    assert r.status_code == 422 and "and 490 more" in r.json()["detail"], r.text
    assert len(r.text) < 1000
