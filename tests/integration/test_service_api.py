"""The service's API through an ASGI test client: auth, ownership, grammars, limits, deduplication,
cancel of queued builds, eFlows4HPC's paths and bodies, and schemathesis against /openapi.json.

No builds run here (the app serves without workers): what a build does is the end-to-end tests'.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import select

from ci.service import crud
from ci.service.main import create_app
from ci.service.models import Build, Slot
from ci.service.service import Service
from tests.support.service_helpers import ServiceProject, service_project
from tests.support.site_helpers import EXAMPLES_DIR

EFLOWS = {"machine": {"platform": "linux/amd64", "architecture": "rome", "container_engine": "singularity",
                      "mpi": "openmpi@4", "gpu": "cuda@10"},
          "workflow": "minimal_workflow", "step_id": "wordcount", "force": False}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProject]:
    root = tmp_path_factory.mktemp("service-api")
    registry = root / "registry" / "minimal_workflow" / "wordcount"
    registry.mkdir(parents=True)
    (registry / "spack.yaml").write_text(yaml.safe_dump({"spack": {"specs": ["py-dislib@0.9"],
                                                                    "packages": {"all": {"require": "%gcc"}}}}))
    yield from service_project(root, site_services=False, definitions=EXAMPLES_DIR,
                               workflow_registry=str(root / "registry"), max_body_bytes=4096)


@pytest.fixture(scope="module")
def client(project: ServiceProject) -> Iterator[TestClient]:
    with TestClient(create_app(Service(project.settings()), workers=False)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def tokens(project: ServiceProject, client: TestClient) -> dict[str, str]:
    return {"alice": project.token("alice"), "bob": project.token("bob"), "root": project.token("root", admin=True)}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}


def test_every_endpoint_but_healthz_needs_a_valid_token(client: TestClient, tokens: dict[str, str]) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}
    for method, path in [("GET", "/builds"), ("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/"),
                         ("POST", "/build/"), ("GET", "/build/0123456789abcdef0123456789abcdef"),
                         ("GET", "/images/download/base-12-0123456789abcdef01234567.sqfs"), ("GET", "/ui/app.js")]:
        for headers in ({}, auth("cci_" + "x" * 43), auth("not-a-token"), basic("bob", tokens["alice"]),
                        {"Authorization": "Basic !!!"}, {"Authorization": "Digest x"}):
            answer = client.request(method, path, headers=headers)
            assert answer.status_code == 401, (method, path, headers, answer.text)
            assert answer.headers["www-authenticate"].startswith("Basic")
            assert tokens["alice"] not in answer.text
    assert client.get("/builds", headers=basic("alice", tokens["alice"])).status_code == 200
    assert client.get("/builds", headers=auth(tokens["alice"])).status_code == 200


def test_identical_requests_share_one_build_and_users_see_only_their_own(client: TestClient,
                                                                         tokens: dict[str, str]) -> None:
    results: list[Any] = []

    def ask(token: str) -> None:
        results.append(client.post("/build/", json={"definition": "tools-debug"}, headers=auth(token)))

    threads = [threading.Thread(target=ask, args=(tokens[user],)) for user in ("alice", "bob", "alice", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(answer.status_code == 200 for answer in results), [a.text for a in results]
    ids = [answer.json()["id"] for answer in results]
    assert len(set(ids)) == 4 and sum(answer.json()["attached"] for answer in results) == 3
    views = {answer.json()["id"]: client.get(f"/build/{answer.json()['id']}", headers=auth(tokens["root"])).json()
             for answer in results}
    assert len({view["key"] for view in views.values()}) == 1 and all(view["shared"] for view in views.values())
    alice_id = next(i for i, answer in zip(ids, results, strict=True)
                    if answer.request.headers["authorization"] == f"Bearer {tokens['alice']}")
    assert client.get(f"/build/{alice_id}", headers=auth(tokens["bob"])).status_code == 403
    assert client.get(f"/build/{alice_id}/logs", headers=auth(tokens["bob"])).status_code == 403
    assert client.post(f"/build/{alice_id}/cancel", headers=auth(tokens["bob"])).status_code == 403
    assert client.get(f"/build/{alice_id}", headers=auth(tokens["alice"])).status_code == 200
    assert client.get(f"/build/{alice_id}", headers=auth(tokens["root"])).status_code == 200
    mine = {view["id"] for view in client.get("/builds", headers=auth(tokens["bob"])).json()["builds"]}
    assert alice_id not in mine and len(mine) >= 2
    assert {v["id"] for v in client.get("/builds", headers=auth(tokens["root"])).json()["builds"]} >= set(ids)
    other_arch_engine = client.post("/build/", json={"definition": "tools-debug", "container_engine": "singularity"},
                                    headers=auth(tokens["alice"])).json()
    assert not other_arch_engine["attached"], "the requested engine is part of the content key"


def test_unknown_and_malformed_ids_are_404(client: TestClient, tokens: dict[str, str]) -> None:
    for build_id in ("0123456789abcdef0123456789abcdef", "nope", "..%2F..%2Fetc", "%00"):
        for path in (f"/build/{build_id}", f"/build/{build_id}/logs", f"/image_creation/build/{build_id}"):
            assert client.get(path, headers=auth(tokens["alice"])).status_code == 404, path
        assert client.post(f"/build/{build_id}/cancel", headers=auth(tokens["alice"])).status_code == 404


@pytest.mark.parametrize("name", ["..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e", "..", ".incoming-x", "service.db",
                                  "base-12-0123456789abcdef01234567.sqfs", "BASE-12-0123456789ABCDEF01234567.sqfs",
                                  "x" * 300 + ".sqfs", "a%00b.sqfs", "base-12-0123456789abcdef01234567.sqfs%2F.."])
def test_download_names_cannot_leave_the_store(client: TestClient, tokens: dict[str, str], project: ServiceProject,
                                              name: str) -> None:
    store = project.settings().store
    store.mkdir(parents=True, exist_ok=True)
    (store / "base-12-0123456789abcdef01234567.sqfs").write_bytes(b"not anybody's build")  # in the store, in no build
    for prefix in ("/images/download/", "/image_creation/images/download/"):
        answer = client.get(prefix + name, headers=auth(tokens["root"]))
        assert answer.status_code == 404, (name, answer.status_code, answer.text[:200])
        assert b"root:" not in answer.content


def test_bodies_are_checked_against_strict_grammars(client: TestClient, tokens: dict[str, str]) -> None:
    cases: list[tuple[Any, str]] = [
        ({"definition": "../base"}, "definition"), ({"definition": "base\n"}, "definition"),
        ({"definition": "base", "arch": "amd64; rm -rf /"}, "arch"), ({"definition": "base", "force": "yes"}, "force"),
        ({"definition": "base", "unknown": 1}, "unknown"), ({"definition": "nothing-like-this"}, "--only"),
        ({**EFLOWS, "workflow": "../../etc"}, "workflow"), ({**EFLOWS, "step_id": "a b"}, "step_id"),
        ({**EFLOWS, "machine": {**EFLOWS["machine"], "architecture": "$(reboot)"}}, "machine.architecture"),
        ({**EFLOWS, "machine": {**EFLOWS["machine"], "mpi": "openmpi@4 ^x"}}, "machine.mpi"),
        ({**EFLOWS, "machine": {**EFLOWS["machine"], "gpu": "opencl"}}, "machine.gpu"),
        ({**EFLOWS, "machine": {**EFLOWS["machine"], "container_engine": "podman"}}, "machine.container_engine"),
        ({**EFLOWS, "machine": {**EFLOWS["machine"], "platform": "linux/s390x"}}, "machine.platform"),
        ({**EFLOWS, "workflow": "other_workflow"}, "workflow"), ({**EFLOWS, "step_id": "other"}, "step_id"),
        ({**EFLOWS, "version": "v9"}, "version"),
        ({"definition": "base", "container_engine": "docker"}, "container_engine"),
    ]
    for body, field in cases:
        answer = client.post("/build", json=body, headers=auth(tokens["alice"]))
        assert answer.status_code == 422, (body, answer.text)
        problems = answer.json()["problems"]
        assert problems and any(p["field"] == field for p in problems), (body, problems)
        assert all(p["message"] and p["fix"] for p in problems)
        assert "pattern" not in answer.text, "pydantic's own wording must not reach the user"
    for raw in (b"[1, 2]", b"{not json", b"\xff\xfe"):
        answer = client.post("/build", content=raw,
                             headers={**auth(tokens["alice"]), "Content-Type": "application/json"})
        assert answer.status_code == 422, answer.text
    answer = client.post("/build", content=b"definition=base", headers={
        **auth(tokens["alice"]), "Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 415


def test_oversized_bodies_are_413_declared_or_streamed(client: TestClient, tokens: dict[str, str]) -> None:
    big = json.dumps({"definition": "base", "pad": "x" * 10_000}).encode()
    assert client.post("/build/", content=big, headers={**auth(tokens["alice"]),
                                                          "Content-Type": "application/json"}).status_code == 413

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * 1000

    streamed = client.post("/build/", content=chunks(), headers={**auth(tokens["alice"]),
                                                                  "Content-Type": "application/json"})
    assert streamed.status_code == 413


def test_eflows_requests_work_unchanged_on_both_paths(client: TestClient, tokens: dict[str, str],
                                                     project: ServiceProject) -> None:
    """A step with only spack.yaml (the older registry format) resolves, with the machine's target, MPI and GPU as
    eFlows4HPC's builder adds them (ci/service/eflows; tests/integration/test_eflows_api.py has the rest)."""
    first = client.post("/build/", json=EFLOWS, headers=basic("alice", tokens["alice"]))
    second = client.post("/image_creation/build/", json=EFLOWS, headers=basic("alice", tokens["alice"]))
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    for answer in (first, second):
        status = client.get(f"/image_creation/build/{answer.json()['id']}", headers=auth(tokens["alice"])).json()
        assert set(status) >= {"status", "message", "image_id", "filename"}
        assert status["workflow"] == "minimal_workflow" and status["step_id"] == "wordcount"
        assert status["machine"]["architecture"] == "rome" and status["status"] == "PENDING"
    tree = Path(project.settings().state_dir / "workflows")
    written = list(tree.rglob("step/spack.yaml"))
    environment = yaml.safe_load(written[0].read_text())["spack"]
    assert environment["packages"]["all"] == {"require": "%gcc", "target": ["rome"]}
    assert environment["specs"] == ["py-dislib@0.9", "openmpi@4", "cuda@10"] and environment["view"] == "/opt/view"


