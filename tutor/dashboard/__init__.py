"""The teachers' dashboard: one static page at ``/dashboard`` over the analytics API.

The page itself needs no key: the API key is typed into it, kept in the browser's session
storage and sent with every data call (``Authorization: Bearer``). Its assets are package data
(read with :mod:`importlib.resources`, so an installed wheel serves them too); the charting
library (Vega, Vega-Lite, vega-embed) is vendored into ``static/vendor/`` by
``scripts/vendor_dashboard.sh`` (pinned versions checked against their npm integrity, the files
committed so that every wheel carries them) and nothing is loaded from another origin (the
page's Content-Security-Policy forbids it). Without the vendored files the page answers 503
naming the script to run.
"""

from __future__ import annotations

import mimetypes
from importlib.resources import files
from importlib.resources.abc import Traversable

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, Response

router = APIRouter(tags=["dashboard"], include_in_schema=False)

VENDOR_FILES = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js")
MISSING_VENDOR = (
    "the dashboard's charting library is not vendored: run scripts/vendor_dashboard.sh "
    "(scripts/setup.sh does it when the files are missing)"
)
#: same origin only; Vega compiles its expressions with ``new Function`` ('unsafe-eval') and
#: vega-embed injects its stylesheet ('unsafe-inline' styles)
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".txt": "text/plain"}


def static_root() -> Traversable:
    return files(__name__) / "static"


def vendor_missing() -> list[str]:
    vendor = static_root() / "vendor"
    return [name for name in VENDOR_FILES if not (vendor / name).is_file()]


def _unavailable() -> JSONResponse:
    return JSONResponse(
        {"detail": MISSING_VENDOR, "missing": vendor_missing()},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
    )


def _read(path: str) -> bytes | None:
    if path.startswith("vendor/"):
        return _read_vendor(path)
    return _read_file(path)


def _read_file(path: str) -> bytes | None:
    node = static_root()
    for part in path.split("/"):
        node = node / part
    return node.read_bytes() if node.is_file() else None


_VENDOR_CACHE: dict[str, bytes] = {}


def _read_vendor(path: str) -> bytes | None:
    """The vendored files are large and pinned: read once per process (once found)."""
    if path not in _VENDOR_CACHE:
        body = _read_file(path)
        if body is None:
            return None
        _VENDOR_CACHE[path] = body
    return _VENDOR_CACHE[path]


@router.get("/dashboard", response_class=HTMLResponse)
@router.get("/dashboard/", response_class=HTMLResponse, include_in_schema=False)
def dashboard(request: Request) -> Response:
    """The dashboard page (no key needed to load it; the data calls need one)."""
    if vendor_missing():
        return _unavailable()
    root = request.scope.get("root_path", "").rstrip("/")
    html = (_read("index.html") or b"").decode().replace("{{ROOT}}", root)
    return HTMLResponse(html, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"})


@router.get("/dashboard/static/{path:path}")
def dashboard_static(path: str) -> Response:
    """The page's scripts, stylesheet and the vendored charting library."""
    parts = path.split("/")
    if not path or any(p in ("", ".", "..") or "\\" in p for p in parts):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dashboard file {path!r}")
    body = _read(path)
    if body is None:
        if parts[0] == "vendor" and parts[-1] in VENDOR_FILES:
            return _unavailable()
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dashboard file {path!r}")
    suffix = "." + parts[-1].rsplit(".", 1)[-1] if "." in parts[-1] else ""
    media = TYPES.get(suffix) or mimetypes.guess_type(parts[-1])[0] or "application/octet-stream"
    # the vendored files are pinned (their versions are in vendor/VERSIONS): cache them a day
    cache = "public, max-age=86400" if parts[0] == "vendor" else "no-cache"
    return Response(
        body,
        media_type=media,
        headers={"Cache-Control": cache, "X-Content-Type-Options": "nosniff"},
    )
