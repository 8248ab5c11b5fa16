"""Errors raised by loaders and the dataset writer.

Every message names where the problem is (file, line, field) and what was expected.
"""

from __future__ import annotations


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