def test_cancel_of_a_queued_build_and_of_a_shared_one(client: TestClient, tokens: dict[str, str]) -> None:
    alone = client.post("/build/", json={"definition": "python"}, headers=auth(tokens["alice"])).json()
    cancelled = client.post(f"/build/{alone['id']}/cancel", headers=auth(tokens["alice"])).json()
    assert cancelled["status"] == "CANCELLED" and "before it started" in cancelled["message"]
    again = client.post("/build/", json={"definition": "python"}, headers=auth(tokens["alice"])).json()
    assert not again["attached"], "a cancelled build is never joined again"
    joined = client.post("/build/", json={"definition": "python"}, headers=auth(tokens["bob"])).json()
    assert joined["attached"]
    assert client.post(f"/build/{joined['id']}/cancel", headers=auth(tokens["bob"])).json()["status"] == "CANCELLED"
    assert client.get(f"/build/{again['id']}", headers=auth(tokens["alice"])).json()["status"] == "PENDING"


def test_changes_from_another_site_are_refused(client: TestClient, tokens: dict[str, str]) -> None:
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        answer = client.post("/build/", json={"definition": "base"}, headers={**auth(tokens["alice"]), **headers})
        assert answer.status_code == 403


def test_metrics_page_and_headers(client: TestClient, tokens: dict[str, str]) -> None:
    metrics = client.get("/metrics", headers=auth(tokens["alice"]))
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'cic_builds{status="PENDING"}' in metrics.text and "cic_pool_slots 2" in metrics.text
    page = client.get("/", headers=basic("alice", tokens["alice"]))
    assert page.status_code == 200 and "Request an image" in page.text and "<script src=\"/ui/app.js\"" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"


