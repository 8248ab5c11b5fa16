"""Bulk import of a canonical dataset (``tutor.importer``) on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from sqlalchemy import func, select

import tutor.importer as importer
from data_loaders import Dataset, DatasetError, DatasetWriter
from kt_models.data import load_sequences
from tutor import operations as ops
from tutor.db import (
    Concept,
    Interaction,
    Item,
    ItemConcept,
    Learner,
    Organisation,
    create_db_engine,
    make_sessionmaker,
)
from tutor.runtime import SECONDS_PER_DAY, _leaves
from tutor.service import MODELS, as_utc
from tutor.states import answers_in_order, current_state


def _count(s, model, org_id: int) -> int:  # noqa: ANN001
    return s.scalar(select(func.count()).select_from(model).where(model.org_id == org_id))


def _dataset_truth(path: Path) -> dict[str, tuple[int, datetime]]:
    """Per learner: (answers, earliest timestamp)."""
    t = Dataset.open(path).interactions(["user_id", "timestamp"])
    g = t.group_by("user_id").aggregate([("timestamp", "count"), ("timestamp", "min")])
    return {
        u: (n, as_utc(ts))
        for u, n, ts in zip(
            g.column("user_id").to_pylist(),
            g.column("timestamp_count").to_pylist(),
            g.column("timestamp_min").to_pylist(),
            strict=True,
        )
    }


def test_import_counts_learners_and_idempotence(db_url: str, skill_data: Path) -> None:
    ds = Dataset.open(skill_data)
    m = ds.manifest["counts"]
    links = sum(len(set(c)) for c in ds.items().column("concept_ids").to_pylist())
    engine = create_db_engine(db_url)
    try:
        c = importer.import_dataset(engine, org_slug="acme", dataset_dir=skill_data)
        assert (c["concepts"], c["items"], c["learners"], c["interactions"]) == (
            m["concepts"],
            m["items"],
            m["learners"],
            m["interactions"],
        )
        assert c["item_concepts"] == links
        assert c["skipped"] == 0 and c["rows"] == m["interactions"]
        assert c["synthetic_timestamps"] == 0 and c["catalogue_version"] == 1

        truth = _dataset_truth(skill_data)
        factory = make_sessionmaker(engine)
        with factory() as s:
            org = s.scalar(select(Organisation).where(Organisation.slug == "acme"))
            assert _count(s, Interaction, org.id) == m["interactions"]
            assert _count(s, Learner, org.id) == m["learners"]
            assert _count(s, Concept, org.id) == m["concepts"]
            assert (
                s.scalar(
                    select(func.count())
                    .select_from(ItemConcept)
                    .join(Item, Item.id == ItemConcept.item_id)
                    .where(Item.org_id == org.id)
                )
                == links
            )
            for lr in s.scalars(select(Learner).where(Learner.org_id == org.id)):
                n, first = truth[lr.external_id]
                assert lr.n_answers == n
                assert as_utc(lr.first_seen) == first
            # the service's order is the dataset's order (seq)
            u0 = s.scalar(select(Learner).where(Learner.external_id == "u0"))
            hist = answers_in_order(s, u0.id)
            assert [h[3] for h in hist] == [f"import:u0:{k:010d}" for k in range(len(hist))]

        again = importer.import_dataset(engine, org_slug="acme", dataset_dir=skill_data)
        assert again["interactions"] == 0 and again["skipped"] == m["interactions"]
        assert (again["concepts"], again["items"], again["learners"]) == (0, 0, 0)
        assert again["item_concepts"] == 0
        assert again["catalogue_version"] == 1  # nothing written, nothing bumped
        with factory() as s:
            assert s.scalar(select(func.count()).select_from(Interaction)) == m["interactions"]
            assert s.scalar(select(func.sum(Learner.n_answers))) == m["interactions"]
    finally:
        engine.dispose()


def test_failure_mid_import_leaves_nothing(
    db_url: str, skill_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importer._insert_interactions
    calls = []

    def flaky(conn, chunk):  # noqa: ANN001, ANN202
        calls.append(chunk.num_rows)
        if len(calls) > 1:
            raise RuntimeError("disk on fire")
        real(conn, chunk)

    monkeypatch.setattr(importer, "_insert_interactions", flaky)
    engine = create_db_engine(db_url)
    try:
        with pytest.raises(RuntimeError, match="disk on fire"):
            importer.import_dataset(engine, org_slug="acme", dataset_dir=skill_data)
        assert len(calls) == 2
        with make_sessionmaker(engine)() as s:
            for model in (Organisation, Concept, Item, ItemConcept, Learner, Interaction):
                assert s.scalar(select(func.count()).select_from(model)) == 0, model
    finally:
        engine.dispose()


def test_unknown_org_and_bad_dataset(tmp_path: Path, skill_data: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    from tests.tutor.conftest import reset_schema

    reset_schema(url)
    engine = create_db_engine(url)
    try:
        with pytest.raises(ops.OperationError, match="'nope'"):
            importer.import_dataset(
                engine, org_slug="nope", dataset_dir=skill_data, create_org=False
            )
        with pytest.raises(DatasetError, match="missing"):
            importer.import_dataset(engine, org_slug="acme", dataset_dir=tmp_path / "missing")
        # within a caller's session: the caller commits
        with make_sessionmaker(engine)() as s, s.begin():
            ops.create_org(s, slug="acme")
            c = importer.import_dataset(s, org_slug="acme", dataset_dir=skill_data)
            assert c["interactions"] > 0
        with make_sessionmaker(engine)() as s:
            assert s.scalar(select(func.count()).select_from(Interaction)) == c["interactions"]
    finally:
        engine.dispose()


def _write_untimed(out: Path) -> Path:
    """u1: no timestamps; u2: gaps (leading, middle) and a tie across seq 9 / 10."""
    base = 1_700_000_000_000
    users, items, ts = [], [], []
    for k in range(12):
        users.append("u1")
        items.append(f"i{k % 3}")
        ts.append(None)
    for k in range(12):
        users.append("u2")
        items.append(f"i{k % 3}")
        ts.append(None if k in (0, 5) else base + (k // 2) * 60_000 if k < 9 else base + 600_000)
    n = len(users)
    with DatasetWriter(out, format_name="test-untimed") as w:
        w.register_file("generated")
        w.add_interactions(
            pa.table(
                {
                    "user_id": pa.array(users),
                    "item_id": pa.array(items),
                    "concept_ids": pa.array([["c0"]] * n, pa.list_(pa.string())),
                    "correct": pa.array(np.arange(n, dtype=np.int8) % 2),
                    "timestamp": pa.array(ts, pa.int64()),
                    "_file": pa.array(np.zeros(n, dtype=np.int32)),
                    "_line": pa.array(np.arange(1, n + 1, dtype=np.int64)),
                    "_order": pa.array(np.arange(1, n + 1, dtype=np.int64)),
                }
            )
        )
    return out


def test_missing_timestamps_and_ties(tmp_path: Path) -> None:
    data = _write_untimed(tmp_path / "untimed")
    url = f"sqlite:///{tmp_path / 't.db'}"
    from tests.tutor.conftest import reset_schema

    reset_schema(url)
    engine = create_db_engine(url)
    try:
        c = importer.import_dataset(engine, org_slug="acme", dataset_dir=data)
        assert c["synthetic_timestamps"] == 12 and c["filled_timestamps"] == 2
        with make_sessionmaker(engine)() as s:
            for ext in ("u1", "u2"):
                lr = s.scalar(select(Learner).where(Learner.external_id == ext))
                hist = answers_in_order(s, lr.id)
                assert [h[3] for h in hist] == [f"import:{ext}:{k:010d}" for k in range(12)]
                times = [h[2] for h in hist]
                assert times == sorted(times)
                assert lr.n_answers == 12 and as_utc(lr.first_seen) == times[0]
            u1 = s.scalar(select(Learner).where(Learner.external_id == "u1"))
            t1 = [h[2] for h in answers_in_order(s, u1.id)]
            epoch = importer.SYNTHETIC_EPOCH
            assert t1 == [epoch + timedelta(seconds=k) for k in range(12)]
            u2 = s.scalar(select(Learner).where(Learner.external_id == "u2"))
            t2 = [h[2] for h in answers_in_order(s, u2.id)]
            assert t2[0] == t2[1]  # leading gap: the first known time
            assert t2[5] == t2[4]  # a gap: the previous time
            assert t2[9] == t2[10] == t2[11]  # ties keep seq order (event ids)
            # u1's clock is synthetic: its answers say so (the analytics read no dates there)
            sources = dict(
                s.execute(
                    select(Learner.external_id, func.min(Interaction.source))
                    .join(Interaction, Interaction.learner_id == Learner.id)
                    .group_by(Learner.external_id)
                ).all()
            )
            assert sources == {"u1": importer.SOURCE_UNTIMED, "u2": importer.SOURCE}
    finally:
        engine.dispose()


def test_migration_marks_answers_imported_without_a_clock(tmp_path: Path) -> None:
    """Migration 0003 finds the answers an earlier import gave a synthetic time (exactly
    2000-01-01 plus the event id's seq seconds) and marks them; downgrade unmarks."""
    from sqlalchemy import update

    from tutor.db.migrate import downgrade, upgrade

    data = _write_untimed(tmp_path / "untimed")
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url, "head")
    engine = create_db_engine(url)

    def sources() -> dict[str, set[str]]:
        with make_sessionmaker(engine)() as s:
            rows = s.execute(
                select(Learner.external_id, Interaction.source).join(
                    Interaction, Interaction.learner_id == Learner.id
                )
            ).all()
        out: dict[str, set[str]] = {}
        for u, src in rows:
            out.setdefault(u, set()).add(src)
        return out

    try:
        importer.import_dataset(engine, org_slug="acme", dataset_dir=data)
        assert sources() == {"u1": {"import-untimed"}, "u2": {"import"}}
        downgrade(url, "0002")
        assert sources() == {"u1": {"import"}, "u2": {"import"}}
        # an imported answer in 2000 whose time is not the synthetic one stays
        with engine.begin() as c:
            c.execute(
                update(Interaction)
                .where(Interaction.event_id == "import:u1:0000000003")
                .values(timestamp=importer.SYNTHETIC_EPOCH + timedelta(seconds=99))
            )
        upgrade(url, "head")
        with make_sessionmaker(engine)() as s:
            src = dict(s.execute(select(Interaction.event_id, Interaction.source)).all())
        assert src["import:u1:0000000003"] == "import"
        assert {v for k, v in src.items() if k.startswith("import:u1:") and k[-1] != "3"} == {
            "import-untimed"
        }
        assert {v for k, v in src.items() if k.startswith("import:u2:")} == {"import"}
    finally:
        engine.dispose()


