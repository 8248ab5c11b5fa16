"""Running the API: uvicorn, and on Linux with several workers, a supervisor that hands each
connection to the worker with the fewest open ones.

uvicorn's own ``--workers`` shares one listening socket between its worker processes, and
whichever worker's event loop calls ``accept`` first takes the connection. Clients that keep
their connections (a proxy, a load balancer, a load generator) are spread by luck: measured
with ``wrk`` (2 workers, 16 connections, ``benchmarks/serve_load.py``), one run in seven put
every connection on one worker, which then served 352 requests a second while the other
idled (the same server otherwise served 642-692). Giving each worker a listening socket of
its own in one ``SO_REUSEPORT`` group (the kernel picks a worker by a hash of the client's
address) spreads them by chance instead: 32 connections over 2 workers came out anywhere
from 13/19 to 19/13, and the worker with more connections answered each of them later (one
run at 18/14: its requests' p99 81 ms in process, the other worker's 46 ms).

With ``workers > 1`` on Linux, :func:`serve` therefore runs a supervisor that holds the one
listening socket, accepts each connection and passes it (``SCM_RIGHTS`` over a Unix socket
pair per worker) to the ready worker with the fewest open connections; a worker tells the
supervisor on the same pair when one of its connections closes. Keep-alive connections stay
with their worker, so N connections over W workers come out as even as N allows. The hop
costs each new connection (not each request) about 80 µs of the supervisor's CPU and 60 µs
of the worker's (measured with a new connection per ``/health``): a proxy in front should
keep its connections to the workers.

The supervisor:

- ``SIGINT``/``SIGTERM`` stop every worker gracefully (uvicorn's shutdown: open requests
  finish); a second signal stops them at once. The workers also stop when the supervisor
  ends however it ends (they ask Linux for a signal when their parent ends).
- The socket listens only once a worker has started its application, so no connection waits
  on workers still loading their models; a connection goes only to a worker that said it
  serves.
- A worker that stops on its own is started again, after a pause when it keeps stopping
  soon after its start (1 s, doubling up to 30 s). The connections it held end with it;
  while no worker serves, new connections wait in the socket's queue.
- A port held by another program stops :func:`serve` with :class:`WorkerFailed` before any
  worker starts, and so does another ``tutor serve`` on the port (even one started a moment
  before: :func:`port_lock`), and a first worker that stops before it serves (the database
  out of reach, say).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from typing import Any

APP = "tutor.api.app:create_app"
#: seconds a worker is given to finish its open requests when stopped, then it is killed
STOP_TIMEOUT = 30.0


class WorkerFailed(RuntimeError):
    """``tutor serve`` cannot serve: its address is taken (by another program or another
    ``tutor serve``) or a first worker stopped before it served (see its own log lines)."""


def supervisor_supported() -> bool:
    """Whether :func:`serve` supervises several workers itself (Linux: passing sockets between
    processes and a signal to the workers when their parent ends)."""
    return sys.platform.startswith("linux") and hasattr(socket, "send_fds")


def listening_socket(host: str, port: int, *, listen: bool = True) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``OSError`` if the address is taken or the name
    unknown), listening unless ``listen`` is false: the supervisor listens only once a worker
    serves, so that no connection waits on workers that cannot serve yet."""
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is free
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(addr)
        if listen:
            sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def port_lock(host: str, port: int) -> Iterator[None]:
    """Held by a supervisor for as long as it runs: one ``tutor serve`` per port and user.

    The supervisor binds its address at once but listens only once a worker serves, and
    until then the system lets another socket with ``SO_REUSEADDR`` bind the same address:
    two servers started within those seconds would both start their workers, and the second
    would fail only when it tried to listen. An exclusive ``flock`` on a file named for the
    port and the user refuses the second at once (the system releases it when the process
    ends, however it ends). Where the lock file cannot be opened (a read-only temporary
    directory), the bind and the listen alone decide."""
    import fcntl
    import tempfile

    path = os.path.join(tempfile.gettempdir(), f"tutor-serve-{os.getuid()}-{port}.lock")
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        _say(f"no lock file for port {port} ({exc}); relying on the bind")
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkerFailed(
                f"cannot listen on {host}:{port}: another tutor serve of this user is "
                f"starting or serving on port {port} (it holds {path})"
            ) from None
        yield
    finally:
        os.close(fd)


def serve(*, host: str, port: int, workers: int = 1, **uvicorn_options: Any) -> None:
    """Serve the API on ``host:port`` (the settings come from the environment).
    ``uvicorn_options``: more of ``uvicorn.Config``'s (``loop``, ``access_log``, ...)."""
    import uvicorn

    options = {"factory": True, **uvicorn_options}
    if workers <= 1 or not supervisor_supported():
        uvicorn.run(APP, host=host, port=port, workers=workers, **options)
        return
    _Supervisor(host, port, workers, options).run()


