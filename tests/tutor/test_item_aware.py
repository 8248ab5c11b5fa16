"""The service with an item-aware model (DKT with ``items='rasch'``, AKT): imported,
activated, answers folded in, and next-items that tell a concept's items apart, with the
model's own per-item predictions (no difficulty added from the data on top)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from kt_models.base import load_checkpoint

from .conftest import build_world

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize("which", ["dkt_items_run", "akt_run"])
def test_an_item_aware_model_serves_per_item_predictions(db_url, which, request):
    from tutor.api import create_app
    from tutor.catalogue import clear_cache
    from tutor.service import MODELS

    run = request.getfixturevalue(which)
    MODELS.clear()
    clear_cache()
    world = build_world(db_url, run)
    answers = [(f"i{k}", int(k % 3 != 0)) for k in (0, 5, 1, 6, 2, 11)]
    body = {
        "answers": [
            {
                "event_id": f"e{n}",
                "learner_id": "u1",
                "item_id": item,
                "correct": correct,
                "timestamp": (T0 + timedelta(minutes=n)).isoformat(),
            }
            for n, (item, correct) in enumerate(answers)
        ]
    }
    with TestClient(create_app(world.settings)) as c:
        r = c.post("/v1/answers", json=body, headers=world.headers("ingest"))
        assert r.status_code == 201, r.text
        mastery = c.get("/v1/learners/u1/mastery", headers=world.headers("admin"))
        assert mastery.status_code == 200, mastery.text
        nxt = c.get("/v1/learners/u1/next-items?n=12&policy=target", headers=world.headers("admin"))
        assert nxt.status_code == 200, nxt.text
    recs = nxt.json()["items"]
    assert len(recs) >= 6
    # the model's own predictions after the same answers, item by item
    model, _ = load_checkpoint(run / "best.pt")
    vocab = model.vocab
    state = model.init_state(1)
    with torch.no_grad():
        for n, (item, correct) in enumerate(answers):
            idx = torch.as_tensor(vocab.item_index([item]))
            day = torch.tensor([n / 1440.0])
            state = model.step(state, idx, torch.tensor([float(correct)]), day)
        ids = [r["item_id"] for r in recs]
        own = model.predict(state, torch.as_tensor(vocab.item_index(ids)).unsqueeze(0))[0]
    served = np.array([r["predicted_success"] for r in recs])
    np.testing.assert_allclose(served, own.numpy(), atol=1e-4)
    # items of one concept set get predictions of their own
    by_set: dict[tuple[str, ...], list[float]] = {}
    for rec in recs:
        by_set.setdefault(tuple(sorted(rec["concepts"])), []).append(rec["predicted_success"])
    shared = [p for p in by_set.values() if len(p) > 1]
    assert shared, by_set
    assert all(len(set(np.round(p, 6))) == len(p) for p in shared), by_set
