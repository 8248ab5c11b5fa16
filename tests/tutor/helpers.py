"""Helpers the tutor tests share: a server process over HTTP, answer bodies, organisation
settings and who may read a group's routes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def run_server(url: str, log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "TUTOR_ENVIRONMENT": "test"}
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "tutor.api.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


def ans(event: str, learner: str, item: str, correct: int, k: int) -> dict:
    ts = (T0 + timedelta(minutes=k)).isoformat()
    return {
        "event_id": event,
        "learner_id": learner,
        "item_id": item,
        "correct": correct,
        "timestamp": ts,
    }


# who may read a group's routes: (key, group) -> status
GROUP_ACCESS = {
    ("admin", "g1"): 200,
    ("admin", "g2"): 200,
    ("teacher", "g1"): 200,
    ("teacher", "g2"): 404,  # not its group
    ("admin", "nope"): 404,
    ("learner", "g1"): 403,
    ("ingest", "g1"): 403,
    ("other_admin", "g1"): 404,  # another organisation
}


def answer_batch(answers) -> list[dict]:
    """The ``/v1/answers`` batch of ``(event, learner, item, correct, "HH:MM")`` rows."""
    return [
        {
            "event_id": e,
            "learner_id": u,
            "item_id": i,
            "correct": c,
            "timestamp": f"2024-03-01T{t}:00Z",
        }
        for e, u, i, c, t in answers
    ]


def set_org_settings(world, **values) -> None:
    from tutor.db import Organisation, create_db_engine, make_sessionmaker

    engine = create_db_engine(world.url)
    with make_sessionmaker(engine)() as s, s.begin():
        org = s.scalar(select(Organisation).where(Organisation.slug == "acme"))
        org.settings = {**(org.settings or {}), **values}
    engine.dispose()
