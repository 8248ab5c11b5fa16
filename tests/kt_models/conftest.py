"""Small generated datasets for model tests: learners with a skill per concept.

Each concept has a latent skill per learner that grows with practice; items have a
difficulty; answers are drawn from a logistic of skill - difficulty. Timestamps advance by
minutes within a session and days between sessions, so forgetting models see real gaps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from data_loaders import DatasetWriter


def write_skill_dataset(
    out: Path,
    *,
    learners: int = 60,
    concepts: int = 4,
    items_per_concept: int = 5,
    length: tuple[int, int] = (20, 40),
    seed: int = 0,
    multi_concept: bool = True,
    deterministic: bool = False,
) -> Path:
    rng = np.random.default_rng(seed)
    n_items = concepts * items_per_concept
    item_concept = np.repeat(np.arange(concepts), items_per_concept)
    difficulty = rng.normal(0, 1, n_items)  # = item_difficulties(seed, n_items)
    with DatasetWriter(out, format_name="test-sim") as w:
        w.register_file("generated")
        users, items, concept_lists, correct, ts, lines = [], [], [], [], [], []
        line = 0
        for u in range(learners):
            ability = rng.normal(0, 1, concepts)
            practice = np.zeros(concepts)
            t = 1_700_000_000_000 + int(rng.integers(0, 10**9))
            for _ in range(int(rng.integers(*length))):
                i = int(rng.integers(0, n_items))
                c = item_concept[i]
                skill = ability[c] + 0.3 * practice[c]
                p = 1 / (1 + np.exp(-(skill - difficulty[i])))
                y = int(p > 0.5) if deterministic else int(rng.random() < p)
                practice[c] += 1
                cl = [f"c{c}"]
                if multi_concept and i % items_per_concept == 0:
                    cl.append(f"c{(c + 1) % concepts}")
                users.append(f"u{u}")
                items.append(f"i{i}")
                concept_lists.append(cl)
                correct.append(y)
                t += int(rng.choice([60_000, 120_000, 86_400_000 * 2]))
                ts.append(t)
                line += 1
                lines.append(line)
        n = len(users)
        w.add_interactions(
            pa.table(
                {
                    "user_id": pa.array(users),
                    "item_id": pa.array(items),
                    "concept_ids": pa.array(concept_lists, pa.list_(pa.string())),
                    "correct": pa.array(np.array(correct, dtype=np.int8)),
                    "timestamp": pa.array(ts, pa.int64()),
                    "_file": pa.array(np.zeros(n, dtype=np.int32)),
                    "_line": pa.array(np.array(lines, dtype=np.int64)),
                    "_order": pa.array(np.array(lines, dtype=np.int64)),
                }
            )
        )
    return out


def item_difficulties(seed: int, n_items: int) -> np.ndarray:
    """The true difficulty of items ``i0 .. i{n-1}`` of :func:`write_skill_dataset`."""
    return np.random.default_rng(seed).normal(0, 1, n_items)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Small models run faster single-threaded, and the CI machine has two shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def skill_dataset(tmp_path_factory) -> Path:
    return write_skill_dataset(tmp_path_factory.mktemp("kt") / "skill", learners=120)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return write_skill_dataset(
        tmp_path_factory.mktemp("kt") / "tiny", learners=8, length=(8, 14), deterministic=True
    )
