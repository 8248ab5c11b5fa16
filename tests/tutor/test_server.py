"""``tutor serve --workers N`` (``tutor.api.server``): on Linux the supervisor listens and hands
each connection to the worker with the fewest; it restarts a worker that dies, stops them all
on SIGTERM, and fails with a message when a worker cannot start. Real processes on a SQLite
file."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.tutor import standin_workers
from tests.tutor.helpers import free_port
from tutor.api.server import listening_socket, supervisor_supported

pytestmark = pytest.mark.skipif(
    not supervisor_supported(), reason="tutor serve's own supervisor: Linux only"
)


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                out.append(int(d))
    return out


def _listeners(port: int) -> int:
    """TCP sockets listening on ``port`` (state 0A in /proc/net/tcp)."""
    n = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            n += 1
    return n


def _connections(port: int, pids: list[int]) -> list[int]:
    """How many established TCP connections to ``port`` each of ``pids`` holds."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if f[3] == "01" and int(f[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f[9])
    counts = []
    for pid in pids:
        n = 0
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        n += 1
        counts.append(n)
    return counts


def _serve(url: str, port: int, workers: int, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    env = {**os.environ, "TUTOR_ENVIRONMENT": "development", "DATABASE_URL": url}
    cmd = [*prefix, sys.executable, "-m", "tutor.cli", "serve", "--workers", str(workers)]
    cmd += ["--port", str(port), "--no-access-log", "--database-url", url]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait(check, what: str, proc: subprocess.Popen, timeout: float = 60) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            raise AssertionError(f"{what}: the server ended: {proc.stdout.read().decode()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.2)


def _both_serve(base: str, port: int, workers: list[int]) -> bool:
    """Whether both ``workers`` serve: two kept connections then go one to each."""
    pair = [httpx.Client(base_url=base, timeout=5) for _ in range(2)]
    try:
        return all(c.get("/health").status_code == 200 for c in pair) and sorted(
            _connections(port, workers)
        ) == [1, 1]
    except httpx.HTTPError:
        return False
    finally:
        for c in pair:
            c.close()


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, a minute to stop gracefully, then SIGKILL."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_workers_share_the_connections_evenly_and_are_supervised(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _serve(url, port, 2)
    try:
        _wait(lambda: _listeners(port) == 1 and _healthy(base), "the supervisor listening", proc)
        workers = _children(proc.pid)
        # the spawn start method may add its resource tracker beside the workers
        served = [w for w in workers if b"spawn_main" in _cmdline(w)]
        assert len(served) == 2
        # the supervisor holds no copy of the application (torch is the workers' alone)
        assert "libtorch" in Path(f"/proc/{served[0]}/maps").read_text()
        assert "libtorch" not in Path(f"/proc/{proc.pid}/maps").read_text()
        _wait(lambda: _both_serve(base, port, served), "both workers serving", proc)
        # 16 kept connections, all served: 8 on each worker, none left with the supervisor
        clients = [httpx.Client(base_url=base, timeout=5) for _ in range(16)]
        try:
            assert all(c.get("/health").status_code == 200 for c in clients)
            assert _connections(port, served) == [8, 8]
            assert _connections(port, [proc.pid]) == [0]
            # closed connections are counted: the 8 of one worker closed (the connections
            # went to the workers in turn), the next 8 all go to it
            for c in clients[0::2]:
                c.close()
            _wait(lambda: sorted(_connections(port, served)) == [0, 8], "8 closed", proc)
            time.sleep(0.2)  # (the worker tells the supervisor right after it closes)
            clients = clients[1::2] + [httpx.Client(base_url=base, timeout=5) for _ in range(8)]
            assert all(c.get("/health").status_code == 200 for c in clients)
            assert sorted(_connections(port, served)) == [8, 8]
        finally:
            for c in clients:
                c.close()
        # a worker that dies is replaced, and the service goes on
        victim = served[0]
        os.kill(victim, signal.SIGKILL)
        _wait(
            lambda: (
                victim not in _children(proc.pid)
                and len([w for w in _children(proc.pid) if b"spawn_main" in _cmdline(w)]) == 2
            ),
            "a new worker",
            proc,
        )
        _wait(lambda: _healthy(base), "the service after the restart", proc)
        # SIGTERM stops every worker and the supervisor, cleanly
        kids = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        output = proc.stdout.read().decode()
        assert f"worker process {victim} stopped" in output, output
        assert _listeners(port) == 0
        # (the spawn method's resource tracker may still be exiting a moment after)
        _wait(lambda: not [k for k in kids if _alive(k)], "every child gone", proc, timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    port = free_port()
    proc = _serve(f"sqlite:///{tmp_path / 'serve.db'}", port, 2)
    try:
        _wait(lambda: _listeners(port) == 1, "the supervisor listening", proc)
        kids = [k for k in _children(proc.pid) if b"spawn_main" in _cmdline(k)]
        assert len(kids) == 2
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 30
    while any(_alive(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [k for k in kids if _alive(k)], "workers serve on without their supervisor"
    assert _listeners(port) == 0


@pytest.mark.skipif(
    not shutil.which("unshare") or os.geteuid() != 0, reason="a PID namespace: unshare as root"
)
def test_a_supervisor_that_is_process_1_serves(tmp_path: Path) -> None:
    """In a container the supervisor is often process 1: its workers, whose parent is then
    process 1, must not take that for an ended supervisor."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ns = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child")
    proc = _serve(f"sqlite:///{tmp_path / 'serve.db'}", port, 2, ns)
    try:
        _wait(lambda: _listeners(port) == 1 and _healthy(base), "workers under process 1", proc)
        # unshare waits for its child: the supervisor (process 1 inside) is stopped directly
        for supervisor in _children(proc.pid):
            os.kill(supervisor, signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()  # --kill-child: the namespace's processes go with it
            proc.wait()
    assert "(supervisor process 1)" in proc.stdout.read().decode()


def test_an_address_in_use_fails_with_its_reason(tmp_path: Path) -> None:
    """A socket outside the group holds the port: the command fails (exit 2) and says why,
    and no worker is left behind."""
    port = free_port()
    with socket.socket() as held:
        held.bind(("127.0.0.1", port))
        held.listen()
        proc = _serve(f"sqlite:///{tmp_path / 'serve.db'}", port, 2)
        assert proc.wait(60) == 2
    output = proc.stdout.read().decode()
    assert f"cannot listen on 127.0.0.1:{port}" in output, output


def test_a_second_server_on_the_port_is_refused(tmp_path: Path) -> None:
    """Another ``tutor serve`` holds the port: the second is refused with that reason, and the
    first serves on."""
    port = free_port()
    first = _serve(f"sqlite:///{tmp_path / 'a.db'}", port, 2)
    try:
        _wait(lambda: _listeners(port) == 1, "the first server", first)
        second = _serve(f"sqlite:///{tmp_path / 'b.db'}", port, 2)
        assert second.wait(60) == 2
        output = second.stdout.read().decode()
        assert f"cannot listen on 127.0.0.1:{port}: another tutor serve" in output, output
        assert _listeners(port) == 1
    finally:
        _stop(first)


def test_one_worker_is_uvicorns_own(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from tutor.api import server

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: seen.update(kw, target=target))
    server.serve(host="127.0.0.1", port=8123, workers=1, access_log=False)
    assert seen["target"] == "tutor.api.app:create_app" and seen["factory"] is True
    assert (seen["host"], seen["port"], seen["workers"]) == ("127.0.0.1", 8123, 1)
    assert seen["access_log"] is False


def test_a_listening_socket_holds_its_port() -> None:
    a = listening_socket("127.0.0.1", 0)
    try:
        port = a.getsockname()[1]
        with socket.socket() as plain, pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))
        with pytest.raises(OSError):
            listening_socket("127.0.0.1", port)
    finally:
        a.close()


def test_a_first_worker_that_never_serves_stops_the_service() -> None:
    from tutor.api.server import WorkerFailed, _Supervisor

    sup = _Supervisor("127.0.0.1", free_port(), 2, {}, target=standin_workers.never_ready)
    with pytest.raises(WorkerFailed, match="stopped before it served"):
        sup.run()
    assert not [p for p, _ in sup._running() if p.is_alive()]


def test_a_worker_failing_after_the_service_served_is_retried_with_a_pause(
    tmp_path: Path,
) -> None:
    """Once every first worker has served, a worker that fails (even before it serves) is
    started again, not the end of the service; one that keeps failing soon after its start
    waits between tries, longer each time."""
    import threading

    from tutor.api.server import _Supervisor

    log = tmp_path / "starts.log"
    sup = _Supervisor("127.0.0.1", free_port(), 1, {"log": str(log)}, target=standin_workers.flaky)
    sup.FIRST_BACKOFF = 2.5  # well above a stand-in worker's start, even on a busy machine
    stopper = threading.Timer(7.0, lambda: setattr(sup, "signals", 1))
    stopper.start()
    try:
        sup.run()  # returns when "signalled"; raises WorkerFailed if it gave up
    finally:
        stopper.cancel()
    starts = [float(x) for x in log.read_text().splitlines()]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    # the first dies after 0.3 s; the second waits 2.5 s, dies at once, the third waits 5 s:
    # two or three starts in 7 s, where without the pause a start follows each death
    assert 2 <= len(starts) <= 3, gaps
    assert gaps[0] >= 2.5, gaps


def test_a_second_supervisor_is_refused_before_the_first_ones_workers_bind() -> None:
    """Two ``tutor serve`` on one port started together: the second is refused at once, even
    while nothing is bound yet (the stand-in workers never bind: the address check alone
    would let both start), and the port is free to serve again once the first has ended."""
    import threading

    from tutor.api.server import WorkerFailed, _Supervisor

    port = free_port()
    first = _Supervisor("127.0.0.1", port, 1, {}, target=standin_workers.serves_quietly)
    second = _Supervisor("127.0.0.1", port, 1, {}, target=standin_workers.serves_quietly)
    seen: list[BaseException | None] = []

    def start_second() -> None:  # (a supervisor sets signal handlers: the first is the main
        # thread's; the second is refused before it would)
        deadline = time.monotonic() + 30
        try:
            while not (first._running() and first._running()[0][1].is_set()):
                if time.monotonic() > deadline:
                    seen.append(TimeoutError("the first never served"))
                    return
                time.sleep(0.05)
            try:
                second.run()
                seen.append(None)
            except BaseException as exc:  # noqa: BLE001 - checked below
                seen.append(exc)
        finally:
            first.signals = 1

    helper = threading.Thread(target=start_second)
    helper.start()
    first.run()
    helper.join(60)
    assert len(seen) == 1 and isinstance(seen[0], WorkerFailed), seen
    assert "another tutor serve of this user" in str(seen[0])
    assert not second._running()  # refused before it started a worker
    third = _Supervisor("127.0.0.1", port, 1, {}, target=standin_workers.never_ready)
    with pytest.raises(WorkerFailed, match="stopped before it served"):
        third.run()  # the lock was released: it got as far as starting its worker


def test_a_worker_killed_right_after_it_said_it_serves_is_replaced(tmp_path: Path) -> None:
    """A worker that said it serves and was then killed outright (SIGKILL, as by the OOM
    killer) counts as having served: its word outlives it in the readiness pipe, the service
    goes on and the worker is started again."""
    import threading

    from tutor.api.server import _Supervisor

    log = tmp_path / "starts.log"
    sup = _Supervisor(
        "127.0.0.1", free_port(), 1, {"log": str(log)}, target=standin_workers.ready_then_killed
    )
    sup.FIRST_BACKOFF = 0.2
    stopper = threading.Timer(6.0, lambda: setattr(sup, "signals", 1))
    stopper.start()
    try:
        sup.run()  # WorkerFailed if the first worker's readiness were lost with it
    finally:
        stopper.cancel()
    assert len(log.read_text().splitlines()) == 2


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--host", "no-such-host.invalid"], "cannot listen on no-such-host.invalid"),
        (["--port", "70000"], "--port"),
    ],
)
def test_a_bad_address_is_refused_with_its_reason(tmp_path: Path, args, said) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from tutor.cli import app

    url = f"sqlite:///{tmp_path / 'serve.db'}"
    cmd = ["serve", "--workers", "2", "--no-migrate", *args, "--database-url", url]
    r = CliRunner().invoke(app, cmd)
    assert r.exit_code == 2 and said in r.output, r.output


def test_a_port_taken_while_the_workers_start_stops_the_service() -> None:
    """The supervisor binds at once and listens once a worker serves; another program that
    binds (``SO_REUSEADDR``) and listens in between makes that listen fail: the service
    stops with the reason, and no worker is left."""
    import threading

    from tutor.api.server import WorkerFailed, _Supervisor

    port = free_port()
    sup = _Supervisor("127.0.0.1", port, 1, {}, target=standin_workers.serves_quietly)
    intruder = socket.socket()
    intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def intrude() -> None:
        deadline = time.monotonic() + 30
        while sup.listener is None and time.monotonic() < deadline:
            time.sleep(0.001)
        intruder.bind(("127.0.0.1", port))
        intruder.listen()

    helper = threading.Thread(target=intrude)
    helper.start()
    try:
        with pytest.raises(WorkerFailed, match=f"cannot listen on 127.0.0.1:{port}"):
            sup.run()
    finally:
        helper.join(30)
        intruder.close()
    assert not [p for p, _ in sup._running() if p.is_alive()]


def test_a_connection_made_while_no_worker_serves_waits_for_one(tmp_path: Path) -> None:
    """Both workers killed at once: a connection made before either is back waits in the
    socket's queue and is served by the first that is (not accepted and closed)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _serve(f"sqlite:///{tmp_path / 'serve.db'}", port, 2)
    try:
        _wait(lambda: _listeners(port) == 1 and _healthy(base), "the supervisor listening", proc)
        victims = [w for w in _children(proc.pid) if b"spawn_main" in _cmdline(w)]
        # (a first worker killed before it served would stop the service: see above)
        _wait(lambda: _both_serve(base, port, victims), "both workers serving", proc)
        for victim in victims:
            os.kill(victim, signal.SIGKILL)
        # both reaped by the supervisor: it knows that no worker serves
        _wait(lambda: not set(victims) & set(_children(proc.pid)), "both reaped", proc)
        assert httpx.get(f"{base}/health", timeout=60).status_code == 200
    finally:
        _stop(proc)