def test_openapi_with_schemathesis(client: TestClient, tokens: dict[str, str], project: ServiceProject) -> None:
    """Every operation of /openapi.json: no 5xx, documented status codes, responses matching their schemas."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.specs.openapi import checks

    document = client.get("/openapi.json", headers=auth(tokens["alice"])).json()
    assert {"/build", "/build/", "/image_creation/build/", "/build/{build_id}", "/builds",
            "/images/download/{filename}", "/healthz", "/metrics"} <= set(document["paths"])
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app, headers=auth(tokens["alice"]))
    chosen = [checks.status_code_conformance, checks.content_type_conformance, checks.response_schema_conformance]
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            response = case.call(headers=auth(tokens["alice"]))
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code}"
            case.validate_response(response, checks=chosen)

        try:
            run()
        except Exception as exc:  # collect every operation's failure, then report them together
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n".join(failures)


def test_claims_never_exceed_the_pool_and_never_take_a_build_twice(project: ServiceProject) -> None:
    """Eight threads race for slots on SQLite; the database settles it (the PostgreSQL race is the e2e test's)."""
    db = project.database()
    caller = crud.ensure_user(db, "racer")
    resolved = [crud.Resolved(kind="definition", image=f"x{n}", arch="amd64", engine="charliecloud", machine={},
                              definitions="/nowhere", digest=f"{n:064d}", image_id=f"x{n}:1", key=f"race{n:060d}")
                for n in range(6)]
    for item in resolved:
        crud.submit(db, caller, item)
    crud.ensure_slots(db, 2)
    taken: list[crud.Claimed] = []
    lock = threading.Lock()

    def grab(owner: str) -> None:
        for _ in range(10):
            claimed = crud.claim(db, owner, 30, 2)
            if claimed is not None:
                with lock:
                    taken.append(claimed)

    threads = [threading.Thread(target=grab, args=(f"owner{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == 2 and len({c.build_id for c in taken}) == 2 and {c.slot for c in taken} == {0, 1}
    db.close()


def test_a_lost_lease_is_requeued_then_failed_with_the_reason(project: ServiceProject) -> None:
    """A worker on another host stops renewing: its builds go back to the queue, and fail after max_attempts."""
    db = project.database()
    caller = crud.ensure_user(db, "lessee")
    crud.submit(db, caller, crud.Resolved(kind="definition", image="lost", arch="amd64", engine="charliecloud",
                                          machine={}, definitions="/nowhere", digest="1" * 64, image_id="lost:1",
                                          key="lease" + "0" * 59))
    crud.ensure_slots(db, 2)
    with db.writing() as session:  # the other tests' builds and claims out of the way
        for slot in session.scalars(select(Slot)):
            slot.build_id, slot.owner, slot.lease_expires = None, None, None
        session.flush()
        for build in session.scalars(select(Build).where(Build.image != "lost")):
            build.status, build.current_key = "CANCELLED", None

    def owner_dead(_owner: str) -> bool:
        return False  # another host: only the lease can tell

    statuses = []
    for _attempt in range(2):
        claimed = crud.claim(db, "elsewhere/boot/1/x", 0.05, 2)
        assert claimed is not None and claimed.image == "lost"
        time.sleep(0.1)
        lines = crud.reap(db, max_attempts=2, owner_dead=owner_dead)
        assert len(lines) == 1 and "elsewhere" in lines[0][1], lines
        _, build, _ = crud.get(db, caller, next(r.id for r, b, _ in crud.listing(db, caller) if b.image == "lost"))
        statuses.append((build.status, build.message))
        assert not crud.heartbeat(db, claimed, "elsewhere/boot/1/x", 30)[0], "the old owner lost the slot"
    assert statuses[0][0] == "PENDING" and "re-queued" in statuses[0][1]
    assert statuses[1][0] == "FAILED" and "2 of 2 attempts" in statuses[1][1]
    assert crud.counts(db).busy_slots == 0
    db.close()
