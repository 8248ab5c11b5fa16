"""Stand-in worker functions for ``tutor serve``'s supervisor tests (``test_server.py``): the
same arguments as ``tutor.api.server._worker``, and only the standard library (and
``tutor.api.server``, which imports nothing more), so that a spawned process starts in a
fraction of a second."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any


def flaky(
    host: str, port: int, options: dict[str, Any], ready: Any, supervisor: int, channel: Any = None
) -> None:
    """The first one serves briefly, then dies; every later one dies at once, before it
    serves (as a worker whose start-up meets a database blip). Each start is logged to
    ``options["log"]``."""
    log = Path(options["log"])
    with log.open("a") as fh:
        fh.write(f"{time.monotonic()}\n")
    if len(log.read_text().splitlines()) == 1:
        from tutor.api.server import signal_ready

        signal_ready(ready)
        time.sleep(0.3)
    sys.exit(1)


def never_ready(
    host: str, port: int, options: dict[str, Any], ready: Any, supervisor: int, channel: Any = None
) -> None:
    """Dies before it serves (as a worker whose application cannot start)."""
    sys.exit(3)


def ready_then_killed(
    host: str,
    port: int,
    options: dict[str, Any],
    ready: Any,
    supervisor: int,
    channel: Any = None,
) -> None:
    """Says it serves, then is killed (SIGKILL: nothing of it runs after the signal), as a
    worker the kernel's OOM killer takes; every later one serves until stopped."""
    import os
    import signal

    from tutor.api.server import signal_ready

    log = Path(options["log"])
    with log.open("a") as fh:
        fh.write(f"{time.monotonic()}\n")
    signal_ready(ready)
    if len(log.read_text().splitlines()) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)


def serves_quietly(
    host: str,
    port: int,
    options: dict[str, Any],
    ready: Any,
    supervisor: int,
    channel: Any = None,
) -> None:
    """Says it serves, binds nothing, and waits until it is stopped."""
    from tutor.api.server import signal_ready

    signal_ready(ready)
    time.sleep(120)
