"""The writer's staging directory beside the output, its lock, and the leftovers of killed writers.

A writer stages its dataset in ``.<output name>.tmp-<12 hex digits>`` beside the output (a
replaced dataset is moved aside to ``.<output name>.old-<same digits>`` while the new one takes
its place), so that the dataset appears complete or not at all. It holds an exclusive
``flock`` on ``.<output name>.tmp-<same digits>.lock`` for its whole life; the kernel drops the
lock when the process ends, however it ends (SIGKILL, out of memory). Before it stages
anything, a writer removes the leftovers of earlier writers of the *same* output
(:func:`remove_stale_staging`): names matching exactly these patterns whose lock file it can
lock (their writer is gone), and names without a lock file (written by an older version) when
nothing in them has changed for :data:`STALE_UNLOCKED_AFTER_S` seconds. Staging directories
of running writers, and of other outputs, are never touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid
from pathlib import Path

try:  # POSIX; elsewhere leftovers are removed by age only
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from .errors import IngestError

#: Leftover staging directories without a lock file are removed once nothing in them has
#: changed for this long (an hour: a live writer writes its spill files far more often).
STALE_UNLOCKED_AFTER_S = 3600


def _staging_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(name)}\.(?:tmp|old)-([0-9a-f]{{12}})(\.lock)?$")


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock of ``fd`` without waiting; False when another holds it."""
    if fcntl is None:  # pragma: no cover - Windows
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _newest_mtime(path: Path) -> float:
    """The latest modification time of ``path`` and of everything under it."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for n in dirs + files:
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(root, n)).st_mtime)
    return newest


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_stale_staging(out: Path | str, *, now: float | None = None) -> list[Path]:
    """Remove what killed writers of ``out`` left beside it; returns the removed paths.

    Only names of ``out``'s own pattern count (``.<name>.tmp-<12 hex>``, ``.<name>.old-<12
    hex>`` and the lock file ``.<name>.tmp-<12 hex>.lock``), grouped by their digits. A group
    whose lock file can be locked is stale (its writer has ended: the kernel released the
    lock); a group whose lock is held is in use and kept. A group without a lock file is
    stale when nothing in it has changed for :data:`STALE_UNLOCKED_AFTER_S` seconds (and
    so is every group where file locks do not exist). Where the output itself is missing and
    a stale group holds the dataset moved aside (``.old-``: the writer was killed between
    moving it and putting the new one in place), that dataset is put back, not removed.
    """
    out = Path(out)
    parent = out.parent
    pattern = _staging_pattern(out.name)
    groups: dict[str, list[Path]] = {}
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return []
    for entry in entries:
        m = pattern.match(entry.name)
        if m:
            groups.setdefault(m.group(1), []).append(Path(entry.path))
    now = time.time() if now is None else now
    removed: list[Path] = []
    for token, paths in sorted(groups.items()):
        lock = parent / f".{out.name}.tmp-{token}.lock"
        old = parent / f".{out.name}.old-{token}"
        if lock in paths and fcntl is not None:
            try:
                fd = os.open(lock, os.O_RDWR)
            except OSError:  # removed meanwhile: its writer finished
                continue
            try:
                if not _try_lock(fd):
                    continue  # a running writer's
                if not out.exists() and old in paths:
                    # killed between moving the dataset aside and putting the new one in
                    # place: the old dataset is the only one left, so it goes back
                    os.replace(old, out)
                    paths = [p for p in paths if p != old]
                for p in sorted(paths, key=lambda q: q == lock):  # the lock file last
                    _remove(p)
            finally:
                os.close(fd)
        else:
            try:
                age = now - max(_newest_mtime(p) for p in paths)
            except OSError:
                continue
            if age < STALE_UNLOCKED_AFTER_S:
                continue
            for p in paths:
                _remove(p)
        removed.extend(paths)
    return removed


def _new_staging(parent: Path, name: str) -> tuple[Path, Path, int]:
    """A locked lock file and the staging directory beside the output: (dir, lock, fd)."""
    for _ in range(100):
        token = uuid.uuid4().hex[:12]
        lock = parent / f".{name}.tmp-{token}.lock"
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
                # a cleaner that opened the new file before we locked it may have removed it
                if os.fstat(fd).st_ino != os.stat(lock).st_ino:  # pragma: no cover - a race
                    raise FileNotFoundError(lock)
            tmp = parent / f".{name}.tmp-{token}"
            tmp.mkdir()
            return tmp, lock, fd
        except FileNotFoundError:  # pragma: no cover - a race
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                lock.unlink()
            raise
    raise IngestError(  # pragma: no cover
        "cannot create a staging directory beside the output", file=str(parent / name)
    )


def output_exists_error(out: Path) -> IngestError:
    """The error of a writer asked to replace an existing output without ``overwrite``."""
    return IngestError("output already exists; pass --overwrite to replace it", file=str(out))


class Staging:
    """One writer's locked staging directory (:attr:`dir`) beside the output ``out``.

    Creating it first removes the stale leftovers of earlier writers of ``out``.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        remove_stale_staging(out)
        self.dir, self._lock_path, self._lock_fd = _new_staging(out.parent, out.name)
        self._lock_fd: int | None

    def release(self) -> None:
        """Remove the staging directory's lock file, then let the lock go."""
        if self._lock_fd is None:
            return
        with contextlib.suppress(OSError):
            self._lock_path.unlink()
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)
        self._lock_fd = None

    def discard(self) -> None:
        """Remove the staging directory and release its lock; the output is untouched."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.release()

    def commit(self, overwrite: bool) -> None:
        """Put the staging directory in the output's place (replacing it when ``overwrite``)."""
        old = None
        if self.out.exists():
            if not overwrite:
                raise output_exists_error(self.out)
            # the same digits as the staging directory: covered by its lock
            old = self.out.parent / f".{self.out.name}.old-{self.dir.name.rsplit('-', 1)[1]}"
            os.replace(self.out, old)
        os.replace(self.dir, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
