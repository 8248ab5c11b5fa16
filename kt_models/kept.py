"""Values computed from a learner's serving state, kept by the state's content.

A service decodes a learner's state afresh for every request, so the same state arrives as
new tensor objects: what was computed from it (AKT's encoded history, a whole catalogue's
predictions) is found again by the tensors' content, not their identity."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch


class KeptByContent:
    """Values by the content of a few tensors (and any extra key parts), the least recently
    used dropped beyond ``size``, all made under one ``tag`` (e.g. a version of the weights:
    a value put under another tag empties it). Thread-safe: a service's request threads
    share a model. A hit is checked against a copy of the tensors, not only their digest."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.tag: Any = None
        self._entries: OrderedDict[tuple, tuple[list[torch.Tensor], Any]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(tensors: Sequence[torch.Tensor], *extra: Any) -> tuple:
        digest = hashlib.blake2b(digest_size=16)
        for t in tensors:
            digest.update(t.detach().contiguous().cpu().numpy().tobytes())
        shapes = tuple((tuple(t.shape), t.dtype) for t in tensors)
        return (shapes, extra, digest.digest())

    def get(self, key: tuple, tensors: Sequence[torch.Tensor], tag: Any = None) -> Any | None:
        with self._lock:
            hit = self._entries.get(key) if tag == self.tag else None
            if hit is None or not all(
                torch.equal(a, b) for a, b in zip(hit[0], tensors, strict=True)
            ):
                return None
            self._entries.move_to_end(key)
            return hit[1]

    def put(self, key: tuple, tensors: Sequence[torch.Tensor], value: Any, tag: Any = None) -> None:
        with self._lock:
            if tag != self.tag:
                self._entries.clear()
                self.tag = tag
            self._entries[key] = ([t.detach().clone() for t in tensors], value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.tag = None

    def __len__(self) -> int:
        return len(self._entries)