def signal_ready(ready: Connection) -> None:
    """Tell the supervisor this worker serves: one byte on the worker's end of its readiness
    pipe. A pipe, not a shared event: a worker killed at any instant (the kernel's OOM
    killer during start-up, say) leaves nothing held that the supervisor could wait on. A
    supervisor already gone (its end closed) is no error here: the parent-death signal stops
    this worker."""
    with contextlib.suppress(BrokenPipeError):
        ready.send_bytes(b"1")


def _worker(
    host: str,
    port: int,
    options: dict[str, Any],
    ready: Connection,
    supervisor: int,
    channel: socket.socket,
) -> None:
    """One worker process: uvicorn serving the connections the supervisor passes over
    ``channel`` (:func:`receive_connections`) until stopped (or until the ``supervisor``
    process is gone: a worker must not serve on unsupervised)."""
    import uvicorn

    _stop_with_parent(supervisor)
    served = False

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            nonlocal served
            await super().startup([])  # the application's start-up, no socket of its own
            if self.started:  # the application's start-up succeeded
                receive_connections(self, channel)
                signal_ready(ready)
                served = True

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            with contextlib.suppress(Exception):  # no more connections from now on
                asyncio.get_running_loop().remove_reader(channel.fileno())
            await super().shutdown(sockets)

    server = _Server(uvicorn.Config(APP, host=host, port=port, **options))
    # Ctrl-C reaches the workers too: uvicorn stops gracefully, then re-raises it
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[])
    if not served:
        sys.exit(3)


def receive_connections(server: Any, channel: socket.socket) -> None:
    """Serve each connection the supervisor passes over ``channel`` with uvicorn ``server``'s
    HTTP protocol (as its own listening socket would), and tell the supervisor (one byte on
    ``channel``) when one of them closes. Runs on the server's event loop."""
    loop = asyncio.get_running_loop()
    config = server.config
    channel.setblocking(False)
    pending: set[asyncio.Task[None]] = set()

    def protocol() -> asyncio.Protocol:
        proto = config.http_protocol_class(
            config=config,
            server_state=server.server_state,
            app_state=server.lifespan.state,
            _loop=loop,
        )
        lost = proto.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            try:
                lost(exc)
            finally:
                with contextlib.suppress(OSError):  # the supervisor is gone: nothing to tell
                    channel.send(b"c")

        proto.connection_lost = connection_lost
        return proto

    async def serve_one(sock: socket.socket) -> None:
        try:
            await loop.connect_accepted_socket(protocol, sock)
        except OSError:  # the client left before its turn: closed, and counted as closed
            sock.close()
            with contextlib.suppress(OSError):
                channel.send(b"c")

    def readable() -> None:
        while True:
            try:
                msg, fds, _, _ = socket.recv_fds(channel, 64, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                msg, fds = b"", []
            if not msg and not fds:  # the supervisor closed its end
                loop.remove_reader(channel.fileno())
                return
            for fd in fds:
                task = loop.create_task(serve_one(socket.socket(fileno=fd)))
                pending.add(task)  # (the loop keeps only a weak reference to a task)
                task.add_done_callback(pending.discard)

    loop.add_reader(channel.fileno(), readable)


def _stop_with_parent(parent: int) -> None:
    """Linux: this process gets SIGTERM when its parent ends, however it ends (even killed);
    it ends at once if ``parent`` (the process that started it) already has."""
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0) != 0:
        _say(f"cannot ask to be stopped with the supervisor (errno {ctypes.get_errno()})")
    if os.getppid() != parent:  # the supervisor ended before the request took effect
        sys.exit(1)


def _say(message: str) -> None:
    print(f"tutor serve: {message}", file=sys.stderr, flush=True)


