"""The image-creation service end to end: a real uvicorn replica (`inv service.serve`) on loopback,
the real pipeline (Docker, the registry, Slurm, Charliecloud) on a bundled example, in an isolated
site and state folder.

One real build of `base` is shared by the page test (headless Chromium requests it and watches it
finish) and by two concurrent API requests that must join it; the download, library-mode and client
tests use that finished build. Cancel and kill -9 each cost one more (short) build.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ci.local import services as local
from tests.support.service_helpers import TERMINAL, ServiceProject, service_project, wait_status
from tests.support.services import require_chromium
from tests.support.site_helpers import EXAMPLES_DIR, slurm_jobs

pytestmark = [pytest.mark.e2e, pytest.mark.service]
SHARED: dict[str, Any] = {}
CANARY = f"canary-{uuid.uuid4().hex}"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProject]:
    yield from service_project(tmp_path_factory.mktemp("service-e2e"), definitions=EXAMPLES_DIR, shared_images=True)


@pytest.fixture(scope="module")
def tokens(project: ServiceProject) -> dict[str, str]:
    return {"alice": project.token("alice"), "bob": project.token("bob")}


@pytest.fixture(scope="module")
def server(project: ServiceProject, tokens: dict[str, str]) -> Any:
    return project.serve(env={"CI_CANARY_TOKEN": CANARY})  # a secret the builds inherit and must never show


def status_of(server: Any, token: str, build_id: str) -> dict[str, Any]:
    with server.client(token) as client:
        return dict(client.get(f"/build/{build_id}").json())


def test_page_requests_a_build_that_identical_requests_join_and_sees_it_finish(
        server: Any, tokens: dict[str, str], tmp_path: Path) -> None:
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=local.CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            http_credentials={"username": "alice", "password": tokens["alice"]})
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            assert page.text_content("#user") == "alice"
            page.select_option("#definition", "base")
            page.click("#request")
            page.wait_for_selector("#outcome:has-text('requested')", timeout=30_000)
            build_id = re.search(r"requested: ([0-9a-f]{32})", page.text_content("#outcome") or "")
            assert build_id, page.text_content("#outcome")
            alice_id = build_id.group(1)

            answers: list[dict[str, Any]] = []

            def ask() -> None:  # bob, twice at once, while alice's build is in flight
                with server.client(tokens["bob"]) as client:
                    answers.append(client.post("/build/", json={"definition": "base"}).json())

            threads = [threading.Thread(target=ask) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            page.wait_for_selector(f'tr[data-id="{alice_id}"][data-status="FINISHED"]', timeout=240_000)
            link = page.get_attribute(f'tr[data-id="{alice_id}"] .download a', "href")
            page.wait_for_function("document.querySelector('#log').textContent.includes('FINISHED')",
                                   timeout=30_000)
            log_text = page.text_content("#log") or ""
        finally:
            browser.close()
    alice = status_of(server, tokens["alice"], alice_id)
    bobs = [status_of(server, tokens["bob"], answer["id"]) for answer in answers]
    assert alice["status"] == "FINISHED" and link and link.endswith(alice["filename"])
    assert all(bob["key"] == alice["key"] and bob["status"] == "FINISHED" and bob["sha256"] == alice["sha256"]
               for bob in bobs)
    assert all(answer["attached"] for answer in answers) and alice["shared"] and alice["attempts"] == 1
    assert "convert" in log_text and "test-release" in log_text
    assert tokens["alice"] not in log_text
    SHARED.update(alice=alice, bob=bobs[0])


def test_download_matches_the_sha256_with_range_head_and_etag(server: Any, tokens: dict[str, str],
                                                              tmp_path: Path) -> None:
    if "alice" not in SHARED:
        pytest.fail("the shared build of the page test did not finish")
    alice, bob = SHARED["alice"], SHARED["bob"]
    with server.client(tokens["bob"]) as client:
        whole = client.get(alice["download_url"])
        assert whole.status_code == 200 and hashlib.sha256(whole.content).hexdigest() == alice["sha256"]
        assert whole.headers["etag"] == f'"{alice["sha256"]}"' and int(whole.headers["content-length"]) == alice["size"]
        part = client.get(alice["download_url"], headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == whole.content[100:200]
        head = client.head(alice["download_url"])
        assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == whole.headers["etag"]
        assert client.get(alice["download_url"], headers={"If-None-Match": whole.headers["etag"]}).status_code == 304
        assert client.get(alice["download_url"].replace("/images/", "/image_creation/images/")).status_code == 200
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        assert anonymous.get(alice["download_url"]).status_code == 401
    assert bob["filename"] == alice["filename"]
    stranger = server.project.token("mallory")
    with server.client(stranger) as client:
        assert client.get(alice["download_url"]).status_code == 404
        assert client.get(f"/build/{alice['id']}").status_code == 403


def test_library_mode_and_the_client(project: ServiceProject, server: Any, tokens: dict[str, str],
                                     tmp_path: Path) -> None:
    if "alice" not in SHARED:
        pytest.fail("the shared build of the page test did not finish")
    alice = SHARED["alice"]
    config = project.config_file("invoke-library.yaml")
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"definition": "base", "arch": "amd64", "force": False}))
    joined = project.site.inv("service.request", "--request", str(request), "--json", config=config)
    assert joined.returncode == 0, joined.stderr
    result = json.loads(joined.stdout)
    assert result["status"] == "FINISHED" and result["sha256"] == alice["sha256"], "served from the store"
    eflows = tmp_path / "eflows.json"
    eflows.write_text(json.dumps({"machine": {"platform": "linux/amd64", "architecture": "rome",
                                              "container_engine": "singularity"},
                                  "workflow": "minimal_workflow", "step_id": "wordcount", "force": False}))
    refused = project.site.inv("service.request", "--request", str(eflows), config=config)
    assert refused.returncode == 2 and "workflow registry" in refused.stderr and "Traceback" not in refused.stderr
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"definition": "../etc", "arch": 5}))
    bad = project.site.inv("service.request", "--request", str(broken), config=config)
    assert bad.returncode == 2 and "definition" in bad.stderr and "arch" in bad.stderr, bad.stderr
    env = {"CI_SERVICE_TOKEN": tokens["alice"], "CI_SERVICE_USER": "alice"}
    status = project.site.inv("service.client", "status", "--id", alice["id"], "--url", server.url, config=config,
                              env=env)
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "FINISHED", status.stderr
    download = project.site.inv("service.client", "download", "--id", alice["id"], "--out", str(tmp_path / "out"),
                                "--url", server.url, config=config, env=env)
    assert download.returncode == 0, download.stderr
    written = Path(download.stdout.strip().splitlines()[-1])
    assert hashlib.sha256(written.read_bytes()).hexdigest() == alice["sha256"]
    unauthorized = project.site.inv("service.client", "status", "--id", alice["id"], "--url", server.url,
                                    config=config, env={"CI_SERVICE_TOKEN": "cci_" + "x" * 43})
    assert unauthorized.returncode == 2 and "401" in unauthorized.stderr and "Traceback" not in unauthorized.stderr


def test_cancel_stops_a_running_build_and_its_jobs(project: ServiceProject, server: Any,
                                                   tokens: dict[str, str]) -> None:
    with server.client(tokens["alice"]) as client:
        build_id = client.post("/build/", json={"definition": "mpi"}).json()["id"]
        wait_status(lambda: status_of(server, tokens["alice"], build_id),
                    lambda s: s["status"] in ("BUILDING", "CONVERTING", "TESTING") or s["status"] in TERMINAL, 120,
                    "the mpi build to start")
        client.post(f"/build/{build_id}/cancel")
        final, _ = wait_status(lambda: status_of(server, tokens["alice"], build_id),
                               lambda s: s["status"] in TERMINAL, 120, "the cancel to take effect")
        assert final["status"] == "CANCELLED" and final["filename"] is None, final
        busy = re.search(r"^cic_pool_busy (\d+)", client.get("/metrics").text, re.M)
        assert busy and busy.group(1) == "0"
    prefix = f"{project.site.job_prefix}s"
    assert not slurm_jobs(prefix, all_states=False), "the cancelled run's batch jobs were left running"
    assert not _children(project), "the cancelled build's processes live on"


def _children(project: ServiceProject) -> list[str]:
    """Build processes (python -m ci.service.builder) of this project that are still alive."""
    marker = str(project.settings().builds_dir)
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "ci.service.builder" in command and marker in command:
                found.append(f"{proc.name}: {command}")
    return found


def test_kill_9_mid_build_then_restart_requeues_it(project: ServiceProject, server: Any,
                                                   tokens: dict[str, str]) -> None:
    with server.client(tokens["alice"]) as client:
        build_id = client.post("/build/", json={"definition": "base", "force": True}).json()["id"]
    wait_status(lambda: status_of(server, tokens["alice"], build_id),
                lambda s: s["status"] in ("CONVERTING", "TESTING") or s["status"] in TERMINAL, 180,
                "the forced build to reach its site steps")
    server.kill()
    deadline = time.monotonic() + 30
    while _children(project) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _children(project), "the build process outlived the killed server"
    server.start()
    final, seen = wait_status(lambda: status_of(server, tokens["alice"], build_id),
                              lambda s: s["status"] in TERMINAL, 300, "the re-queued build")
    assert final["status"] == "FINISHED" and final["attempts"] == 2, (final, seen)
    with server.client(tokens["alice"]) as client:
        log = client.get(f"/build/{build_id}/logs").text
    assert "=== attempt 1" in log and "=== re-queued: its worker" in log and "=== attempt 2" in log, log[-3000:]
    assert "Traceback" not in log


def test_no_build_is_left_active(project: ServiceProject, server: Any, tokens: dict[str, str]) -> None:
    with server.client(tokens["alice"]) as client:
        text = client.get("/metrics").text
    for status in ("STARTED", "BUILDING", "CONVERTING", "TESTING", "PENDING"):
        assert f'cic_builds{{status="{status}"}} 0' in text, text


def test_no_token_or_secret_reaches_a_file_a_log_or_a_response(project: ServiceProject, server: Any,
                                                                tokens: dict[str, str]) -> None:
    """Canaries: the users' tokens and a secret variable of the server's environment appear nowhere
    (state folder with database and logs, site, server output, and what the API answers)."""
    secrets = [CANARY, *tokens.values()]
    with server.client(tokens["alice"]) as client:
        answers = [client.get(path).text for path in ("/builds", "/metrics", "/openapi.json", "/")]
        answers += [client.get(f"/build/{build['id']}/logs").text for build in client.get("/builds").json()["builds"]]
    for text in answers:
        assert not any(secret in text for secret in secrets)
    searched = 0
    for path in project.root.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size < 20_000_000:
            data = path.read_bytes()
            searched += 1
            assert not any(secret.encode() in data for secret in secrets), f"a secret is in {path}"
    assert searched > 20
