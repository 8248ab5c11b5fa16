"""Which concepts did each policy make the learners practise? (a diagnostic of a
``tutor policy-eval`` run kept with ``--workdir``)

Reads the service database of each setting (``WORKDIR/<setting>/service.db``: every answer of
the evaluation was posted there through ``record_answers``), rebuilds the setting's world to
know each item's concept and which concepts have prerequisites, and prints per policy: the
share of questions on concepts *without* prerequisites (the root concepts of the graph), the
mean number of distinct concepts a learner practised, and the share of learners who never saw
a concept with prerequisites. Tuning cohorts (seed 1000 and up) are left out.

Usage: python benchmarks/policy_eval_coverage.py WORKDIR [--settings a,b] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import sqlite3
from collections import defaultdict
from pathlib import Path

from tutor.experiments.policy_setup import EvalConfig
from tutor.experiments.simulate import load_setting, make_world


def coverage(workdir: Path, setting: str, train_learners: int = EvalConfig.train_learners) -> str:
    """The markdown table of one setting (see the module docstring)."""
    db = workdir / setting / "service.db"
    if not db.is_file():
        raise SystemExit(f"{db}: no service database (run tutor policy-eval --workdir)")
    world = make_world(load_setting(setting), learners=train_learners, seed=0)
    roots = {c for c in range(world.n_concepts) if not world.prereq_matrix[c].any()}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = con.execute(
        "SELECT l.external_id, i.external_id FROM interactions x "
        "JOIN learners l ON l.id = x.learner_id JOIN items i ON i.id = x.item_id"
    ).fetchall()
    con.close()
    seen: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    on_root: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for learner, item in rows:
        policy, seed, _ = learner.split("|")
        if int(seed[1:]) >= 1000:
            continue
        c = int(world.item_concepts[int(item[1:]) - 1, 0])
        seen[policy][learner].add(c)
        total[policy] += 1
        on_root[policy] += c in roots
    lines = [
        f"### `{setting}`: root concepts {sorted(roots)} of {world.n_concepts}",
        "",
        "| policy | questions on root concepts | distinct concepts per learner | "
        "learners who never left the roots |",
        "|---|---:|---:|---:|",
    ]
    for policy in sorted(seen, key=lambda p: on_root[p] / total[p]):
        per = list(seen[policy].values())
        distinct = sum(len(s) for s in per) / len(per)
        stuck = sum(s <= roots for s in per) / len(per)
        lines.append(
            f"| {policy} | {on_root[policy] / total[policy]:.2f} | {distinct:.1f} | {stuck:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--settings", default="")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    names = [s for s in args.settings.split(",") if s] or sorted(
        p.name for p in args.workdir.iterdir() if (p / "service.db").is_file()
    )
    text = "# Concepts practised under each policy\n\n" + "\n".join(
        coverage(args.workdir, n) for n in names
    )
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
