"""The README's main job: from the bundled real data to a running tutor service.

Steps (each printed as it runs): ingest the bundled ASSISTments 2009 sample into a canonical
dataset; train a small DKT on CPU; create a fresh SQLite database (Alembic migrations);
import the dataset (concepts with names, items, 900 learners and their histories) into an
organisation ``demo``; register and activate the model; put the first 30 learners in a class
``demo-class``; build every learner's state; create three API keys (admin, teacher of the
class, one learner), written to ``keys.json`` in the work directory (mode 600); then serve on
``http://HOST:PORT`` with the URLs to try.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

DEMO_ORG = "demo"
DEMO_GROUP = "demo-class"


def build_demo(
    workdir: Path,
    *,
    epochs: int = 20,
    progress: Any = None,
    say: Callable[[str], None] = print,
    train_progress: bool = True,
) -> dict[str, Any]:
    """Everything but serving; returns the database URL, keys and a few ids to try."""
    from data_loaders import ingest
    from kt_models.evaluate import evaluate_run
    from kt_models.train import TrainConfig, train

    from . import operations as ops
    from .db import Concept, Group, Learner, create_db_engine, make_sessionmaker
    from .db.migrate import upgrade
    from .importer import import_dataset
    from .security import create_key
    from .settings import Settings

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    sample = _sample("assist2009_pid")
    dataset = workdir / "assist2009_sample"
    t0 = time.perf_counter()
    manifest = ingest(
        "four-line",
        sample,
        dataset,
        overwrite=True,
        progress=progress,
        concepts=sample / "skill.json",
    )
    if progress is not None:
        progress.finish()
    say(
        f"1/6 ingested the bundled ASSISTments 2009 sample: {manifest.counts['interactions']:,} "
        f"answers of {manifest.counts.get('users', 900):,} learners -> {dataset}"
    )

    run = workdir / "run-dkt"
    res = train(
        "dkt",
        dataset,
        run,
        config=TrainConfig(epochs=epochs, patience=4, seed=7),
        model_overrides={"emb_dim": 32, "hidden": 64},
        progress=train_progress,
        log=lambda m: None,
    )
    ev = evaluate_run(run, multi_step=0)
    say(
        f"2/6 trained DKT on CPU in {sum(e['train_seconds'] for e in res['epochs']):.0f} s: "
        f"validation AUC {res['best_valid_auc']:.3f}, test AUC {ev['test']['auc']:.3f} -> {run}"
    )

    db = workdir / "tutor.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{db.resolve()}"
    upgrade(url)
    engine = create_db_engine(url)
    counts = import_dataset(engine, org_slug=DEMO_ORG, dataset_dir=dataset)
    say(
        f"3/6 database {db} migrated; imported {counts['interactions']:,} answers, "
        f"{counts['learners']:,} learners, {counts['items']:,} items, "
        f"{counts['concepts']:,} concepts"
    )
    settings = Settings(database_url=url)
    factory = make_sessionmaker(engine)
    with factory() as s, s.begin():
        org = ops.get_org(s, DEMO_ORG)
        org.name = "kt-tutor demo (ASSISTments 2009 sample)"
        known = set(s.scalars(select(Concept.external_id).where(Concept.org_id == org.id)))
        ccss = _sample("assist2009_ccss")
        edges = prerequisite_edges(ccss / "prerequisites.csv", known)
        ops.set_prerequisites(s, org=org, edges=edges)
        levels = concept_levels(ccss / "concept_standards.csv", known)
        ops.set_concept_levels(s, org=org, levels=levels)
        mv = ops.register_model(s, org=org, run_dir=run, activate=True, label="demo DKT")
        learners = list(
            s.scalars(select(Learner).where(Learner.org_id == org.id).order_by(Learner.id))
        )
        group = Group(org_id=org.id, external_id=DEMO_GROUP, name="Demo class")
        s.add(group)
        s.flush()
        ops.add_members(s, group=group, learners=learners[:30])
        n = ops.rebuild_states(s, org=org, model_id=mv.id)
        say(
            f"4/6 prerequisite graph ({len(edges)} edges) and grades of {len(levels)} concepts "
            "(after the Common Core State Standards) "
            f"loaded; model {mv.id} ({mv.name}) active; states of {n:,} learners built"
        )
        pep = settings.key_pepper
        keys = {
            "admin": create_key(s, org=org, role="admin", pepper=pep, name="demo admin")[0],
            "teacher": create_key(
                s, org=org, role="teacher", pepper=pep, groups=[group], name="demo teacher"
            )[0],
            "learner": create_key(
                s, org=org, role="learner", pepper=pep, learner=learners[0], name="demo learner"
            )[0],
        }
        learner_id = learners[0].external_id
    engine.dispose()
    key_file = workdir / "keys.json"
    tmp = key_file.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"database_url": url, "keys": keys, "learner": learner_id}, fh, indent=2)
    tmp.replace(key_file)
    say(f"5/6 API keys (admin, teacher of {DEMO_GROUP}, learner {learner_id}) -> {key_file}")
    say(f"    ready in {time.perf_counter() - t0:.0f} s")
    return {"database_url": url, "keys": keys, "learner": learner_id, "group": DEMO_GROUP}


def try_urls(base: str, demo: dict[str, Any]) -> str:
    k = demo["keys"]
    lid = demo["learner"]
    auth = f'-H "Authorization: Bearer {k["admin"]}"'
    return "\n".join(
        [
            f"  API docs (OpenAPI):  {base}/docs",
            f"  health / readiness:  {base}/health   {base}/ready",
            f"  mastery:       curl {auth} {base}/v1/learners/{lid}/mastery",
            f"  next items:    curl {auth} '{base}/v1/learners/{lid}/next-items?n=5'",
            f"  curriculum:    curl {auth} {base}/v1/groups/{demo['group']}/curriculum",
            "  post an answer:",
            f"    curl {auth} -H 'Content-Type: application/json' {base}/v1/answers \\",
            f'      -d \'{{"event_id": "try-1", "learner_id": "{lid}", '
            f'"item_id": "<an item id from next-items>", "correct": 1}}\'',
            f"  teacher key: {k['teacher']}",
            f"  learner key ({lid}): {k['learner']}",
        ]
    )


def prerequisite_edges(path: Path, known: set[str]) -> list[tuple[str, str]]:
    """The bundled prerequisite graph (``prerequisite,concept`` CSV) restricted to the concepts
    ``known`` to the organisation; a concept missing there is bridged (its prerequisites
    become prerequisites of what it leads to), so that no ordering is lost."""
    import csv

    with path.open(encoding="utf-8", newline="") as fh:
        pairs = [(r["prerequisite"].strip(), r["concept"].strip()) for r in csv.DictReader(fh)]
    parents: dict[str, set[str]] = {}
    for a, b in pairs:
        parents.setdefault(b, set()).add(a)

    def known_ancestors(c: str, seen: set[str]) -> set[str]:
        out: set[str] = set()
        for p in parents.get(c, ()):
            if p in seen:
                continue
            seen.add(p)
            out |= {p} if p in known else known_ancestors(p, seen)
        return out

    edges = {(a, b) for b in parents if b in known for a in known_ancestors(b, set())}
    return sorted(edges, key=lambda e: (int(e[0]), int(e[1])) if e[0].isdigit() else e)


def concept_levels(path: Path, known: set[str]) -> dict[str, float]:
    """The bundled concepts' school grades (``concept,...,grade`` CSV; high school = 9) for
    the concepts ``known`` to the organisation."""
    import csv

    with path.open(encoding="utf-8", newline="") as fh:
        return {
            r["concept"].strip(): float(r["grade"])
            for r in csv.DictReader(fh)
            if r["concept"].strip() in known
        }


def _sample(name: str) -> Path:
    from importlib.resources import files

    return Path(str(files("tutor") / "sample" / name))
