"""eFlows4HPC's registry as git and its clients' requests, through a real uvicorn replica (no workers: nothing
is built here; the build itself is tests/e2e/test_eflows_service.py).

The registry and the catalog are git repositories made by the test (tests/support/eflows_fixtures.py): versions are
branches and tags, a new commit is a new digest and the same commit the same one, a missing branch or step
is a 4xx naming it. client.py's login flow (GET /login, then the token as the basic user with no password),
string booleans, `path`, platforms, malformed JSON and the dry run are checked against the running server.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ci.errors import DefinitionError
from ci.service.eflows import git as eflows_git
from tests.support.eflows_fixtures import UPSTREAM_CLIENT_AUTH, commit_change, git, make_catalog, make_registry
from tests.support.service_helpers import ServiceProject, service_project

pytestmark = [pytest.mark.service, UPSTREAM_CLIENT_AUTH]
MACHINE = {"platform": "linux/amd64", "architecture": "skylake", "container_engine": "singularity"}
BODY = {"machine": MACHINE, "workflow": "demo", "step_id": "all_three"}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProject]:
    root = tmp_path_factory.mktemp("eflows-api")
    make_registry(root / "registry")
    make_catalog(root / "catalog")
    allowed = root / "allowed"
    allowed.mkdir()
    (allowed / "mystep").mkdir()
    (allowed / "mystep" / "eflows4hpc.yaml").write_text("apt: [jq]\n", encoding="utf-8")
    yield from service_project(root, site_services=False, workflow_registry=f"file://{root / 'registry'}",
                               software_catalog=f"file://{root / 'catalog'}", eflows_allowed_paths=[str(allowed)],
                               git_timeout=60)


@pytest.fixture(scope="module")
def server(project: ServiceProject) -> Any:
    return project.serve(workers=False)


@pytest.fixture(scope="module")
def login(project: ServiceProject, server: Any) -> dict[str, Any]:
    token = project.token("alice")
    answer = requests.get(f"{server.url}/image_creation/login", auth=("alice", token), timeout=30)
    assert answer.status_code == 200, answer.text
    return {"api": token, "session": answer.json()["token"], "duration": answer.json()["duration"]}


def post(server: Any, auth: Any, body: Any, path: str = "/image_creation/build/", **kwargs: Any) -> requests.Response:
    return requests.post(f"{server.url}{path}", json=body, auth=auth, timeout=120, **kwargs)


def session(login: dict[str, Any]) -> requests.auth.HTTPBasicAuth:
    return requests.auth.HTTPBasicAuth(login["session"], None)  # type: ignore[arg-type]  # client.py does this


def test_client_py_login_then_submit_with_string_booleans_and_poll(server: Any, login: dict[str, Any]) -> None:
    assert login["duration"] == 3600 and login["session"] != login["api"]
    created = post(server, session(login), {**BODY, "version": "v2", "force": "true", "push": "false"})
    assert created.status_code == 200, created.text
    status = requests.get(f"{server.url}/image_creation/build/{created.json()['id']}", auth=session(login), timeout=30)
    assert status.status_code == 200 and status.json()["status"] == "PENDING"
    source = status.json()["source"]
    assert source["version"] == "v2" and len(source["commit"]) == 40 and len(source["catalog"]["commit"]) == 40
    assert "demo_all_three_skylake_nompi_nogpu:v2-" in status.json()["image_id"]
    also = requests.get(f"{server.url}/login", auth=("alice", login["api"]), timeout=30)  # without the prefix too
    assert also.status_code == 200
    wrong = requests.get(f"{server.url}/image_creation/login", auth=("alice", "not-a-token"), timeout=30)
    assert wrong.status_code == 401
    garbage = requests.get(f"{server.url}/image_creation/build/{created.json()['id']}",
                           auth=requests.auth.HTTPBasicAuth("cci_" + "A" * 43, ""), timeout=30)
    assert garbage.status_code == 401


def test_a_short_lived_token_ends(project: ServiceProject, server: Any, login: dict[str, Any]) -> None:
    import time

    from ci.service.eflows.login import issue_session_token
    from ci.service.models import User

    db = project.database()
    try:
        with db.reading() as s:
            user_id = s.query(User).filter(User.name == "alice").one().id
        token = issue_session_token(db, user_id, 1)
    finally:
        db.close()
    time.sleep(1.5)
    answer = requests.get(f"{server.url}/builds", auth=requests.auth.HTTPBasicAuth(token, ""), timeout=30)
    assert answer.status_code == 401


def dry_run(server: Any, login: dict[str, Any], body: dict[str, Any]) -> requests.Response:
    return post(server, session(login), body, path="/build/?dry_run=true")


def test_dry_run_answers_the_rendered_files_and_builds_nothing(server: Any, login: dict[str, Any]) -> None:
    before = requests.get(f"{server.url}/builds", auth=session(login), timeout=30).json()["builds"]
    answer = dry_run(server, login, {**BODY, "machine": {**MACHINE, "mpi": "openmpi@4", "gpu": "cuda@12"}})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    spack = result["environment"]["spack"]
    assert spack["specs"] == ["hello@2.12", "mypkg@1.0", "openmpi@4", "cuda@12"]
    assert spack["repos"] == ["/software-catalog"] and spack["packages"]["all"]["target"] == ["skylake"]
    assert result["apt"] == ["jq", "python3-pip"] and result["pip"] == ["six==1.16.0"]
    assert "FROM containers-ci/spack-builder:stand-in" in result["files"]["Dockerfile"]
    assert "software-catalog/packages/mypkg/package.py" in result["staged"]
    assert "spack-config/packages.yaml" in result["staged"]
    after = requests.get(f"{server.url}/builds", auth=session(login), timeout=30).json()["builds"]
    assert len(after) == len(before)


def test_a_new_commit_is_a_new_digest_and_the_same_commit_the_same(project: ServiceProject, server: Any,
                                                                   login: dict[str, Any]) -> None:
    registry = project.root / "registry"
    first = dry_run(server, login, BODY).json()
    assert dry_run(server, login, BODY).json()["digest"] == first["digest"]
    assert first["source"]["commit"] == git(registry, "rev-parse", "main")
    commit = commit_change(registry, "demo/apt_only", {"notes.txt": "unrelated\n"})  # another step changes
    second = dry_run(server, login, BODY).json()
    assert second["source"]["commit"] == commit and second["digest"] != first["digest"]
    tagged = dry_run(server, login, {**BODY, "version": "1.0"}).json()
    assert tagged["source"]["commit"] == git(registry, "rev-parse", "1.0^{commit}")
    answer = dry_run(server, login, {**BODY, "version": "release/2.0"})  # a branch with a "/"
    assert answer.status_code == 200, answer.text
    release = answer.json()
    assert release["source"]["commit"] == git(registry, "rev-parse", "release/2.0")
    assert release["source"]["version"] == "release/2.0" and release["digest"] != tagged["digest"]
    one = post(server, session(login), {**BODY, "force": False}).json()
    two = post(server, session(login), {**BODY, "force": "False"}).json()
    assert two["attached"] is True and two["id"] != one["id"]


@pytest.mark.parametrize(("body", "status", "field"), [
    ({**BODY, "version": "no-such-branch"}, 422, "version"),
    ({**BODY, "step_id": "no_such_step"}, 422, "step_id"),
    ({**BODY, "workflow": "nowhere"}, 422, "workflow"),
    ({**BODY, "version": "../main"}, 422, "version"),
    ({**BODY, "version": "release//2.0"}, 422, "version"),
    ({**BODY, "version": "release/.hidden"}, 422, "version"),
    ({**BODY, "version": "main/"}, 422, "version"),
    ({**BODY, "version": "--upload-pack=touch"}, 422, "version"),
    ({**BODY, "step_id": "a;b"}, 422, "step_id"),
    ({**BODY, "force": "yes"}, 422, "force"),
    ({**BODY, "push": True}, 422, "push"),  # no images_prefix configured here
    ({**BODY, "machine": {**MACHINE, "platform": "linux/ppc64le"}}, 422, "machine.platform"),
    ({**BODY, "machine": {**MACHINE, "mpi": "openmpi; rm -rf /"}}, 422, "machine.mpi"),
    ({**BODY, "path": "/etc"}, 403, "path"),
    ({**BODY, "workflow": "BASE"}, 422, "workflow"),
])
def test_refusals_name_the_field(server: Any, login: dict[str, Any], body: dict[str, Any], status: int,
                                 field: str) -> None:
    answer = post(server, session(login), body)
    assert answer.status_code == status, answer.text
    problems = answer.json()["problems"]
    assert any(problem["field"] == field for problem in problems), answer.json()


def test_malformed_json_as_upstream_ships_it_is_a_clear_4xx(server: Any, login: dict[str, Any]) -> None:
    text = '{"machine": {"platform": "linux/amd64", "mpi":openmpi@4.0.0"}, "workflow":"a", "step_id" :"b"}'
    answer = requests.post(f"{server.url}/image_creation/build/", data=text, auth=session(login), timeout=30,
                           headers={"Content-Type": "application/json"})
    assert answer.status_code == 422 and "not valid JSON" in answer.json()["detail"]


def test_path_is_for_admins_below_the_allowed_folders(project: ServiceProject, server: Any) -> None:
    admin = project.token("root-admin", admin=True)
    allowed = project.root / "allowed" / "mystep"
    body = {**BODY, "step_id": "mystep", "path": str(allowed)}
    refused = requests.post(f"{server.url}/build/?dry_run=true", json=body, auth=("bob", project.token("bob")),
                            timeout=30)
    assert refused.status_code == 403 and "admin" in refused.json()["detail"]
    answer = requests.post(f"{server.url}/build/?dry_run=true", json=body, auth=("root-admin", admin), timeout=30)
    assert answer.status_code == 200 and answer.json()["apt"] == ["jq"], answer.text
    outside = requests.post(f"{server.url}/build/?dry_run=true", json={**body, "path": str(project.root)},
                            auth=("root-admin", admin), timeout=30)
    assert outside.status_code == 403 and "eflows_allowed_paths" in outside.json()["detail"]


def test_base_renders_the_configured_base_image(server: Any, login: dict[str, Any]) -> None:
    answer = dry_run(server, login, {**BODY, "workflow": "BASE", "step_id": "BASE"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["image"] == "eflows4hpc_base"
    assert answer.json()["files"]["Dockerfile"].count("FROM containers-ci/spack-builder:stand-in") == 1


def test_the_cache_fetches_one_at_a_time_and_refuses_links(tmp_path: Path) -> None:
    registry = make_registry(tmp_path / "registry")
    where = eflows_git.location(f"file://{registry}", tmp_path, "test")
    cache = eflows_git.GitCache(tmp_path / "cache", timeout=60)
    commits: list[str] = []
    threads = [threading.Thread(target=lambda: commits.append(cache.resolve(where, "v2"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(commits)) == 1 and commits[0] == git(registry, "rev-parse", "v2")
    assert git(tmp_path / "cache" / next(p.name for p in (tmp_path / "cache").glob("*.git")),
               "rev-parse", "--is-shallow-repository") == "true"
    with pytest.raises(DefinitionError, match="no branch or tag 'nope'"):
        cache.resolve(where, "nope")
    (registry / "demo" / "apt_only" / "link").symlink_to("/etc/passwd")
    commit = commit_change(registry, "demo/apt_only", {})
    cache.resolve(where, "main")
    with pytest.raises(DefinitionError, match="symbolic link"):
        cache.export(where, commit, "demo/apt_only", tmp_path / "out")


def test_locations_with_passwords_or_other_protocols_are_refused(tmp_path: Path) -> None:
    from ci.errors import ConfigError

    for value in ("https://user:secret@example.org/r.git", "ftp://example.org/r", "-upload-pack=x"):
        with pytest.raises(ConfigError):
            eflows_git.location(value, tmp_path, "ci.service.workflow_registry")
    assert eflows_git.location("git@github.com:eflows4hpc/workflow-registry.git", tmp_path, "k").git


def test_inv_service_request_render_writes_what_would_be_built(project: ServiceProject, tmp_path: Path) -> None:
    import json

    request = tmp_path / "request.json"
    request.write_text(json.dumps({**BODY, "machine": {**MACHINE, "gpu": "cuda@12"}, "force": "True"}),
                       encoding="utf-8")
    out = tmp_path / "rendered"
    config = project.config_file()
    done = project.site.inv("service.request", "--request", str(request), "--render", str(out), config=config)
    assert done.returncode == 0, done.stderr
    assert (out / "Dockerfile").is_file() and (out / "eflows4hpc" / "apt.txt").read_text() == "jq\npython3-pip\n"
    environment = (out / "step" / "spack.yaml").read_text()
    assert "cuda@12" in environment and "/opt/view" in environment
    again = project.site.inv("service.request", "--request", str(request), "--render", str(out), config=config)
    assert again.returncode == 2 and "not empty" in again.stderr and "Traceback" not in again.stderr
    request.write_text('{"machine": {"platform": "linux/ppc64le", "architecture": "power9le", '
                       '"container_engine": "singularity"}, "workflow": "demo", "step_id": "all_three"}')
    refused = project.site.inv("service.request", "--request", str(request), "--render", str(tmp_path / "x"),
                               config=config)
    assert refused.returncode == 2 and "not supported on this service" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_registry_that_does_not_answer_hits_the_time_limit(tmp_path: Path) -> None:
    import socket

    with socket.socket() as listener:  # accepts connections, never says a word
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        where = eflows_git.location(f"https://127.0.0.1:{listener.getsockname()[1]}/registry.git", tmp_path, "k")
        cache = eflows_git.GitCache(tmp_path / "cache", timeout=2)
        with pytest.raises(eflows_git.SourceError, match="did not finish within 2 s"):
            cache.resolve(where, "main")
