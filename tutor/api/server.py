"""Running the API: uvicorn, and on Linux with several workers, one listening socket each.

uvicorn's own ``--workers`` shares one listening socket between its worker processes, and
whichever worker's event loop calls ``accept`` first takes the connection. Clients that keep
their connections (a proxy, a load balancer, a load generator) are spread by luck: measured
with ``wrk`` (2 workers, 16 connections, ``benchmarks/serve_load.py``), one run in seven put
every connection on one worker, which then served 352 requests a second while the other
idled (the same server otherwise served 642-692).

With ``workers > 1`` on Linux, :func:`serve` instead starts each worker with a listening
socket of its own on the same address (``SO_REUSEPORT``): the kernel hands each new
connection to one of them by a hash of its addresses, so connections spread evenly whatever
the workers are doing. (Linux only lets sockets of the same user join the group. Other
systems' ``SO_REUSEPORT`` does not balance: there uvicorn's workers serve as before.)

The parent process supervises:

- ``SIGINT``/``SIGTERM`` stop every worker gracefully (uvicorn's shutdown: open requests
  finish); a second signal stops them at once. The workers also stop when the supervisor
  ends however it ends (they ask Linux for a signal when their parent ends).
- A worker listens only once its application has started (uvicorn listens after the
  lifespan start-up), so no connection waits on a worker still loading its models.
- A worker that stops on its own is started again, after a pause when it keeps stopping
  soon after its start (1 s, doubling up to 30 s).
- Before any worker starts, the address must be free: a port held by another program, or
  by another ``tutor serve`` whose workers' group the new ones would otherwise join (even
  one started a moment before, whose workers have not bound yet: :func:`port_lock`), stops
  :func:`serve` with :class:`WorkerFailed`; so does a first worker that stops before it
  serves (the database out of reach, say).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.context import SpawnProcess
from typing import Any

APP = "tutor.api.app:create_app"
#: seconds a worker is given to finish its open requests when stopped, then it is killed
STOP_TIMEOUT = 30.0


class WorkerFailed(RuntimeError):
    """``tutor serve`` cannot serve: its address is taken (by another program or another
    ``tutor serve``) or a first worker stopped before it served (see its own log lines)."""


def reuse_port_supported() -> bool:
    """Whether this system balances connections over ``SO_REUSEPORT`` sockets (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def listening_socket(host: str, port: int, *, listen: bool = True) -> socket.socket:
    """A TCP socket bound to ``host:port`` in the ``SO_REUSEPORT`` group of that address
    (an address held by a socket outside the group raises ``OSError``), listening unless
    ``listen`` is false: a worker leaves that to uvicorn, which listens only once the
    application has started, so that no connection waits in the queue of a worker that
    cannot serve yet."""
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(addr)
        if listen:
            sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


def address_free(host: str, port: int) -> OSError | None:
    """None if nothing is bound to ``host:port``, else the error a plain bind (or the name's
    lookup) met. A socket of another server's ``SO_REUSEPORT`` group would not stop the
    workers' own binds: the kernel would then split the connections between the two
    servers."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError as exc:  # an unknown host name, say
        return exc
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is free
        try:
            probe.bind(addr)
        except OSError as exc:
            return exc
    return None


@contextlib.contextmanager
def port_lock(host: str, port: int) -> Iterator[None]:
    """Held by a supervisor for as long as it runs: one ``tutor serve`` per port and user.

    :func:`address_free` sees another server only once its workers have bound their
    sockets, seconds after its start; two servers started within those seconds would both
    pass it, and their workers would then share the port. An exclusive ``flock`` on a file
    named for the port and the user closes that gap (the system releases it when the process
    ends, however it ends). Another user's server cannot join the port group (Linux keeps a
    ``SO_REUSEPORT`` group to one user): its workers' binds fail, as before. Where the lock
    file cannot be opened (a read-only temporary directory), the probe alone decides."""
    import fcntl
    import tempfile

    path = os.path.join(tempfile.gettempdir(), f"tutor-serve-{os.getuid()}-{port}.lock")
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        _say(f"no lock file for port {port} ({exc}); relying on the address check")
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
    if workers <= 1 or not reuse_port_supported():
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
    host: str, port: int, options: dict[str, Any], ready: Connection, supervisor: int
) -> None:
    """One worker process: its own listening socket, then uvicorn until stopped (or until
    the ``supervisor`` process is gone: a worker must not serve on unsupervised)."""
    import uvicorn

    _stop_with_parent(supervisor)
    served = False

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            nonlocal served
            await super().startup(sockets)
            if self.started:  # listening, and the application's start-up succeeded
                signal_ready(ready)
                served = True

    try:
        sock = listening_socket(host, port, listen=False)
    except OSError as exc:
        _say(f"cannot listen on {host}:{port}: {exc}")
        sys.exit(1)
    server = _Server(uvicorn.Config(APP, host=host, port=port, **options))
    # Ctrl-C reaches the workers too: uvicorn stops gracefully, then re-raises it
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
    if not served:
        sys.exit(3)


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
    """Starts the workers and keeps them running (see the module doc)."""

    #: a worker that stops within ``QUICK`` seconds of its start waits ``FIRST_BACKOFF``
    #: seconds before its next start, then twice that, up to ``MAX_BACKOFF`` (a worker that
    #: keeps failing, e.g. while the database is out of reach, is not started in a tight loop)
    QUICK = 10.0
    FIRST_BACKOFF = 1.0
    MAX_BACKOFF = 30.0

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

    def _start(self, slot: _Slot) -> None:
        reader, writer = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(
            target=self.target,
            args=(self.host, self.port, self.options, writer, os.getpid()),
            name="tutor-worker",
        )
        try:
            proc.start()
        finally:
            writer.close()  # the worker's end: once the worker ends, the pipe reads as closed
        slot.proc, slot.ready, slot.started_at = proc, _Readiness(reader), time.monotonic()

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
        taken = address_free(self.host, self.port)
        if taken is not None:
            raise WorkerFailed(f"cannot listen on {self.host}:{self.port}: {taken}")
        old = {s: signal.signal(s, self._stop_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        _say(
            f"{self.n} workers on {self.host}:{self.port}, one listening socket "
            f"each (supervisor process {os.getpid()})"
        )
        try:
            for slot in self.slots:
                self._start(slot)
            self._supervise()
        finally:
            self._stop_all()
            for s, handler in old.items():
                signal.signal(s, handler)

    def _supervise(self) -> None:
        serving = False  # every first worker has been ready once
        while not self.signals:
            live = [p.sentinel for p, _ in self._running()]
            wait(live, timeout=0.5)
            if self.signals:
                return
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
                    min(max(slot.backoff * 2, self.FIRST_BACKOFF), self.MAX_BACKOFF)
                    if quick
                    else 0.0
                )
                _say(
                    f"worker process {proc.pid} stopped (exit code {proc.exitcode}); starting "
                    f"another" + (f" in {slot.backoff:g} s" if slot.backoff else "")
                )
                ready.close()
                slot.proc, slot.ready, slot.due = None, None, now + slot.backoff

    def _stop_all(self) -> None:
        for proc, _ in self._running():
            _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc, _ in self._running():
            proc.join(max(deadline - time.monotonic(), 0.1))
            if proc.is_alive():
                proc.kill()
                proc.join()
        for _, ready in self._running():
            ready.close()


@dataclass
class _Slot:
    """One worker's place: its process and readiness while one runs; else, after a worker
    stopped, when to start the next one (``due``). ``backoff``: the pause after the last quick
    stop (0 after a worker that ran a while)."""

    proc: SpawnProcess | None = None
    ready: _Readiness | None = None
    started_at: float = 0.0
    backoff: float = 0.0
    due: float = 0.0


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
