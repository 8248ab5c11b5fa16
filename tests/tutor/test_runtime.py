"""tutor.runtime: the reachable range of concept mastery and mastery measured on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tutor.runtime import SECONDS_PER_DAY, LoadedModel


def _load(run: Path) -> LoadedModel:
    return LoadedModel.from_bytes(1, (run / "best.pt").read_bytes())


@pytest.mark.parametrize("which", ["dkt_run", "psikt_run"])
def test_reference_is_a_new_learner_and_a_learner_after_a_streak(which, request):
    model = _load(request.getfixturevalue(which))
    streak = 3
    floor, ceiling = model.mastery_reference(streak)
    n_c = len(model.concept_ids)
    t0 = 0.0 if model.forgets else None
    new = model.concept_mastery(model.model.init_state(1), t0)
    np.testing.assert_allclose(floor, new, atol=1e-6)
    dt = 45.0 / SECONDS_PER_DAY if model.time_unit == "days" else 1.0
    w = model.concept_item_weights.numpy()
    for c in range(1, n_c + 1):
        own = np.flatnonzero(w[c, 1:] > 0) + 1
        items = [int(own[k % len(own)]) for k in range(streak)]
        # one learner, answer by answer, through the serving path
        state = model.step_many(
            model.model.init_state(1), items, [1] * streak, [k * dt for k in range(streak)]
        )
        at = (streak - 1) * dt if model.forgets else None
        assert model.concept_mastery(state, at)[c] == pytest.approx(ceiling[c], abs=1e-5)
    # the models learned the skills: right answers raise predicted success on the concept
    assert (ceiling[1:] > floor[1:]).all(), (floor, ceiling)
    assert model.mastery_reference(streak) is model.mastery_reference(streak)  # cached
    assert model.mastery_reference(1)[0] is not floor  # one entry per streak length


def test_scaled_mastery_places_mastery_on_the_reachable_range(dkt_run):
    model = _load(dkt_run)
    floor, ceiling = model.mastery_reference(3)
    ok = ceiling - floor >= 0.02
    ok[0] = False
    assert ok.any()
    assert model.scaled_mastery(floor)[ok] == pytest.approx(0.0, abs=1e-9)
    assert model.scaled_mastery(ceiling)[ok] == pytest.approx(1.0, abs=1e-9)
    mid = (floor + ceiling) / 2
    assert model.scaled_mastery(mid)[ok] == pytest.approx(0.5, abs=1e-6)
    assert (model.scaled_mastery(floor - 0.1)[ok] == 0.0).all()  # below a new learner
    assert (model.scaled_mastery(ceiling + 0.1)[ok] == 1.0).all()  # beyond the streak
    # a concept the model barely moves on keeps its predicted success
    m = np.full_like(floor, 0.42)
    assert model.scaled_mastery(m)[~ok][1:] == pytest.approx(0.42)
    model._references[3] = (floor.copy(), floor + 0.01)
    assert model.scaled_mastery(m)[1:] == pytest.approx(0.42)
    with pytest.raises(ValueError, match="streak"):
        model.mastery_reference(0)
