"""Slow work, and the request path that runs on the event loop and must not wait for it.

With ``Settings.inline_hot_routes`` on (PostgreSQL only; off by default) the hot routes (an
answer, next-items, mastery) run their synchronous body on the event loop itself
(``tutor.api.deps.run_route``): handing a request to a worker thread and back cost 0.6-1 ms
of CPU a request on a 2-core machine, a fifth to a quarter of the whole request. A body run
so blocks its worker while it runs, so it must stay short: every step that can take long
(building a catalogue, loading a model or its references, designing the curriculum,
replaying a learner's history) calls :func:`may_block` first, which raises :class:`MustHop`
on the event loop. The route's transaction is then rolled back (the same rollback and rerun
as after a lost write race, ``commit_with_retries``) and the whole body runs again in a
worker thread, where it may take as long as it needs. Nothing is committed before that
point: the answer path applies its writes at the end (a learner or item it auto-created
earlier in the transaction goes with the rollback and is created again).

Background work (the analytics warm-up, :class:`tutor.analytics.Warmer`) runs under
:func:`stoppable`: :func:`checkpoint`, called by :func:`may_block` and between the batches
or steps of a replay, raises :class:`Stopped` once its stop is asked. A worker that stops
then waits for one batch, not for a whole pass (a process that ends while a thread is
inside PyTorch aborts: "terminate called without an active exception").
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_INLINE: ContextVar[bool] = ContextVar("tutor_inline", default=False)
_STOP: ContextVar[threading.Event | None] = ContextVar("tutor_stop", default=None)


class MustHop(Exception):  # noqa: N818 - a signal, not an error
    """Raised by :func:`may_block` on the event loop: run the body in a worker thread."""


def may_block(what: str) -> None:
    """Say that ``what`` may take long: on the event loop (:func:`inline`) this raises
    :class:`MustHop`; in work run under :func:`stoppable` whose stop is asked it raises
    :class:`Stopped`; anywhere else it does nothing."""
    if _INLINE.get():
        raise MustHop(what)
    checkpoint()


@contextmanager
def inline() -> Iterator[None]:
    """The block runs on the event loop: :func:`may_block` raises within it."""
    token = _INLINE.set(True)
    try:
        yield
    finally:
        _INLINE.reset(token)


class Stopped(Exception):  # noqa: N818 - a signal, not an error
    """Raised by :func:`checkpoint` in work run under :func:`stoppable` once its stop is
    set: the work ends there (a read-only pass; nothing of it is kept half-done)."""


def checkpoint() -> None:
    """A point where work run under :func:`stoppable` ends (:class:`Stopped`) once its
    stop is set; elsewhere (requests) it does nothing. Cheap: a context variable read."""
    stop = _STOP.get()
    if stop is not None and stop.is_set():
        raise Stopped


@contextmanager
def stoppable(stop: threading.Event) -> Iterator[None]:
    """The block's :func:`checkpoint` calls (its thread's) raise :class:`Stopped` once
    ``stop`` is set."""
    token = _STOP.set(stop)
    try:
        yield
    finally:
        _STOP.reset(token)
