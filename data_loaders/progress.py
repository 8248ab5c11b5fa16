"""One progress protocol for every long job (ingest, import, training, reports, simulations).

Library code reports to a :class:`Progress`; it never draws. The command line hands in a
:class:`RichProgress` (bars on stderr, drawn with rich, the library Typer already brings);
tests and library callers get :class:`NoProgress`. Keeping the protocol in the lowest package
lets ``data_loaders``, ``kt_models`` and ``tutor`` share it without an upward import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as _RichBars
    from rich.progress import TaskID


class Progress(Protocol):
    """``start(description, total)`` begins a task (``total`` None: unknown), ``advance(n)``
    moves it on, ``finish()`` ends it; a second ``start`` ends the task before it."""

    def start(self, description: str, total: int | None) -> None: ...

    def advance(self, n: int) -> None: ...

    def finish(self) -> None: ...


class NoProgress:
    """The progress of a job that nobody watches."""

    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def finish(self) -> None:
        pass


class RichProgress:
    """:class:`Progress` drawn as a rich bar on stderr.

    A task whose description starts with ``reading`` counts bytes (size, speed, time left);
    any other counts units (done/total, elapsed). ``transient`` bars disappear when finished
    (per-epoch bars); ``enabled=False`` draws nothing, for ``--quiet`` and JSON output."""

    def __init__(
        self,
        enabled: bool = True,
        *,
        console: Console | None = None,
        transient: bool = False,
    ) -> None:
        self.enabled = enabled
        self.transient = transient
        self._console = console
        self._bars: _RichBars | None = None
        self._task: TaskID | None = None

    def start(self, description: str, total: int | None) -> None:
        self.finish()
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bars

        columns = [TextColumn("{task.description}"), BarColumn()]
        if description.startswith("reading"):
            columns += [DownloadColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
        else:
            columns += [MofNCompleteColumn(), TimeElapsedColumn()]
        console = self._console or Console(stderr=True, soft_wrap=True)
        self._bars = Bars(*columns, console=console, transient=self.transient)
        self._bars.start()
        self._task = self._bars.add_task(description, total=total)

    def advance(self, n: int) -> None:
        if self._bars is not None and self._task is not None:
            self._bars.advance(self._task, n)

    def finish(self) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None
            self._task = None

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()


def progress_bars(progress: bool | Progress) -> Progress:
    """The :class:`Progress` a ``progress`` argument asks for: True, bars on stderr that vanish
    when their task ends; False, none; a Progress, itself."""
    if isinstance(progress, bool):
        return RichProgress(transient=True) if progress else NoProgress()
    return progress


__all__ = ["NoProgress", "Progress", "RichProgress", "progress_bars"]
