"""Errors raised by loaders and the dataset writer.

Every message names where the problem is (file, line, field) and what was expected.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable


class IngestError(Exception):
    """Input that cannot be ingested at all: nothing is written when it is raised."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        where = ""
        if file is not None:
            where = f"{file}"
            if line is not None:
                where += f", line {line}"
            where += ": "
        if field is not None:
            where += f"field '{field}': "
        super().__init__(where + message)


class UnknownFormatError(IngestError):
    """A format name that no loader has."""


class DatasetError(Exception):
    """A dataset directory that is missing, incomplete or of another schema version."""


def require_columns(
    present: Collection[str], required: Iterable[str], *, file: str, header: str, what: str = ""
) -> None:
    """Raise :class:`IngestError` naming the first ``required`` column not in ``present``.

    ``header`` is the file's header as the message shows it; ``what`` names the kind of file
    (``missing required column 'x' of an EdNet KT1 file``).
    """
    for col in required:
        if col not in present:
            of = f" of {what}" if what else ""
            raise IngestError(
                f"missing required column '{col}'{of} (header: {header})",
                file=file,
                line=1,
                field=col,
            )
