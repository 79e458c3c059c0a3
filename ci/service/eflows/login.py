"""`GET /login` (also under /image_creation): eFlows4HPC's token exchange, as its `client.py` uses it.

eFlows4HPC's `client.py` sends HTTP basic (user name and password) to `/login`, reads `token` from
the answer and then authenticates every call as HTTP basic with that token as the user name and no
password (requests sends the text "None" for a None password). Here the password is the user's
API token (`inv service.token`); the answer's token is a new API token of the same user that ends
after ci.service.session_seconds, stored only as a hash like every other token.
"""

from __future__ import annotations

import time

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ci.service.api.deps import CallerDep, ServiceDep
from ci.service.core import security
from ci.service.db import Database
from ci.service.models import ProblemResponse, Token

router = APIRouter(tags=["eflows4hpc"])


class LoginAnswer(BaseModel):
    token: str
    duration: int


def issue_session_token(db: Database, user_id: int, seconds: int) -> str:
    """A new token of `user_id` that authenticates until `seconds` from now."""
    token = security.new_token()
    now = time.time()
    with db.writing() as session:
        session.add(Token(user_id=user_id, hash=security.token_hash(token), created=now, expires=now + seconds))
    return token


@router.get("/login", response_model=LoginAnswer,
            responses={401: {"model": ProblemResponse, "description": "no valid user name and token"}})
async def login(caller: CallerDep, service: ServiceDep) -> LoginAnswer:
    """A short-lived token for eFlows4HPC's clients: send HTTP basic (user name, API token); use the answer's
    token as the HTTP basic user name with an empty password."""
    seconds = service.settings.eflows.session_seconds if service.settings.eflows is not None else 3600
    token = await run_in_threadpool(issue_session_token, service.db, caller.id, seconds)
    return LoginAnswer(token=token, duration=seconds)
