"""Routes that answer a table as JSON or CSV: the ``format`` query and ``Accept``
negotiation (:func:`wants_csv`), the page size when no ``limit`` is given (JSON: a page, CSV:
every row; :func:`page_size`), the CSV attachment itself (:func:`csv_response`: cells that
never run as spreadsheet formulas, a file name that survives any script) and the one answer
of such a route (:func:`respond`, declared with :func:`table_route`)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from .deps import model_response

#: a table's CSV rows and columns, from the route's JSON body
TableFn = Callable[[dict[str, Any]], tuple[list[dict[str, Any]], list[str]]]

FormatQuery = Annotated[
    Literal["json", "csv"] | None,
    Query(description="json (default) or csv; ``Accept: text/csv`` also asks for CSV"),
]
LimitQuery = Annotated[int | None, Query(ge=1, le=100_000, description="default 100; CSV: all")]
#: the page size of JSON answers when no ``limit`` is given (CSV: every row)
PAGE = 100
EVERYTHING = 10**9
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CSV_DESCRIPTION = (
    "CSV with `format=csv` or `Accept: text/csv` (the whole table unless `limit` is given)."
)
CSV_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}}
}


def table_route(
    router: APIRouter, path: str, model: type[BaseModel], note: str = ""
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``router.get`` for a route answering ``model`` as JSON, or its table as CSV (``note``
    adds to the CSV description)."""
    return router.get(
        path, response_model=model, responses=CSV_RESPONSES, description=CSV_DESCRIPTION + note
    )


def wants_csv(request: Request, fmt: str | None) -> bool:
    """Whether the answer is CSV: ``format`` decides, else ``Accept`` asking for CSV only."""
    if fmt is not None:
        return fmt == "csv"
    accept = request.headers.get("accept", "")
    return "text/csv" in accept and "application/json" not in accept


def page_size(request: Request, fmt: str | None, limit: int | None, default: int = PAGE) -> int:
    """``limit`` where given, else ``default`` for JSON and every row for CSV."""
    if limit is not None:
        return limit
    return EVERYTHING if wants_csv(request, fmt) else default


def rows_at(key: str, columns: list[str]) -> TableFn:
    """The table whose rows are the body's list ``key``, with these columns."""
    return lambda body: (body[key], columns)


def respond(
    request: Request,
    fmt: str | None,
    model: type[BaseModel],
    body: dict[str, Any],
    table: TableFn,
    name: str,
) -> Any:
    """The route's answer: ``table(body)`` as ``name.csv`` where CSV is wanted, else ``body``
    validated by ``model`` as JSON."""
    if wants_csv(request, fmt):
        rows, columns = table(body)
        return csv_response(rows, columns, f"{name}.csv")
    # validated and encoded once, by pydantic; the representation depends on Accept: caches
    # must key on it
    out = model_response(model, body)
    out.headers["Vary"] = "Accept"
    return out


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list | tuple):
        v = "; ".join(str(_cell(x)) for x in v)
    if isinstance(v, dict):
        v = v.get("name") or v.get("label") or ", ".join(f"{k}={x}" for k, x in v.items())
    if isinstance(v, str) and v.startswith(FORMULA_START):
        return "'" + v
    return v


def csv_response(rows: Iterable[dict[str, Any]], columns: list[str], filename: str) -> Response:
    """A table as a CSV attachment (see the module doc). The file name is given twice, in
    ASCII and in UTF-8 (RFC 6266's ``filename*``), so that ids in any script survive."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in columns])
    plain = _slug(filename, ascii_only=True) or "export.csv"
    disposition = f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(_slug(filename))}"
    return Response(
        buf.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": disposition, "Vary": "Accept"},
    )


def _slug(text: str, ascii_only: bool = False) -> str:
    """A file name from ids: letters, digits, ``-``, ``_`` and ``.`` kept (only ASCII ones
    with ``ascii_only``), anything else a ``-``; at most 80 characters."""

    def ok(ch: str) -> bool:
        return (ch.isalnum() and (ch.isascii() or not ascii_only)) or ch in "-_."

    return "".join(ch if ok(ch) else "-" for ch in text).strip("-.")[:80]
