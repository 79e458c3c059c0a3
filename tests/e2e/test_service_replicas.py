"""Two service replicas on one PostgreSQL database: one build per content, never more than the pool.

Each replica runs as many worker threads as the pool has slots, so together they could run twice
the pool; the slot rows (claimed with SELECT ... FOR UPDATE SKIP LOCKED) must hold them to it. The
builds are real pipeline runs that fail in their Docker build after a few seconds (short, so that
they overlap without costing conversions); the claims table and the run folders are the evidence.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from ci.service.db import Database
from ci.service.models import Build, Claim, Request
from tests.support.service_helpers import TERMINAL, ServiceProject, postgresql_database, service_project, wait_status

pytestmark = [pytest.mark.e2e, pytest.mark.service]
POOL = 2


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    yield from postgresql_database(f"cci_test_{uuid.uuid4().hex[:10]}")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, database: str) -> Iterator[ServiceProject]:
    for project in service_project(tmp_path_factory.mktemp("service-replicas"), pool=POOL, lease_seconds=5):
        for number in range(5):
            project.site.add(f"slow{number}", extra="RUN sleep 3 && echo giving up && exit 7\n")
        yield project


def test_two_replicas_share_the_pool_and_never_run_a_build_twice(project: ServiceProject, database: str) -> None:
    env = {"CI_SERVICE_DATABASE_URL": database}
    project.service_config["database"] = None
    first, second = project.serve(env=env), project.serve(env=env)
    db = Database.open(database)
    try:
        token = _token(db)
        ids: list[str] = []
        lock = threading.Lock()

        def ask(server: Any, body: dict[str, Any]) -> None:
            with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
                answer = client.post("/build/", json=body)
                assert answer.status_code == 200, answer.text
                with lock:
                    ids.append(answer.json()["id"])

        threads = [threading.Thread(target=ask, args=(server, {"definition": "slow0"}))
                   for server in (first, second, first, second)]
        threads += [threading.Thread(target=ask, args=((first, second)[n % 2], {"definition": f"slow{n}"}))
                    for n in range(1, 5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(ids) == 8
        for request_id in ids:
            with first.client(token) as client:
                final, _ = wait_status(lambda rid=request_id: dict(client.get(f"/build/{rid}").json()),
                                       lambda s: s["status"] in TERMINAL, 240, f"build {request_id}")
            assert final["status"] == "FAILED" and "build" in final["message"], final
        with db.reading() as session:
            builds = list(session.scalars(select(Build)))
            claims = list(session.scalars(select(Claim)))
            requests = list(session.scalars(select(Request)))
    finally:
        db.close()
    assert len(builds) == 5, "the four identical requests share one build"
    assert len({r.build_id for r in requests if r.id in ids}) == 5
    assert sorted(c.build_id for c in claims) == sorted(b.id for b in builds), "each build claimed exactly once"
    events = sorted([(c.started, 1) for c in claims] + [(c.ended or 0.0, -1) for c in claims])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    assert peak <= POOL, f"{peak} builds ran at once with a pool of {POOL}"
    runs = sorted(p.name for p in (project.settings().pipeline.state_dir / "runs").iterdir())
    for build in builds:
        assert sum(1 for name in runs if f"-{build.id[:8]}-" in name) == 1, f"build {build.id} ran more than once"


def _token(db: Database) -> str:
    from ci.service import crud

    db.migrate()
    return crud.issue_token(db, "replica-user")