class _Supervisor:
    """Starts the workers, keeps them running and hands them the connections (see the module
    doc)."""

    #: a worker that stops within ``QUICK`` seconds of its start waits ``FIRST_BACKOFF``
    #: seconds before its next start, then twice that, up to ``MAX_BACKOFF`` (a worker that
    #: keeps failing, e.g. while the database is out of reach, is not started in a tight loop)
    QUICK = 10.0
    FIRST_BACKOFF = 1.0
    MAX_BACKOFF = 30.0
    #: seconds between the supervisor's checks on its workers when nothing else happens
    TICK = 0.5

    def __init__(
        self,
        host: str,
        port: int,
        workers: int,
        options: dict[str, Any],
        target: Callable[..., None] | None = None,
    ) -> None:
        self.host, self.port, self.n, self.options = host, port, workers, options
        #: what a worker process runs (tests give another function of the same arguments)
        self.target = target or _worker
        self.ctx = multiprocessing.get_context("spawn")
        self.slots = [_Slot() for _ in range(workers)]
        self.signals = 0
        #: the listening socket (bound in :meth:`run`, listening once a worker serves)
        self.listener: socket.socket | None = None
        self.listening = False
        self._turn = 0  # where the search for the least busy worker starts (ties rotate)

    def _start(self, slot: _Slot) -> None:
        reader, writer = self.ctx.Pipe(duplex=False)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        proc = self.ctx.Process(
            target=self.target,
            args=(self.host, self.port, self.options, writer, os.getpid(), theirs),
            name="tutor-worker",
        )
        try:
            proc.start()
        except BaseException:
            ours.close()
            raise
        finally:
            writer.close()  # the worker's end: once the worker ends, the pipe reads as closed
            theirs.close()
        ours.setblocking(False)
        slot.proc, slot.ready, slot.started_at = proc, _Readiness(reader), time.monotonic()
        slot.channel, slot.open = ours, 0

    def _stop_signal(self, signum: int, _frame: Any) -> None:
        self.signals += 1
        if self.signals > 1:
            # a second request: the workers stop at once (uvicorn's forced exit on a second
            # signal), without waiting for open connections
            for proc, _ in self._running():
                _signal(proc, signal.SIGTERM)

    def _running(self) -> list[tuple[SpawnProcess, _Readiness]]:
        return [(s.proc, s.ready) for s in self.slots if s.proc is not None and s.ready]

    def run(self) -> None:
        with port_lock(self.host, self.port):
            self._run()

    def _run(self) -> None:
        try:
            self.listener = listening_socket(self.host, self.port, listen=False)
        except OSError as exc:
            raise WorkerFailed(f"cannot listen on {self.host}:{self.port}: {exc}") from None
        old = {s: signal.signal(s, self._stop_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        _say(
            f"{self.n} workers on {self.host}:{self.port}, each connection to the one with "
            f"the fewest (supervisor process {os.getpid()})"
        )
        try:
            for slot in self.slots:
                self._start(slot)
            self._supervise()
        finally:
            self.listener.close()  # no new connections while the workers stop
            self._stop_all()
            for s, handler in old.items():
                signal.signal(s, handler)

    def _serving(self) -> list[_Slot]:
        """The workers that said they serve and still run, in slot order."""
        return [
            s
            for s in self.slots
            if s.proc is not None and s.ready is not None and s.ready.is_set() and s.channel
        ]

    def _supervise(self) -> None:
        assert self.listener is not None
        serving = False  # every first worker has been ready once
        # one selector while the workers stay as they are, a new one when they change (a
        # selector per wake-up cost more than the hand-over itself; a descriptor number can
        # be reused by a new worker's pipe once an old one is closed, hence no reuse then)
        selector: selectors.BaseSelector | None = None
        shape: tuple[Any, ...] = ()
        try:
            while not self.signals:
                now_shape = (self.listening, *(s.shape() for s in self.slots))
                if selector is None or now_shape != shape:
                    if selector is not None:
                        selector.close()
                    selector, shape = selectors.DefaultSelector(), now_shape
                    for fd in self._watch():
                        selector.register(fd, selectors.EVENT_READ)
                selector.select(self.TICK)
                if self.signals:
                    return
                serving = self._tend(serving)
        finally:
            if selector is not None:
                selector.close()

    def _watch(self) -> set[int]:
        """The descriptors to wait on: the workers' process sentinels, the readiness pipes of
        those not yet ready, the serving workers' channels, and the listening socket."""
        assert self.listener is not None
        watch = {p.sentinel for p, _ in self._running()}
        watch |= {
            r.reader.fileno() for _, r in self._running() if not r.ready and not r.reader.closed
        }
        serving = self._serving()
        watch |= {s.channel.fileno() for s in serving if s.channel is not None}
        if self.listening and serving:  # (with no worker serving, connections wait queued)
            watch.add(self.listener.fileno())
        return watch

    def _tend(self, serving: bool) -> bool:
        """After a wake-up: listen once a worker serves, count closes, hand over the waiting
        connections, and restart the workers that stopped (``serving``: every first worker
        has been ready once; returned updated)."""
        assert self.listener is not None
        if not self.listening and self._serving():
            try:
                self.listener.listen(2048)
            except OSError as exc:  # another program bound and listened meanwhile
                raise WorkerFailed(f"cannot listen on {self.host}:{self.port}: {exc}") from None
            self.listener.setblocking(False)
            self.listening = True
        self._closed_connections()
        if self.listening:
            self._hand_over()
        if not serving:
            serving = all(ready.is_set() for _, ready in self._running())
        now = time.monotonic()
        for slot in self.slots:
            proc, ready = slot.proc, slot.ready
            if proc is None or ready is None:
                if now >= slot.due:
                    self._start(slot)
                continue
            if proc.is_alive():
                continue
            if not serving and not ready.is_set():
                raise WorkerFailed(
                    f"a worker stopped before it served (exit code {proc.exitcode}): "
                    "see its lines above"
                )
            quick = now - slot.started_at < self.QUICK
            slot.backoff = (
                min(max(slot.backoff * 2, self.FIRST_BACKOFF), self.MAX_BACKOFF) if quick else 0.0
            )
            _say(
                f"worker process {proc.pid} stopped (exit code {proc.exitcode}); starting "
                f"another" + (f" in {slot.backoff:g} s" if slot.backoff else "")
            )
            slot.close()
            slot.due = now + slot.backoff
        return serving

    def _closed_connections(self) -> None:
        """Count the connections each worker says it closed (one byte each)."""
        for slot in self._serving():
            assert slot.channel is not None
            while True:
                try:
                    data = slot.channel.recv(4096)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    data = b""
                if not data:  # the worker's end closed: it is ending, take it out of turn
                    slot.channel.close()
                    slot.channel = None
                    break
                slot.open = max(0, slot.open - len(data))

    def _hand_over(self) -> None:
        """Accept every waiting connection and pass each to the serving worker with the
        fewest open connections (ties in turn)."""
        assert self.listener is not None
        while True:
            slots = self._serving()
            if not slots:  # the connections wait queued until a worker is back
                return
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, say: the connection stays queued
                _say(f"cannot accept a connection: {exc}")
                time.sleep(0.1)  # (the socket stays readable: no tight loop of this line)
                return
            with conn:
                if conn.family in (socket.AF_INET, socket.AF_INET6):
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                n = len(slots)
                order = sorted(range(n), key=lambda k: (slots[k].open, (k - self._turn) % n))
                self._turn += 1
                for k in order:
                    slot = slots[k]
                    try:
                        socket.send_fds(slot.channel, [b"s"], [conn.fileno()])
                    except OSError:  # a worker ending, or too far behind: the next one
                        continue
                    slot.open += 1
                    break
                # else: no worker could take it; closing it tells the client at once

    def _stop_all(self) -> None:
        for proc, _ in self._running():
            _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc, _ in self._running():
            proc.join(max(deadline - time.monotonic(), 0.1))
            if proc.is_alive():
                proc.kill()
                proc.join()
        for slot in self.slots:
            if slot.proc is not None:
                slot.close()


@dataclass
class _Slot:
    """One worker's place: its process, readiness, the supervisor's end of its connection
    channel and how many connections it holds, while one runs; else, after a worker stopped,
    when to start the next one (``due``). ``backoff``: the pause after the last quick stop (0
    after a worker that ran a while)."""

    proc: SpawnProcess | None = None
    ready: _Readiness | None = None
    channel: socket.socket | None = None
    open: int = 0
    started_at: float = 0.0
    backoff: float = 0.0
    due: float = 0.0

    def shape(self) -> tuple[Any, ...]:
        """What the supervisor waits on for this slot: changes when a worker starts, says it
        serves, closes its channel or ends."""
        return (
            self.proc.pid if self.proc is not None else None,
            self.ready.ready if self.ready is not None else None,
            self.ready.reader.closed if self.ready is not None else None,
            self.channel is not None,
        )

    def close(self) -> None:
        """The worker has ended: forget it (its pipe and channel closed)."""
        if self.ready is not None:
            self.ready.close()
        if self.channel is not None:
            self.channel.close()
        self.proc, self.ready, self.channel, self.open = None, None, None, 0


class _Readiness:
    """The supervisor's end of a worker's readiness pipe (:func:`signal_ready`)."""

    def __init__(self, reader: Connection) -> None:
        self.reader = reader
        self.ready = False

    def is_set(self) -> bool:
        """Whether the worker has said it serves (never blocks)."""
        if not self.ready and not self.reader.closed and self.reader.poll():
            try:
                self.ready = self.reader.recv_bytes() == b"1"
            except EOFError:  # the worker ended without a word
                self.reader.close()
        return self.ready

    def close(self) -> None:
        self.reader.close()


def _signal(proc: SpawnProcess, signum: int) -> None:
    if proc.is_alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signum)
