"""Real-data audit of the tutor: does it behave as a teacher would expect?

For each dataset (``--datasets``, from ``../shared/data``) and model (``--models``):

1. the dataset is ingested (cached under ``runs/tutor_audit/data``) and the model trained with
   its defaults, at most ``--epochs`` epochs (cached under ``runs/tutor_audit``);
2. a fresh SQLite database gets the schema (Alembic), the dataset (``import_dataset``) and the
   model (registered, active). The held-out learners (the test learners of the training
   protocol) are taken out of the database after the import, their histories kept aside: the
   item difficulties and the data's precedence the service draws from the database never see
   them;
3. scripted learners go through the code behind the HTTP routes (``record_answers`` behind
   ``POST /v1/answers``, ``learner_view`` + ``recommend`` behind ``GET next-items``,
   ``mastery_of`` behind ``GET mastery``, ``analytics.at_risk`` behind the at-risk route),
   with the service's default settings, answers 30 s apart:

   (a) an always-correct new learner follows the default policy (first item of
       ``next-items?n=5``) until it recommends nothing: questions per concept until mastered,
       concepts left unmastered, recommendations of concepts already mastered, and
       recommendations of the question just answered;
   (b) an always-wrong new learner answers 40 questions: when the recommender first steps
       back (to a prerequisite or easier questions, or moves on when there is neither), and
       the at-risk reasons a teacher reads for them;
   (c) held-out learners' real histories are replayed answer by answer (``--replay``
       learners, at most ``--replay-answers`` answers each): own-evidence monotonicity
       violations in reported mastery (a correct answer on concept c lowers c, or a wrong one
       raises it) against the raw model's (the mean predicted success of c's items), and
       concepts reported mastered without own answers;
   (d) the designed curriculum against the held-out learners' order: of the concept pairs
       that at least 70% of at least 20 held-out learners met in one order, the share the
       curriculum keeps (drawn from the data; for ASSISTments 2009 also with the bundled
       Common Core prerequisite graph loaded, as the demo does);
   (e) recommendation quality at every 10th answer of the replays: for ``target`` (n=5) the
       mean |predicted success - target|, the distinct items in the 5 and the share of
       distinct predictions among those of one concept; for the default ``mixed`` the share of
       items predicted below 0.4; and concept switches (a question sharing no concept with the
       previous one) per 10 questions of a model-driven learner (answers drawn from the
       model's predicted success) following ``mixed`` for 30 questions.

Prints one table per dataset and writes them to ``--out`` (default
``docs/benchmarks/tutor_audit.txt``).

    python benchmarks/tutor_audit.py                                 # all datasets and models
    python benchmarks/tutor_audit.py --datasets a09 --models dkt --replay 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from kt_quality import DATASETS  # noqa: E402 - the same datasets as the quality table

ORG = "audit"
#: prerequisite graphs the project ships: (d) is also measured with them loaded
GRAPHS = {"a09": ROOT / "tutor" / "sample" / "assist2009_ccss" / "prerequisites.csv"}
GAP = timedelta(seconds=30)
START = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)


def prepare(key: str, model: str, args: argparse.Namespace, log) -> tuple[Path, Path]:  # noqa: ANN001
    from data_loaders import ingest
    from kt_models.train import TrainConfig, train

    label, fmt, rel, kw = DATASETS[key]
    ds = args.work / "data" / key
    if not (ds / "manifest.json").exists():
        log(f"ingest {label}")
        ingest(
            fmt, args.data / rel, ds, overwrite=True, **{k: args.data / v for k, v in kw.items()}
        )
    run = args.work / f"{key}-{model}"
    if not (run / "best.pt").exists():
        log(f"train {model} on {label} (at most {args.epochs} epochs)")
        train(
            model,
            ds,
            run,
            config=TrainConfig(epochs=args.epochs, patience=2, seed=7),
            progress=False,
            log=lambda m: None,
        )
    return ds, run


class Audit:
    """One dataset x model: the database and the scripted learners."""

    def __init__(self, key: str, model: str, ds: Path, run: Path, args, log) -> None:  # noqa: ANN001
        import torch
        from sqlalchemy import delete, select

        from kt_models.evaluate import load_run
        from tutor import operations as ops
        from tutor import service, states
        from tutor.catalogue import clear_cache
        from tutor.db import Interaction, Item, Learner, create_db_engine, make_sessionmaker
        from tutor.db.migrate import upgrade
        from tutor.importer import import_dataset

        self.key, self.model_name, self.args, self.log = key, model, args, log
        db = args.work / f"{key}-{model}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        url = f"sqlite:///{db}"
        upgrade(url)
        self.engine = create_db_engine(url)
        t0 = time.perf_counter()
        counts = import_dataset(self.engine, org_slug=ORG, dataset_dir=ds)
        log(f"imported {counts['interactions']:,} answers in {time.perf_counter() - t0:.0f} s")
        lr = load_run(run, device=torch.device("cpu"))
        held = [str(u) for u in np.asarray(lr.seqs.users)[lr.users]]
        service.MODELS.clear()
        clear_cache()
        self.factory = make_sessionmaker(self.engine)
        self.held: dict[str, list[tuple[str, int, datetime]]] = {}
        with self.factory() as s, s.begin():
            org = ops.get_org(s, ORG)
            ids = dict(
                s.execute(
                    select(Learner.external_id, Learner.id).where(
                        Learner.org_id == org.id, Learner.external_id.in_(held)
                    )
                ).all()
            )
            for ext, lid in ids.items():
                rows = s.execute(
                    select(Item.external_id, Interaction.correct, Interaction.timestamp)
                    .join(Item, Item.id == Interaction.item_id)
                    .where(Interaction.learner_id == lid)
                    .order_by(Interaction.timestamp, Interaction.event_id)
                ).all()
                self.held[ext] = [(r[0], int(r[1]), service.as_utc(r[2])) for r in rows]
            s.execute(delete(Interaction).where(Interaction.learner_id.in_(list(ids.values()))))
            s.execute(delete(Learner).where(Learner.id.in_(list(ids.values()))))
            org.bump_catalogue()
            mv = ops.register_model(s, org=org, run_dir=run, activate=True, label=model)
            self.model_id = mv.id
        log(f"held out {len(self.held):,} learners; model {model} registered")
        self.concepts_of = {}
        with self.factory() as s:
            self.concepts_of = states.concepts_of_items(s, org_id=ops.get_org(s, ORG).id)
            self.names = {c.external_id: c.name or c.external_id for c in self._concepts(s)}

    def _concepts(self, s):  # noqa: ANN001, ANN202
        from sqlalchemy import select

        from tutor import operations as ops
        from tutor.db import Concept

        return s.scalars(select(Concept).where(Concept.org_id == ops.get_org(s, ORG).id)).all()

    # ------------------------------------------------------------------ service calls
    def new_learner(self, ext: str) -> None:
        from tutor import operations as ops
        from tutor.db import Learner

        with self.factory() as s, s.begin():
            org = ops.get_org(s, ORG)
            s.add(Learner(org_id=org.id, external_id=ext, n_answers=0))

    def answer(self, ext: str, item: str, correct: int, at: datetime, k: int) -> dict[str, Any]:
        from tutor import operations as ops
        from tutor import service

        with self.factory() as s, s.begin():
            org = ops.get_org(s, ORG)
            a = service.AnswerIn(f"{ext}|{k}", ext, item, int(correct), at, source="audit")
            return service.record_answers(s, org=org, answers=[a])[0]

    def next_items(self, ext: str, at: datetime, policy: str = "mixed", n: int = 5) -> dict:
        from tutor import operations as ops
        from tutor import recommend, service

        with self.factory() as s, s.begin():
            org = ops.get_org(s, ORG)
            learner = service.get_learner(s, org_id=org.id, external_id=ext)
            lv = recommend.learner_view(s, org=org, learner=learner, recent_exclusion=5, at=at)
            return recommend.recommend(lv, n=n, policy=policy, target=0.7, review_threshold=0.6)

    def mastery(self, ext: str, concepts: list[str] | None = None) -> dict[str, dict]:
        from sqlalchemy import select

        from tutor import evidence, service, states
        from tutor import operations as ops
        from tutor.db import Concept

        with self.factory() as s, s.begin():
            org = ops.get_org(s, ORG)
            learner = service.get_learner(s, org_id=org.id, external_id=ext)
            model = service.active_model(s, org=org)
            state, row = states.current_state(s, learner=learner, model=model)
            q = select(Concept).where(Concept.org_id == org.id)
            if concepts is not None:
                q = q.where(Concept.external_id.in_(concepts))
            rows = service.mastery_of(
                model,
                state,
                list(s.scalars(q)),
                evidence=evidence.load(row.evidence),
                rule=evidence.EvidenceRule(),
                any_answers=learner.n_answers > 0,
            )
            return {r["concept_id"]: r for r in rows}

    def curriculum(self) -> list[str]:
        from tutor import operations as ops
        from tutor import recommend, service

        with self.factory() as s:
            org = ops.get_org(s, ORG)
            cat = recommend.catalogue(s, org)
            view = recommend.model_view(cat, service.active_model(s, org=org))
            return [cat.concept_ext[c] for c in view["curriculum_pos"]]

    # ------------------------------------------------------------------ the audits
    def always_correct(self) -> dict[str, Any]:
        ext = "audit-always-correct"
        self.new_learner(ext)
        at, k = START, 0
        questions: dict[str, int] = {}
        mastered_at: dict[str, int] = {}
        after_mastered = 0
        repeats, previous = 0, None
        cap = self.args.max_questions
        while k < cap:
            out = self.next_items(ext, at)
            if not out["items"]:
                break
            item = out["items"][0]
            repeats += item["item_id"] == previous  # the question just answered, again
            previous = item["item_id"]
            if item["concepts"] and all(c in mastered_at for c in item["concepts"]):
                after_mastered += 1  # an item of nothing but mastered concepts
            res = self.answer(ext, item["item_id"], 1, at, k)
            for m in res["mastery"]:
                c = m["concept_id"]
                questions[c] = questions.get(c, 0) + 1
                if m["status"] == "mastered" and c not in mastered_at:
                    mastered_at[c] = questions[c]
            k += 1
            at += GAP
        final = self.mastery(ext)
        with_items = {c for cs in self.concepts_of.values() for c in cs}
        left = [c for c in with_items if final[c]["status"] != "mastered"]
        per = np.array(list(mastered_at.values()) or [0])
        return {
            "questions": k,
            "stopped": "nothing left to recommend" if k < cap else f"cap of {cap} questions",
            "concepts_with_items": len(with_items),
            "mastered": len(mastered_at),
            "left_unmastered": len(left),
            "per_concept_median": float(np.median(per)),
            "per_concept_max": int(per.max()),
            "recommended_after_mastered": after_mastered,
            "repeated_at_once": repeats,
        }

    def always_wrong(self) -> dict[str, Any]:
        from tutor import analytics
        from tutor import operations as ops
        from tutor.db import Group, Learner
        from tutor.settings import Settings

        ext = "audit-always-wrong"
        self.new_learner(ext)
        at = START
        first_step_back = None
        policies: dict[str, int] = {}
        for k in range(40):
            out = self.next_items(ext, at)
            if not out["items"]:
                break
            item = out["items"][0]
            policies[item["policy"]] = policies.get(item["policy"], 0) + 1
            reacts = item["policy"] == "step-back" or item["reason"].startswith("Moving on")
            if reacts and first_step_back is None:
                first_step_back = (k + 1, item["reason"])
            self.answer(ext, item["item_id"], 0, at, k)
            at += GAP
        from sqlalchemy import select

        with self.factory() as s, s.begin():
            org = ops.get_org(s, ORG)
            g = Group(org_id=org.id, external_id="audit-wrong", name="audit")
            s.add(g)
            s.flush()
            learner = s.scalar(select(Learner).where(Learner.external_id == ext))
            ops.add_members(s, group=g, learners=[learner])
            risk = analytics.at_risk(
                s, org=org, group=g, settings=Settings(environment="test"), now=at
            )
        reasons = risk["learners"][0]["reasons"] if risk["learners"] else []
        return {
            "first_step_back": first_step_back[0] if first_step_back else None,
            "step_back_reason": first_step_back[1] if first_step_back else "",
            "policies": policies,
            "at_risk_reasons": [r for r in reasons if "wrong in a row" in r or "no progress" in r],
        }

    def replay(self) -> dict[str, Any]:
        rng = np.random.default_rng(0)
        learners = sorted(self.held)
        learners = [learners[i] for i in rng.permutation(len(learners))[: self.args.replay]]
        viol_rep = viol_raw = checks = 0
        no_evidence_mastered = 0
        target_gap: list[float] = []
        distinct_items: list[int] = []
        distinct_preds: list[int] = []
        below = below_n = 0
        for j, ext in enumerate(learners):
            hist = self.held[ext][: self.args.replay_answers]
            name = f"replay-{ext}"
            self.new_learner(name)
            for k, (item, correct, _) in enumerate(hist):
                at = START + k * GAP
                cs = list(self.concepts_of.get(item, ()))
                before = self.mastery(name, cs) if cs else {}
                res = self.answer(name, item, correct, at, k)
                for m in res["mastery"]:
                    b = before.get(m["concept_id"])
                    if b is None or m["mastery"] is None or b["mastery"] is None:
                        continue
                    checks += 1
                    sign = 1 if correct else -1
                    if sign * (m["mastery"] - b["mastery"]) < -1e-9:
                        viol_rep += 1
                    if sign * (m["predicted_success"] - b["predicted_success"]) < -1e-9:
                        viol_raw += 1
                if (k + 1) % 10 == 0:
                    t = self.next_items(name, at + GAP, policy="target")
                    ps = [i["predicted_success"] for i in t["items"]]
                    if ps:
                        target_gap.append(float(np.mean(np.abs(np.array(ps) - 0.7))))
                        distinct_items.append(len({i["item_id"] for i in t["items"]}))
                    # items of one concept told apart: distinct predictions among the items
                    # of the first recommended item's concept that the 5 hold
                    first = t["items"][0]["concepts"][:1] if t["items"] else []
                    same = [
                        i["predicted_success"] for i in t["items"] if i["concepts"][:1] == first
                    ]
                    if len(same) > 1:
                        distinct_preds.append(len(set(same)) / len(same))
                    mixed = self.next_items(name, at + GAP)
                    below += sum(i["predicted_success"] < 0.4 for i in mixed["items"])
                    below_n += len(mixed["items"])
            final = self.mastery(name)
            no_evidence_mastered += sum(
                1 for r in final.values() if r["status"] == "mastered" and r["answers"] == 0
            )
            if (j + 1) % 10 == 0:
                self.log(f"  replayed {j + 1}/{len(learners)} learners")
        return {
            "learners": len(learners),
            "checks": checks,
            "violations_reported": viol_rep,
            "violations_raw": viol_raw,
            "mastered_without_answers": no_evidence_mastered,
            "target_gap": float(np.mean(target_gap)) if target_gap else float("nan"),
            "distinct_items": float(np.mean(distinct_items)) if distinct_items else float("nan"),
            "same_concept_distinct": (
                float(np.mean(distinct_preds)) if distinct_preds else float("nan")
            ),
            "mixed_below_0.4": below / below_n if below_n else float("nan"),
        }

    def load_graph(self, path: Path) -> int:
        """Set the organisation's prerequisite graph from a ``prerequisite,concept`` CSV and the
        concepts' grades from ``concept_standards.csv`` beside it (as ``tutor demo`` does with
        the bundled CCSS files); returns the edges kept."""
        from sqlalchemy import select

        from tutor import operations as ops
        from tutor.db import Concept
        from tutor.demo import concept_levels, prerequisite_edges

        with self.factory() as s, s.begin():
            org = ops.get_org(s, ORG)
            known = set(s.scalars(select(Concept.external_id).where(Concept.org_id == org.id)))
            edges = prerequisite_edges(path, known)
            ops.set_prerequisites(s, org=org, edges=edges)
            levels = path.parent / "concept_standards.csv"
            if levels.exists():
                ops.set_concept_levels(s, org=org, levels=concept_levels(levels, known))
        return len(edges)

    def order(self) -> dict[str, Any]:
        order = self.curriculum()
        rank = {c: k for k, c in enumerate(order)}
        c = len(order)
        before = np.zeros((c, c))
        for hist in self.held.values():
            seen: list[int] = []
            got: set[int] = set()
            for item, _, _ in hist:
                for x in self.concepts_of.get(item, ()):
                    if x in rank and rank[x] not in got:
                        got.add(rank[x])
                        seen.append(rank[x])
            idx = np.array(seen, dtype=np.int64)
            if len(idx) > 1:
                a, b = np.nonzero(np.triu(np.ones((len(idx), len(idx)), dtype=bool), 1))
                np.add.at(before, (idx[a], idx[b]), 1.0)
        both = before + before.T
        share = np.divide(before, both, out=np.zeros_like(before), where=both > 0)
        pairs = np.argwhere((both >= 20) & (share >= 0.7))
        kept = int(sum(a < b for a, b in pairs))  # a met first and placed first
        return {
            "pairs": len(pairs),
            "kept": kept,
            "share": kept / len(pairs) if len(pairs) else float("nan"),
            "first": [self.names.get(x, x) for x in order[:8]],
        }

    def switches(self) -> float:
        rng = np.random.default_rng(1)
        ext = "audit-model-driven"
        self.new_learner(ext)
        at, last, switches = START, None, 0
        for k in range(30):
            out = self.next_items(ext, at)
            if not out["items"]:
                break
            item = out["items"][0]
            c = set(item["concepts"])
            if last is not None and not (c & last):
                switches += 1  # no concept in common with the previous question
            last = c
            correct = int(rng.random() < item["predicted_success"])
            self.answer(ext, item["item_id"], correct, at, k)
            at += GAP
        return switches / 3.0

    def close(self) -> None:
        self.engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--datasets", default="a09,a15,kt1")
    ap.add_argument("--models", default="dkt,psikt,bkt")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "tutor_audit")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--replay", type=int, default=30, help="held-out learners replayed")
    ap.add_argument("--replay-answers", type=int, default=150)
    ap.add_argument("--max-questions", type=int, default=1500)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "tutor_audit.txt")
    ap.add_argument(
        "--render", type=Path, default=None, help="only print the table of a results .json"
    )
    args = ap.parse_args()
    if args.render is not None:
        print(render(json.loads(args.render.read_text()), args))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.0f} s] {msg}", flush=True)

    results = []
    for key in args.datasets.split(","):
        label = DATASETS[key][0]
        if not (args.data / DATASETS[key][2]).exists():
            log(f"skip {label}: {args.data / DATASETS[key][2]} absent")
            continue
        for model in args.models.split(","):
            ds, run = prepare(key, model, args, log)
            audit = Audit(key, model, ds, run, args, log)
            try:
                row = {"dataset": label, "model": model}
                row["a"] = audit.always_correct()
                log(f"{key}/{model} (a) {row['a']}")
                row["b"] = audit.always_wrong()
                log(f"{key}/{model} (b) {row['b']}")
                row["c"] = audit.replay()
                log(f"{key}/{model} (c) {row['c']}")
                row["d"] = audit.order()
                log(f"{key}/{model} (d) {row['d']}")
                row["switches_per_10"] = audit.switches()
                graph = GRAPHS.get(key)
                if graph is not None:
                    n = audit.load_graph(graph)
                    row["d_graph"] = {"edges": n, **audit.order()}
                    log(f"{key}/{model} (d) with {graph.name}: {row['d_graph']}")
                results.append(row)
            finally:
                audit.close()
    text = render(results, args)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str))


def render(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    head = (
        "| dataset | model | (a) questions per concept: median / max | (a) left unmastered | "
        "(a) items of mastered concepts only | (a) the question just answered, again | "
        "(b) first step back or move on (question) | "
        "(b) at-risk reason | (c) violations reported / raw model (checks) | "
        "(c) mastered without own answers | (d) order pairs kept | (e) target |p-0.7| | "
        "(e) distinct items in 5 / distinct predictions within a concept | "
        "(e) mixed items < 0.4 | (e) concept switches per 10 |"
    )
    lines = [
        f"Tutor audit ({datetime.now(UTC):%Y-%m-%d}; held-out learners replayed: "
        f"{args.replay}, at most {args.replay_answers} answers each; models trained at most "
        f"{args.epochs} epochs; service defaults)",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    for r in results:
        a, b, c, d = r["a"], r["b"], r["c"], r["d"]
        reason = b["at_risk_reasons"][0] if b["at_risk_reasons"] else "none"
        lines.append(
            f"| {r['dataset']} | {r['model']} | {a['per_concept_median']:.0f} / "
            f"{a['per_concept_max']} ({a['mastered']} of {a['concepts_with_items']} concepts, "
            f"{a['questions']} questions, {a['stopped']}) | {a['left_unmastered']} | "
            f"{a['recommended_after_mastered']} | {a['repeated_at_once']} | "
            f"{b['first_step_back']} | {reason} | "
            f"{c['violations_reported']} / {c['violations_raw']} ({c['checks']}) | "
            f"{c['mastered_without_answers']} | {d['kept']} of {d['pairs']} "
            f"({d['share']:.0%}) | {c['target_gap']:.3f} | {c['distinct_items']:.1f} / "
            f"{c['same_concept_distinct']:.0%} | {c['mixed_below_0.4']:.0%} | "
            f"{r['switches_per_10']:.1f} |"
        )
    lines.append("")
    for r in results:
        lines.append(
            f"{r['dataset']} / {r['model']}: curriculum from the data starts "
            f"{', '.join(r['d']['first'])}; first step back: "
            f"{r['b']['step_back_reason'] or 'none'}"
        )
        g = r.get("d_graph")
        if g:
            lines.append(
                f"  with the bundled CCSS graph and grades ({g['edges']} edges): {g['kept']} of "
                f"{g['pairs']} held-out order pairs kept ({g['share']:.0%}); starts "
                f"{', '.join(g['first'])}"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
