"""Shared dependencies of the handlers: the service, the database session work, the current caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from ci.service import crud
from ci.service.core import security
from ci.service.service import Service

CHALLENGE = {"WWW-Authenticate": 'Basic realm="containers-ci", charset="UTF-8"'}


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


async def current_caller(request: Request, service: Annotated[Service, Depends(get_service)]) -> crud.Caller:
    """The caller of a bearer token or of HTTP basic (user name + token); 401 otherwise."""
    credentials = security.credentials_from(request.headers.get("authorization"))
    if credentials is None:
        raise HTTPException(401, "a token is needed: `Authorization: Bearer TOKEN`, or HTTP basic with your user "
                                 "name and TOKEN (`inv service.token --user NAME` makes one)", headers=CHALLENGE)
    user, token = credentials
    caller = service.cached_caller(user, token) or await run_in_threadpool(service.authenticate, user, token)
    if caller is None:
        raise HTTPException(401, "the token (or user name) is not valid", headers=CHALLENGE)
    request.state.caller = caller
    return caller


ServiceDep = Annotated[Service, Depends(get_service)]
CallerDep = Annotated[crud.Caller, Depends(current_caller)]
