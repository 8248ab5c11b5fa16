"""Dependencies shared by the routes: the database session, the caller and their scope."""

from __future__ import annotations

from collections.abc import Iterator
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


def get_session(request: Request) -> Iterator[Session]:
    """One session per request. On SQLite, GET requests run as read transactions (``BEGIN``)
    so that they do not queue behind writers; writes take the lock up front."""
    state = request.app.state
    factory = state.read_sessionmaker if request.method == "GET" else state.sessionmaker
    with factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_principal(request: Request, session: SessionDep, settings: SettingsDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = authenticate(session, token.strip(), settings.key_pepper)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or revoked API key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.principal = principal
    limiter = request.app.state.rate_limiter
    if limiter is not None and not limiter.allow(principal.key_id):
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"rate limit of {settings.rate_limit_per_minute} requests per minute exceeded",
            headers={"Retry-After": "60"},
        )
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_org(session: SessionDep, principal: PrincipalDep) -> Organisation:
    org = session.get(Organisation, principal.org_id)
    if org is None:  # the key's organisation was deleted
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or revoked API key")
    return org


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
