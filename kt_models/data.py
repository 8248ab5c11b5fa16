"""From a canonical dataset to model-ready sequences: vocabularies, learner splits, batches.

Everything here is vectorised over interactions (numpy fancy indexing); the only Python
loops run over batches or learners' split assignment, never over answers.

Protocol choices (stated in the README):

* **Splits are by learner**, never by interaction. A dataset that carries a published split
  (``split``/``fold`` columns: AKT's train/valid/test files, pyKT's folds) uses it. Otherwise
  learners are split 80/20 into train+valid / test with a fixed seed, and the 80 % into 5
  folds; fold ``k`` is the validation set of run ``k``.
* **No leak through multi-skill rows**: when a dataset was ingested with
  ``--keep-expanded`` (one row per skill of the same answer), consecutive rows of one
  learner with the same item and answer are re-merged here, so a model never sees the answer
  it must predict through a sibling row. An item's concepts are the union the items table
  gives.
* Item and concept indices start at 1; 0 is padding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from data_loaders import Dataset

SECONDS_PER_DAY = 86400.0


@dataclass
class Vocab:
    """Item and concept id vocabularies plus the item -> concepts (Q) matrix."""

    items: list[str]  # index i + 1 <-> items[i]
    concepts: list[str]  # index c + 1 <-> concepts[c]
    item_concepts: np.ndarray  # [n_items + 1, K] concept indices, 0 = none

    def __post_init__(self) -> None:
        self._item_index = {it: i + 1 for i, it in enumerate(self.items)}
        self._concept_index = {c: i + 1 for i, c in enumerate(self.concepts)}

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_concepts(self) -> int:
        return len(self.concepts)

    def item_index(self, item_ids: list[str]) -> np.ndarray:
        """Indices of item ids; an unknown id raises KeyError naming it."""
        out = np.empty(len(item_ids), dtype=np.int64)
        for i, it in enumerate(item_ids):
            try:
                out[i] = self._item_index[it]
            except KeyError:
                raise KeyError(f"unknown item id {it!r}") from None
        return out

    def concept_index(self, concept_id: str) -> int:
        return self._concept_index[concept_id]

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "concepts": self.concepts,
            "item_concepts": self.item_concepts.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vocab:
        return cls(
            items=list(d["items"]),
            concepts=list(d["concepts"]),
            item_concepts=np.asarray(d["item_concepts"], dtype=np.int64),
        )

    def fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha256(json.dumps([self.items, self.concepts]).encode())
        h.update(self.item_concepts.tobytes())
        return h.hexdigest()[:16]


@dataclass
class Sequences:
    """All learners' histories as flat arrays with offsets (CSR layout)."""

    users: np.ndarray  # [n_users] object (str)
    offsets: np.ndarray  # [n_users + 1]
    item: np.ndarray  # [N] int64, 1-based
    correct: np.ndarray  # [N] int8
    time: np.ndarray  # [N] float64 seconds since epoch, nan = unknown
    split: np.ndarray  # [n_users] object: 'train' / 'valid' / 'test' / None
    fold: np.ndarray  # [n_users] float (nan = none)
    has_time: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_interactions(self) -> int:
        return len(self.item)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def subset(self, user_idx: np.ndarray) -> Sequences:
        """The learners ``user_idx`` (in that order)."""
        user_idx = np.asarray(user_idx, dtype=np.int64)
        starts = self.offsets[:-1][user_idx]
        return self.pieces(user_idx, starts, self.lengths()[user_idx], dict(self.meta))

    def pieces(
        self, owner: np.ndarray, starts: np.ndarray, lens: np.ndarray, meta: dict[str, Any]
    ) -> Sequences:
        """New learners' rows, one per piece: rows ``starts[i] .. starts[i] + lens[i]`` of
        learner ``owner[i]``, who lends the piece its id, split and fold."""
        rows = _ranges(starts, lens)
        return Sequences(
            users=self.users[owner],
            offsets=np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
            item=self.item[rows],
            correct=self.correct[rows],
            time=self.time[rows],
            split=self.split[owner],
            fold=self.fold[owner],
            has_time=self.has_time,
            meta=meta,
        )


