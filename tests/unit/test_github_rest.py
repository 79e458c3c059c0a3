"""`inv gh.last-success` and `inv gh.runners --wait` (ci.github.actions on the one client) against an emulated
GitHub REST API on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from ci.errors import CIError
from ci.github.actions import Actions, Scope, from_environment, wait_for_runners
from ci.github.client import GitHubClient, TokenAuth
from tests.support.paths import PROJECT_DIR

TOKEN = "ghs_canary_token_0123456789"


class FakeGitHub:
    """The two endpoints we call, with state a test can change while the server runs."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []
        self.runners: list[dict[str, Any]] = []
        self.requests: list[tuple[str, dict[str, list[str]], str]] = []
        self.after_requests: dict[int, list[dict[str, Any]]] = {}  # runner list from the n-th listing on

    def answer(self, path: str, query: dict[str, list[str]], auth: str) -> tuple[int, Any]:
        self.requests.append((path, query, auth))
        if auth != f"Bearer {TOKEN}":
            return 401, {"message": "Bad credentials"}
        if path == "/repos/org/repo/actions/workflows/containers-build.yml/runs":
            wanted = [run for run in self.runs if run["status"] == query.get("status", [""])[0]
                      and run["head_branch"] == query.get("branch", [""])[0]]
            return 200, {"total_count": len(wanted), "workflow_runs": wanted[:1]}
        if path == "/repos/org/repo/actions/runners":
            listings = sum(1 for p, _, _ in self.requests if p == path)
            current = self.runners
            for count, listed in sorted(self.after_requests.items()):
                if listings >= count:
                    current = listed
            return 200, {"total_count": len(current), "runners": current}
        return 404, {"message": "Not Found"}


@pytest.fixture
def fake() -> Iterator[tuple[FakeGitHub, str]]:
    state = FakeGitHub()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            status, body = state.answer(url.path, parse_qs(url.query), self.headers.get("Authorization", ""))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def runner(name: str, label: str, status: str = "online") -> dict[str, Any]:
    return {"id": zlib.crc32(name.encode()) % 1000 + 1, "name": name, "os": "linux", "status": status, "busy": False,
            "labels": [{"name": "self-hosted"}, {"name": label}]}


def github_at(url: str, token: str = TOKEN, timeout: float = 20.0) -> Actions:
    client = GitHubClient(url, TokenAuth(token, "GITHUB_TOKEN"), timeout=timeout, backoff=0.01)
    return Actions(client, Scope("org/repo"))


def inv(url: str, tmp_path: Path, *args: str, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
    output = tmp_path / "github_output"
    env = {**os.environ, "GITHUB_API_URL": url, "GITHUB_REPOSITORY": "org/repo", "GITHUB_TOKEN": token,
           "GITHUB_OUTPUT": str(output), "GITHUB_REF_NAME": "main",
           "GITHUB_WORKFLOW_REF": "org/repo/.github/workflows/containers-build.yml@refs/heads/main"}
    return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(PROJECT_DIR), *args], cwd=PROJECT_DIR,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_last_successful_runs_commit_not_the_pushs_before(fake: tuple[FakeGitHub, str], tmp_path: Path) -> None:
    state, url = fake
    state.runs = [{"id": 11, "status": "success", "head_branch": "main", "head_sha": "a" * 40},
                  {"id": 12, "status": "success", "head_branch": "other", "head_sha": "b" * 40}]
    process = inv(url, tmp_path, "gh.last-success", "--output", "since")
    assert process.returncode == 0, process.stderr
    assert "last successful run of containers-build.yml on main" in process.stdout
    assert (tmp_path / "github_output").read_text() == f"since={'a' * 40}\n"
    path, query, _ = state.requests[-1]
    assert path.endswith("/workflows/containers-build.yml/runs") and query["status"] == ["success"]
    assert TOKEN not in process.stdout + process.stderr


def test_no_successful_run_yet_or_no_answer_counts_as_changed(fake: tuple[FakeGitHub, str], tmp_path: Path) -> None:
    _, url = fake
    process = inv(url, tmp_path, "gh.last-success")
    assert process.returncode == 0, process.stderr
    assert (tmp_path / "github_output").read_text() == f"since={'0' * 40}\n"
    (tmp_path / "github_output").unlink()
    refused = inv(url, tmp_path, "gh.last-success", token="wrong")
    assert refused.returncode == 0 and "401" in refused.stdout
    assert (tmp_path / "github_output").read_text() == f"since={'0' * 40}\n"


def test_waiting_for_runners_until_every_label_is_online(fake: tuple[FakeGitHub, str]) -> None:
    state, url = fake
    state.runners = [runner("main", "cpouta", "offline")]
    state.after_requests = {2: [runner("main", "cpouta"), runner("transfer", "cpouta-transfer", "offline")],
                            3: [runner("main", "cpouta"), runner("transfer", "cpouta-transfer")]}
    github = github_at(url)
    found = wait_for_runners(github, ["cpouta", "cpouta-transfer"], timeout=60, interval=0.01)
    assert {r.name for r in found} == {"main", "transfer"}
    assert sum(1 for path, _, _ in state.requests if path.endswith("/runners")) == 3


def test_runners_that_never_come_online_fail_the_job(fake: tuple[FakeGitHub, str], tmp_path: Path) -> None:
    state, url = fake
    state.runners = [runner("main", "cpouta"), runner("test-1", "cpouta-test", "offline")]
    process = inv(url, tmp_path, "gh.runners", "--wait", "--label", "cpouta", "--label", "cpouta-test",
                  "--timeout", "1", "--interval", "0.2")
    assert process.returncode != 0
    assert "no online runner with the label(s) cpouta-test" in process.stderr
    assert "test-1 (offline)" in process.stderr


def test_the_api_errors_are_sentences(fake: tuple[FakeGitHub, str]) -> None:
    _, url = fake
    with pytest.raises(CIError, match=r"refused .*401"):
        github_at(url, "nope").runners()
    with pytest.raises(CIError, match="did not answer"):
        github_at("http://127.0.0.1:9", timeout=2).last_successful_commit("x.yml", "main")
    with pytest.raises(CIError, match="GITHUB_TOKEN"):
        from_environment({"GITHUB_REPOSITORY": "org/repo"})
