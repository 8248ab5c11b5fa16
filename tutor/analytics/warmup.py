"""Filling the analytics caches ahead of the first dashboard request: :func:`warm_up` (one
pass over every organisation's largest groups) and :class:`Warmer` (a daemon thread that runs
it at start-up and after a model is activated)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import torch
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ..blocking import Stopped, stoppable
from ..db import Group, GroupMembership, Organisation
from ..service import NotFound
from .cache import _GROUP, GROUP_RESULTS_PER_GROUP
from .curves import learning_curves
from .risk import at_risk
from .teaching import suggested_groups

log = logging.getLogger(__name__)


def warm_up(
    make_session: sessionmaker[Session],
    *,
    max_groups: int,
    settings: Any = None,
    stop: threading.Event | None = None,
) -> dict[str, float]:
    """Fill the analytics caches ahead of the first dashboard request: for every organisation
    with an active model, its ``max_groups`` largest groups go through
    :func:`learning_curves` (every member's answers read and run through the model once:
    the per-learner prediction cache behind the curves, item statistics and timelines) and
    :func:`at_risk` (the states some answers back, the members' statuses), then the
    suggested groups (which import the clustering library once). Afterwards a request replays
    only the learners who answered since. Read-only: one short read transaction per group.
    When ``stop`` is set it stops within a group too, at the next batch or step of a replay
    (:func:`tutor.blocking.checkpoint`): what the group cached so far stays valid, nothing
    half-computed is cached. Returns ``{"groups", "learners", "seconds"}``."""
    t0 = time.perf_counter()
    done = learners = 0
    # room for every warmed group's results (statistics, statuses, snapshots back, groups)
    # and as many again for the requests
    _GROUP.size = max(_GROUP.size, GROUP_RESULTS_PER_GROUP * 2 * max_groups)
    with make_session() as session:
        orgs = session.execute(
            select(Organisation.id).where(Organisation.active_model_id.is_not(None))
        ).scalars()
        org_ids = list(orgs)
    for org_id in org_ids:
        if stop is not None and stop.is_set():
            break
        with make_session() as session:
            size = func.count(GroupMembership.learner_id)
            groups = session.execute(
                select(Group.id)
                .join(GroupMembership, GroupMembership.group_id == Group.id)
                .where(Group.org_id == org_id)
                .group_by(Group.id)
                .order_by(size.desc(), Group.id)
                .limit(max_groups)
            ).scalars()
            group_ids = list(groups)
        for group_id in group_ids:
            if stop is not None and stop.is_set():
                break
            with make_session() as session:
                org = session.get(Organisation, org_id)
                group = session.get(Group, group_id)
                if org is None or group is None or org.active_model_id is None:
                    continue
                try:
                    with stoppable(stop or threading.Event()):
                        out = learning_curves(session, org=org, group=group)
                        at_risk(session, org=org, group=group, settings=settings, limit=1)
                        # the statuses (cached by at_risk) and the clustering library's
                        # import
                        suggested_groups(session, org=org, group=group, settings=settings)
                except NotFound:
                    continue  # the model went away meanwhile
                except Stopped:  # within the group, at a replay's next batch or step
                    break
                done += 1
                learners += out["group"]["learners"]
    return {"groups": done, "learners": learners, "seconds": time.perf_counter() - t0}


class Warmer:
    """A daemon thread that runs :func:`warm_up` when kicked: at start-up and after a model
    is activated (``kick``). At most one pass runs at a time; a kick during a pass queues one
    more. ``stop`` ends the thread at the pass's next batch or step (``warm_up``)."""

    def __init__(
        self, make_session: sessionmaker[Session], *, max_groups: int, settings: Any = None
    ) -> None:
        self.make_session = make_session
        self.max_groups = max_groups
        self.settings = settings
        self.passes = 0
        self.last: dict[str, float] | None = None
        self.idle = threading.Event()
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="tutor-analytics-warm-up", daemon=True
            )
            self._thread.start()
        self.kick()

    def kick(self) -> None:
        self.idle.clear()
        self._kick.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():  # a batch longer than the timeout
                log.warning("the analytics warm-up did not stop within %.0f s", timeout)
            self._thread = None

    def _run(self) -> None:
        torch.set_num_threads(1)
        while True:
            self._kick.wait()
            if self._stop.is_set():
                break
            self._kick.clear()
            try:
                self.last = warm_up(
                    self.make_session,
                    max_groups=self.max_groups,
                    settings=self.settings,
                    stop=self._stop,
                )
                log.info(
                    "analytics caches warmed: %d groups, %d learners in %.1f s",
                    self.last["groups"],
                    self.last["learners"],
                    self.last["seconds"],
                )
            except Exception:  # a failed warm-up only costs the first request its speed
                log.exception("analytics warm-up failed")
            self.passes += 1
            if not self._kick.is_set():
                self.idle.set()
