"""Running the API: uvicorn, and on Linux with several workers, one listening socket each.

uvicorn's own ``--workers`` shares one listening socket between its worker processes, and
whichever worker's event loop calls ``accept`` first takes the connection. Clients that keep
their connections (a proxy, a load balancer, a load generator) are spread by luck: measured
with ``wrk`` (2 workers, 16 connections, ``benchmarks/serve_load.py``), one run in four put
every connection on one worker, which then served 352 requests a second while the other
idled (the same server otherwise served 654-669).

With ``workers > 1`` on Linux, :func:`serve` instead starts each worker with a listening
socket of its own on the same address (``SO_REUSEPORT``): the kernel hands each new
connection to one of them by a hash of its addresses, so connections spread evenly whatever
the workers are doing. (Linux only lets sockets of the same user join the group. Other
systems' ``SO_REUSEPORT`` does not balance: there uvicorn's workers serve as before.)

The parent process supervises: ``SIGINT``/``SIGTERM`` stop every worker gracefully (uvicorn's
shutdown: open requests finish), and so does the supervisor's own end, however it comes (the
workers ask Linux for a signal when their parent ends); a worker that stops on its own after
it started serving is started again; a worker that fails before it serves (the address
taken, the database out of reach) stops them all, and :func:`serve` raises
:class:`WorkerFailed`.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import time
from multiprocessing.connection import wait
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event
from typing import Any

APP = "tutor.api.app:create_app"
#: seconds a worker is given to finish its open requests when stopped, then it is killed
STOP_TIMEOUT = 30.0


class WorkerFailed(RuntimeError):
    """A worker stopped before it served (see its own log lines for why)."""


def reuse_port_supported() -> bool:
    """Whether this system balances connections over ``SO_REUSEPORT`` sockets (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host:port`` in the ``SO_REUSEPORT`` group of that
    address (an address held by a socket outside the group raises ``OSError``)."""
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
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(*, host: str, port: int, workers: int = 1, **uvicorn_options: Any) -> None:
    """Serve the API on ``host:port`` (the settings come from the environment).
    ``uvicorn_options``: more of ``uvicorn.Config``'s (``loop``, ``access_log``, ...)."""
    import uvicorn

    options = {"factory": True, **uvicorn_options}
    if workers <= 1 or not reuse_port_supported():
        uvicorn.run(APP, host=host, port=port, workers=workers, **options)
        return
    _Supervisor(host, port, workers, options).run()


def _worker(host: str, port: int, options: dict[str, Any], ready: Event, supervisor: int) -> None:
    """One worker process: its own listening socket, then uvicorn until stopped (or until
    the ``supervisor`` process is gone: a worker must not serve on unsupervised)."""
    import uvicorn

    _stop_with_parent(supervisor)

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:  # listening, and the application's start-up succeeded
                ready.set()

    try:
        sock = listening_socket(host, port)
    except OSError as exc:
        _say(f"cannot listen on {host}:{port}: {exc}")
        sys.exit(1)
    server = _Server(uvicorn.Config(APP, host=host, port=port, **options))
    server.run(sockets=[sock])
    if not ready.is_set():
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
    def __init__(self, host: str, port: int, workers: int, options: dict[str, Any]) -> None:
        self.host, self.port, self.n, self.options = host, port, workers, options
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: list[tuple[SpawnProcess, Event]] = []
        self.stopping = False

    def _start(self) -> tuple[SpawnProcess, Event]:
        ready = self.ctx.Event()
        proc = self.ctx.Process(
            target=_worker,
            args=(self.host, self.port, self.options, ready, os.getpid()),
            name="tutor-worker",
        )
        proc.start()
        return proc, ready

    def _stop_signal(self, signum: int, _frame: Any) -> None:
        self.stopping = True

    def run(self) -> None:
        old = {s: signal.signal(s, self._stop_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        _say(
            f"{self.n} workers on {self.host}:{self.port}, one listening socket "
            f"each (supervisor process {os.getpid()})"
        )
        failed: str | None = None
        try:
            self.procs = [self._start() for _ in range(self.n)]
            while not self.stopping:
                wait([p.sentinel for p, _ in self.procs], timeout=0.5)
                for k, (proc, ready) in enumerate(self.procs):
                    if proc.is_alive() or self.stopping:
                        continue
                    if not ready.is_set():
                        failed = f"a worker stopped before it served (exit code {proc.exitcode})"
                        self.stopping = True
                        break
                    _say(
                        f"worker process {proc.pid} stopped (exit code {proc.exitcode}); "
                        "starting another"
                    )
                    self.procs[k] = self._start()
        finally:
            self._stop_all()
            for s, handler in old.items():
                signal.signal(s, handler)
        if failed:
            raise WorkerFailed(failed)

    def _stop_all(self) -> None:
        for proc, _ in self.procs:
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc, _ in self.procs:
            proc.join(max(deadline - time.monotonic(), 0.1))
            if proc.is_alive():
                proc.kill()
                proc.join()