def test_rebuilt_states_match_the_model_over_the_dataset(
    db_url: str, skill_data: Path, dkt_run: Path
) -> None:
    MODELS.clear()
    engine = create_db_engine(db_url)
    try:
        factory = make_sessionmaker(engine)
        with factory() as s, s.begin():
            org = ops.create_org(s, slug="acme")
            mv = ops.register_model(s, org=org, run_dir=dkt_run, activate=True)
            importer.import_dataset(s, org_slug="acme", dataset_dir=skill_data)
            s.refresh(org)
            assert ops.rebuild_states(s, org=org) == 60
            mid = mv.id
        model = MODELS.get(mid, lambda: None, scope=engine.url.render_as_string(hide_password=True))
        seqs, _ = load_sequences(skill_data, vocab=model.model.vocab)
        lens = seqs.lengths()
        with factory() as s, s.begin():
            for u in (0, 7, 33, 59):
                ext = str(seqs.users[u])
                lr = s.scalar(select(Learner).where(Learner.external_id == ext))
                got, row = current_state(s, learner=lr, model=model)
                assert row.n_applied == lens[u] == lr.n_answers
                a, b = seqs.offsets[u], seqs.offsets[u + 1]
                days = (seqs.time[a:b] - seqs.time[a]) / SECONDS_PER_DAY
                times = days if model.time_unit == "days" else np.arange(b - a, dtype=float)
                want = model.model.init_state(1)
                with torch.no_grad():
                    for i, y, t in zip(seqs.item[a:b], seqs.correct[a:b], times, strict=True):
                        want = model.model.step(
                            want,
                            torch.tensor([int(i)]),
                            torch.tensor([float(y)]),
                            torch.tensor([float(t)], dtype=torch.float32),
                        )
                for g, w in zip(_leaves(got), _leaves(want), strict=True):
                    torch.testing.assert_close(g, w, atol=1e-5, rtol=0)
                init = _leaves(model.model.init_state(1))
                assert any(
                    not torch.allclose(g, i) for g, i in zip(_leaves(got), init, strict=True)
                )
    finally:
        engine.dispose()
        MODELS.clear()