def windows(seqs: Sequences, users: np.ndarray, max_len: int | None) -> Sequences:
    """The learners ``users`` with every history cut into consecutive windows of ``max_len``.

    Used for training only (as pyKT does): long histories become several rows of a batch,
    so a CPU runs them in parallel instead of thousands of sequential LSTM steps. Each
    window starts from the model's initial state. Evaluation always uses whole histories.
    """
    sub = seqs.subset(np.asarray(users, dtype=np.int64))
    if not max_len:
        return sub
    lens = sub.lengths()
    n_win = np.maximum(1, -(-lens // max_len))
    owner = np.repeat(np.arange(sub.n_users), n_win)
    k = np.arange(len(owner)) - np.repeat(np.cumsum(n_win) - n_win, n_win)
    starts = sub.offsets[:-1][owner] + k * max_len
    wl = np.minimum(max_len, sub.offsets[1:][owner] - starts)
    return sub.pieces(owner, starts, wl, {**sub.meta, "windows_of": max_len})


def _ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + l) for every (s, l), vectorised."""
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    rep_starts = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
    return np.arange(total, dtype=np.int64) + rep_starts


def build_vocab(ds: Dataset) -> Vocab:
    """Vocabularies from the dataset's items table (and concepts table)."""
    items_t = ds.items()
    items = [str(x) for x in items_t.column("item_id").to_pylist()]
    concepts_t = ds.concepts()
    concepts = [str(x) for x in concepts_t.column("concept_id").to_pylist()]
    cidx = {c: i + 1 for i, c in enumerate(concepts)}
    lists = items_t.column("concept_ids").to_pylist()
    k = max([len(x or []) for x in lists] + [1])
    q = np.zeros((len(items) + 1, k), dtype=np.int64)
    for i, lst in enumerate(lists):
        for j, c in enumerate(lst or []):
            q[i + 1, j] = cidx[c]
    return Vocab(items=items, concepts=concepts, item_concepts=q)


def load_sequences(path: Path | str, vocab: Vocab | None = None) -> tuple[Sequences, Vocab]:
    """Read a dataset into :class:`Sequences` (and its :class:`Vocab` unless one is given).

    With a given vocabulary (evaluating a trained model on another dataset), interactions on
    items the vocabulary lacks are dropped and counted in ``meta['unknown_items']``.
    """
    ds = Dataset.open(path)
    vocab = vocab or build_vocab(ds)
    cols = ["user_id", "item_id", "correct", "timestamp", "split", "fold", "concept_ids"]
    tables = list(ds.iter_partitions(cols))
    t = pa.concat_tables(tables) if tables else None
    if t is None or t.num_rows == 0:
        raise ValueError(f"{path}: the dataset has no interactions")
    # item ids -> indices, vectorised through a dictionary encoding
    enc = pc.dictionary_encode(t.column("item_id")).combine_chunks()
    lookup = vocab._item_index
    dict_idx = np.array([lookup.get(s, 0) for s in enc.dictionary.to_pylist()], dtype=np.int64)
    item = dict_idx[enc.indices.to_numpy(zero_copy_only=False)]
    users_col = t.column("user_id").combine_chunks()
    correct = t.column("correct").to_numpy().astype(np.int8)
    ts = t.column("timestamp")
    time = pc.cast(pc.cast(ts, pa.int64()), pa.float64()).to_numpy(zero_copy_only=False) / 1000.0
    time = np.where(np.isnan(time), np.nan, time)
    has_time = ts.null_count < len(ts)
    unknown = item == 0
    meta: dict[str, Any] = {
        "dataset": str(path),
        "manifest_counts": ds.manifest.get("counts", {}),
        "unknown_items": int(unknown.sum()),
    }
    expanded = ds.manifest.get("notes", {}).get("multi_skill") == "expanded"
    keep = ~unknown
    if expanded:
        # re-merge per-skill copies of one answer: same learner, item and answer on consecutive
        # rows (the writer sorted rows by learner then seq)
        u = pc.dictionary_encode(users_col).indices.to_numpy(zero_copy_only=False)
        same = np.zeros(len(item), dtype=bool)
        same[1:] = (u[1:] == u[:-1]) & (item[1:] == item[:-1]) & (correct[1:] == correct[:-1])
        keep &= ~same
        meta["remerged_expanded_rows"] = int(same.sum())
    if not keep.all():
        mask = pa.array(keep)
        users_col = users_col.filter(mask)
        item, correct, time = item[keep], correct[keep], time[keep]
        t = t.filter(mask)
    uenc = pc.dictionary_encode(users_col)
    codes = uenc.indices.to_numpy(zero_copy_only=False)
    change = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    offsets = np.r_[change, len(codes)].astype(np.int64)
    users = np.array(uenc.dictionary.to_pylist(), dtype=object)[codes[change]]
    split_col = t.column("split").combine_chunks()
    fold_col = t.column("fold").combine_chunks()
    split = np.array(split_col.take(pa.array(change)).to_pylist(), dtype=object)
    fold = np.array(
        [np.nan if f is None else float(f) for f in fold_col.take(pa.array(change)).to_pylist()]
    )
    seqs = Sequences(
        users=users,
        offsets=offsets,
        item=item,
        correct=correct,
        time=time,
        split=split,
        fold=fold,
        has_time=bool(has_time),
        meta=meta,
    )
    return seqs, vocab


@dataclass
class Split:
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    protocol: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "train": int(len(self.train)),
            "valid": int(len(self.valid)),
            "test": int(len(self.test)),
        }


