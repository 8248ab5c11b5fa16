"""Dependencies shared by the routes: the database session, the caller and their scope."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import GroupMembership, Learner, Organisation
from ..security import Principal, authenticate
from ..settings import Settings


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One session per request, used only inside the route function's thread.

    The session opens its transaction at its first query, inside the route; it is closed
    (rolled back unless the route committed) here, on the event loop, so that a transaction
    never waits for a free worker thread while it holds a lock. (On SQLite every write
    transaction takes the database lock at BEGIN: were a lock held across the hop from a
    dependency's thread to the route's, requests queued on the lock could take every worker
    thread and the holder could never finish.) On SQLite, GET requests run as read
    transactions (plain ``BEGIN``), which never wait for writers.
    """
    state = request.app.state
    factory = state.read_sessionmaker if request.method == "GET" else state.sessionmaker
    session = factory()
    session.info["write_factory"] = state.sessionmaker
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def get_principal(request: Request, settings: SettingsDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # a short read transaction of its own (see get_session)
    with request.app.state.read_sessionmaker() as auth_session:
        principal = authenticate(auth_session, token.strip(), settings.key_pepper)
        org = auth_session.get(Organisation, principal.org_id) if principal else None
    if principal is not None and org is None:  # the key's organisation was deleted
        principal = None
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or revoked API key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.principal = principal
    request.state.org = org
    limiter = request.app.state.rate_limiter
    if limiter is not None and not limiter.allow(principal.key_id):
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"rate limit of {settings.rate_limit_per_minute} requests per minute exceeded",
            headers={"Retry-After": "60"},
        )
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_org(request: Request, session: SessionDep, principal: PrincipalDep) -> Organisation:
    """The caller's organisation, attached to the request session without a query (so the
    transaction still begins inside the route; see get_session)."""
    return session.merge(request.state.org, load=False)


OrgDep = Annotated[Organisation, Depends(get_org)]


def require_roles(principal: Principal, *roles: str) -> None:
    if principal.role not in roles:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"a {principal.role} key may not do this (needs: {', '.join(roles)})",
        )


def visible_learner(
    session: Session, principal: Principal, external_id: str, *, lock: bool = False
) -> Learner:
    """The learner, if the caller may see them; 404 otherwise (never 403, so ids of other
    organisations or learners cannot be probed)."""
    require_roles(principal, "admin", "teacher", "learner")
    q = select(Learner).where(
        Learner.org_id == principal.org_id, Learner.external_id == external_id
    )
    if lock:
        q = q.with_for_update()
    learner = session.scalar(q)
    ok = learner is not None
    if ok and principal.role == "learner":
        ok = learner.id == principal.learner_id
    elif ok and principal.role == "teacher":
        ok = (
            session.scalar(
                select(GroupMembership.group_id).where(
                    GroupMembership.learner_id == learner.id,
                    GroupMembership.group_id.in_(principal.group_ids),
                )
            )
            is not None
        )
    if not ok:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"learner {external_id!r} not found")
    return learner
