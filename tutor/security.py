"""API keys and roles.

A key is ``kt_<prefix>_<secret>``: the prefix (public, unique) finds the row, the whole key is
checked against an HMAC-SHA256 hash (keyed by the settings' pepper) in constant time. Keys are
shown once, when created, and never stored.

Roles:

* ``admin``: everything in its organisation;
* ``teacher``: reads the learners of its groups (and their curricula, analytics);
* ``learner``: reads its own data and posts its own answers;
* ``ingest``: posts answers (and xAPI statements) only.

What a key may not see answers 404, never 403, so that ids of other organisations or learners
cannot be probed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from .db import ApiKey, Group, Learner, Organisation

ROLES = ("admin", "teacher", "learner", "ingest")


def hash_key(key: str, pepper: str) -> str:
    return hmac.new(pepper.encode(), key.encode(), hashlib.sha256).hexdigest()


def generate_key() -> tuple[str, str]:
    """A new key and its public prefix."""
    prefix = secrets.token_hex(6)
    return f"kt_{prefix}_{secrets.token_urlsafe(32)}", prefix


def create_key(
    session: Session,
    *,
    org: Organisation,
    role: str,
    pepper: str,
    learner: Learner | None = None,
    groups: list[Group] | None = None,
    name: str = "",
) -> tuple[str, ApiKey]:
    """Create a key; returns the key (show it once) and its row."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if role == "learner" and learner is None:
        raise ValueError("a learner key needs the learner it belongs to (--learner)")
    if role == "teacher" and not groups:
        raise ValueError("a teacher key needs at least one group (--group)")
    for obj in [learner, *(groups or [])]:
        if obj is not None and obj.org_id != org.id:
            raise ValueError(f"{obj.external_id!r} does not belong to organisation {org.slug!r}")
    key, prefix = generate_key()
    row = ApiKey(
        org_id=org.id,
        prefix=prefix,
        key_hash=hash_key(key, pepper),
        role=role,
        learner_id=learner.id if learner is not None and role == "learner" else None,
        name=name,
    )
    row.groups = list(groups or []) if role == "teacher" else []
    session.add(row)
    session.flush()
    return key, row


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's organisation, role and scope."""

    key_id: int
    org_id: int
    role: str
    learner_id: int | None = None
    group_ids: frozenset[int] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def authenticate(
    session: Session, key: str, pepper: str, *, key_hash: str | None = None
) -> Principal | None:
    """The key's principal, or None for an unknown, malformed or revoked key (``key_hash``:
    ``hash_key(key, pepper)`` when the caller has it already)."""
    parts = key.split("_")
    if len(parts) < 3 or parts[0] != "kt":
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1]))
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.key_hash, key_hash or hash_key(key, pepper)):
        return None
    return Principal(
        key_id=row.id,
        org_id=row.org_id,
        role=row.role,
        learner_id=row.learner_id,
        group_ids=frozenset(g.id for g in row.groups),
    )


class AuthCache:
    """Principals of recently authenticated keys, per process, for ``ttl`` seconds.

    Keyed by the key's HMAC hash (the key itself is never kept). Only successful
    authentications are remembered: an unknown key is looked up every time, so a new key
    works at once. A key revoked elsewhere (the CLI, another worker process) keeps working
    here at most ``ttl`` seconds; :meth:`clear` forgets every key at once (the API calls it
    after deleting a learner or a group, which revokes or narrows keys). ``ttl`` 0 turns the
    cache off.
    """

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = float(ttl)
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()
        self._generation = 0

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def get(self, key_hash: str) -> Principal | None:
        if not self.enabled:
            return None
        hit = self._entries.get(key_hash)
        if hit is None:
            return None
        expires, principal = hit
        if time.monotonic() >= expires:
            with self._lock:
                if self._entries.get(key_hash) is hit:
                    del self._entries[key_hash]
            return None
        return principal

    def generation(self) -> int:
        """Changes at every :meth:`clear`: a lookup that began before a clear must not be
        stored after it (it may have read the key before its revocation)."""
        return self._generation

    def put(self, key_hash: str, principal: Principal, generation: int) -> None:
        if not self.enabled:
            return
        with self._lock:
            if generation != self._generation:
                return
            if len(self._entries) >= self.max_entries:
                now = time.monotonic()
                self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()
            self._entries[key_hash] = (time.monotonic() + self.ttl, principal)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