def test_seq_padding_keeps_event_order() -> None:
    # lexicographic order of the padded ids is numeric order
    ids = pc.utf8_lpad(pc.cast(pa.array([2, 10, 9, 100]), pa.string()), 10, "0").to_pylist()
    assert sorted(ids) == [ids[0], ids[2], ids[1], ids[3]]
    assert datetime(2000, 1, 1, tzinfo=UTC) == importer.SYNTHETIC_EPOCH


def test_expanded_multi_skill_rows_are_one_answer(tmp_path: Path) -> None:
    from data_loaders import ingest
    from tests.conftest import FIXTURES
    from tests.tutor.conftest import reset_schema

    data = tmp_path / "expanded"
    ingest("four-line", FIXTURES / "benchmark" / "four_line", data, keep_expanded=True)
    seqs, _ = load_sequences(data)
    url = f"sqlite:///{tmp_path / 't.db'}"
    reset_schema(url)
    engine = create_db_engine(url)
    try:
        c = importer.import_dataset(engine, org_slug="acme", dataset_dir=data)
        assert c["merged_expanded"] > 0
        assert c["interactions"] == seqs.n_interactions == c["rows"] - c["merged_expanded"]
        with make_sessionmaker(engine)() as s:
            got = dict(s.execute(select(Learner.external_id, Learner.n_answers)).all())
        assert got == dict(zip(seqs.users.tolist(), seqs.lengths().tolist(), strict=True))
    finally:
        engine.dispose()
