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