def split_learners(
    seqs: Sequences, *, seed: int = 42, fold: int = 0, n_folds: int = 5, test_frac: float = 0.2
) -> Split:
    """Learner indices for train / valid / test (see the module docstring)."""
    n = seqs.n_users
    split = seqs.split
    has_split = np.array([s is not None for s in split])
    rng = np.random.default_rng(seed)
    if has_split.any():
        test = np.flatnonzero(split == "test")
        valid = np.flatnonzero(split == "valid")
        train_pool = np.flatnonzero((split == "train") | ~has_split)
        if len(valid):
            return Split(train_pool, valid, test, "published train/valid/test split")
        folds = seqs.fold[train_pool]
        if not np.isnan(folds).all() and len(np.unique(folds[~np.isnan(folds)])) > 1:
            v = train_pool[folds == fold]
            tr = train_pool[folds != fold]
            return Split(tr, v, test, f"published folds: fold {fold} validates, the rest train")
        perm = train_pool[np.argsort(_stable_keys(seqs.users[train_pool], seed))]
        parts = np.array_split(perm, n_folds)
        v = parts[fold % n_folds]
        tr = np.concatenate([p for i, p in enumerate(parts) if i != fold % n_folds])
        return Split(
            np.sort(tr),
            np.sort(v),
            test,
            f"published test split; {n_folds}-fold CV over the train learners (fold {fold})",
        )
    del rng
    perm = np.argsort(_stable_keys(seqs.users, seed))
    n_test = int(round(n * test_frac))
    test = np.sort(perm[:n_test])
    rest = perm[n_test:]
    parts = np.array_split(rest, n_folds)
    v = parts[fold % n_folds]
    tr = np.concatenate([p for i, p in enumerate(parts) if i != fold % n_folds])
    return Split(
        np.sort(tr),
        np.sort(v),
        test,
        f"{int((1 - test_frac) * 100)}/{int(test_frac * 100)} learners (seed {seed}), "
        f"{n_folds}-fold CV on the {int((1 - test_frac) * 100)} % (fold {fold})",
    )


def _stable_keys(users: np.ndarray, seed: int) -> np.ndarray:
    """A seeded pseudo-random key per learner id that does not depend on the input order."""
    import zlib

    return np.array([zlib.crc32(f"{seed}:{u}".encode()) for u in users], dtype=np.int64)


@dataclass
class Batch:
    """A padded batch: ``item``/``correct``/``time``/``mask`` are [B, T]."""

    item: torch.Tensor  # long, 0 = padding
    correct: torch.Tensor  # float 0/1
    time: torch.Tensor  # float32 days since the learner's first answer (or step index)
    mask: torch.Tensor  # bool
    users: np.ndarray  # learner indices in the Sequences the batch came from

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.item.to(device, non_blocking=True),
            self.correct.to(device, non_blocking=True),
            self.time.to(device, non_blocking=True),
            self.mask.to(device, non_blocking=True),
            self.users,
        )

    @property
    def n_tokens(self) -> int:
        return int(self.mask.sum())


def make_batch(seqs: Sequences, users: np.ndarray, max_len: int | None = None) -> Batch:
    """Pad the histories of ``users`` into one batch (vectorised gather)."""
    users = np.asarray(users, dtype=np.int64)
    lens = seqs.lengths()[users]
    if max_len is not None:
        lens = np.minimum(lens, max_len)
    t_max = max(int(lens.max()) if len(lens) else 1, 1)
    starts = seqs.offsets[:-1][users]
    pos = np.arange(t_max)
    mask = pos[None, :] < lens[:, None]
    idx = np.where(mask, starts[:, None] + pos[None, :], 0)
    item = np.where(mask, seqs.item[idx], 0)
    correct = np.where(mask, seqs.correct[idx], 0).astype(np.float32)
    if seqs.has_time:
        raw = seqs.time[idx]
        first = raw[:, :1]
        days = (raw - first) / SECONDS_PER_DAY
        # a missing clock inside a timed dataset: carry the previous time forward
        days = np.where(np.isnan(days), 0.0, days)
        days = np.maximum.accumulate(days, axis=1)
    else:
        days = np.broadcast_to(pos[None, :].astype(np.float64), mask.shape).copy()
    days = np.where(mask, days, 0.0).astype(np.float32)
    return Batch(
        item=torch.from_numpy(item),
        correct=torch.from_numpy(correct),
        time=torch.from_numpy(days),
        mask=torch.from_numpy(mask),
        users=users,
    )


def plan_batches(
    seqs: Sequences,
    users: np.ndarray,
    *,
    batch_tokens: int = 16384,
    max_batch: int = 512,
    shuffle: bool = False,
    seed: int = 0,
    max_len: int | None = None,
) -> list[np.ndarray]:
    """Length-bucketed batches of ``users`` (each an array of learner indices): learners
    sorted by length share a batch, so padding is small.

    A batch holds about ``batch_tokens`` padded positions (at most ``max_batch`` learners).
    With ``shuffle`` the order of batches (not their content) is shuffled per ``seed``.
    """
    users = np.asarray(users, dtype=np.int64)
    if len(users) == 0:
        return []
    lens = seqs.lengths()[users]
    if max_len is not None:
        lens = np.minimum(lens, max_len)
    order = users[np.argsort(-lens, kind="stable")]
    lens_sorted = np.sort(lens)[::-1]
    groups: list[np.ndarray] = []
    i = 0
    n = len(order)
    while i < n:
        t = max(int(lens_sorted[i]), 1)
        size = max(1, min(max_batch, batch_tokens // t))
        groups.append(order[i : i + size])
        i += size
    if shuffle:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(groups))
        groups = [groups[j] for j in perm]
    return groups
