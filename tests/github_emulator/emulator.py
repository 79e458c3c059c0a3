"""A small GitHub Actions API on 127.0.0.1, for the runner allocator's tests and benchmarks.

It implements the documented endpoints the allocator calls, with GitHub's behaviour where it
matters to a client:
  GET    /repos/{owner}/{repo}/actions/runs?status=queued|in_progress   (paginated, newest first)
  GET    /repos/{owner}/{repo}/actions/runs/{run_id}/jobs?filter=latest
  GET    /repos/{owner}/{repo}/actions/runners, /orgs/{org}/actions/runners
  DELETE /repos/{owner}/{repo}/actions/runners/{id} (and /orgs/...): 204, 404, 422 while busy
  POST   /repos/{owner}/{repo}/actions/runners/generate-jitconfig (and /orgs/...): 201, 409 name taken
  GET    /rate_limit
  POST   /app/installations/{id}/access_tokens (a GitHub App's JWT, RS256, checked with its public key)
Every page carries `Link` (rel="next"/"last"), an `ETag`, and `X-RateLimit-*`; a matching
`If-None-Match` gets `304 Not Modified` and costs no rate limit. Faults, set on `faults` or with
POST /_emulator/faults: `server_error: N` (the next N API calls answer 502), `rate_limit:
{status: 403|429, retry_after: S, count: N}` (secondary limit), `remaining: N` (the primary limit's
budget; at 0 calls answer 403 until the reset), `answers: [{method, path, status, headers, body, count}]`
(the next `count` calls of that exact path get these raw bytes instead of the API's answer: HTML,
broken JSON, a wrong shape; for the client's hostile-answer tests; set on `faults` directly).

Runners: generate-jitconfig registers an offline runner and returns `encoded_jit_config`
(base64 JSON with this emulator's URL and a per-runner secret). The stand-in runner program
(tests/github_emulator/runner.py) connects with it, then asks for work: like GitHub, the emulator
hands it the oldest queued job whose labels are a subset of the runner's labels (which is how one
runner can "steal" the job another was started for). A completed job's ephemeral runner is removed.

Scenario control, without GitHub's auth: POST /_emulator/runs {"jobs": [{"labels": [...]}]},
POST /_emulator/runs/{id}/jobs (a job that becomes queued while its run is in progress),
POST /_emulator/runs/{id}/cancel, GET /_emulator/summary. With `webhook=(url, secret)` each new
queued job is also delivered as a signed `workflow_job` event.
"""

from __future__ import annotations

import base64
import collections
import datetime
import hashlib
import hmac
import itertools
import json
import secrets
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.support.http_emulator import Answer, HTTPEmulator

TOKEN = "ghp_emulatorTOKENcanary0123456789abcdef"
REPOSITORY = "octo-org/hpc-app"
RATE_LIMIT = 5000
RATE_WINDOW = 3600


def iso(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class Job:
    id: int
    run_id: int
    name: str
    labels: list[str]
    duration: float = 0.0
    status: str = "queued"
    conclusion: str | None = None
    runner_id: int | None = None
    runner_name: str | None = None
    steps: list[str] = field(default_factory=list)  # shell commands the stand-in runner runs, in order
    created: float = field(default_factory=time.time)
    queued_at: float = field(default_factory=time.monotonic)
    started: float | None = None
    completed: float | None = None

    def as_api(self, repository: str) -> dict[str, Any]:
        return {
            "id": self.id, "run_id": self.run_id, "name": self.name, "labels": list(self.labels),
            "status": self.status, "conclusion": self.conclusion, "runner_id": self.runner_id,
            "runner_name": self.runner_name, "runner_group_id": 1 if self.runner_id else None,
            "created_at": iso(self.created), "started_at": iso(self.started) if self.started else None,
            "completed_at": iso(self.completed) if self.completed else None, "head_branch": "main",
            "url": f"https://api.github.com/repos/{repository}/actions/jobs/{self.id}", "workflow_name": "CI",
        }


@dataclass
class Run:
    id: int
    name: str
    jobs: list[Job] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    cancelled: bool = False

    @property
    def status(self) -> str:
        states = {job.status for job in self.jobs}
        if not states or states == {"completed"}:
            return "completed"
        if states == {"queued"}:
            return "queued"
        return "in_progress"

    def as_api(self, repository: str) -> dict[str, Any]:
        status = self.status
        conclusion = None
        if status == "completed":
            conclusion = "cancelled" if self.cancelled else "success"
        return {"id": self.id, "name": self.name, "status": status, "conclusion": conclusion,
                "created_at": iso(self.created), "updated_at": iso(self.updated), "run_attempt": 1,
                "event": "push", "head_branch": "main", "repository": {"full_name": repository}}


@dataclass
class Runner:
    id: int
    name: str
    labels: list[str]
    secret: str
    status: str = "offline"
    busy: bool = False
    job_id: int | None = None

    def as_api(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "os": "Linux", "status": self.status, "busy": self.busy,
                "ephemeral": True, "runner_group_id": 1,
                "labels": [{"id": i + 1, "name": label, "type": "custom"} for i, label in enumerate(self.labels)]}


@dataclass
class GitHub:
    """The emulated repository's Actions state."""

    repository: str = REPOSITORY
    organisation: str | None = None
    token: str = TOKEN
    faults: dict[str, Any] = field(default_factory=dict)
    runs: dict[int, Run] = field(default_factory=dict)
    jobs: dict[int, Job] = field(default_factory=dict)
    runners: dict[int, Runner] = field(default_factory=dict)
    limit: int = RATE_LIMIT  # calls per hour (GitHub's default for a token; Apps and Enterprise have more)
    remaining: int = RATE_LIMIT
    reset: float = field(default_factory=lambda: time.time() + RATE_WINDOW)
    jit_configs: list[str] = field(default_factory=list)  # every config handed out (for canary checks)
    deleted_runners: list[str] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)  # runner names, in order of generate-jitconfig
    served: dict[int, list[str]] = field(default_factory=dict)  # job id -> runners that took it
    completed_jobs: int = 0
    connected: dict[str, float] = field(default_factory=dict)  # runner name -> when it first connected (epoch)
    app: tuple[int, int, Any] | None = None  # (app id, installation id, RSA public key)
    app_tokens: set[str] = field(default_factory=set)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1000))

    def next_id(self) -> int:
        return next(self._ids)

    def active_runs(self) -> list[Run]:
        return [run for run in self.runs.values() if run.status != "completed"]


class Emulator(HTTPEmulator[tuple[str, str, int]]):
    """The HTTP front of a `GitHub`: start() serves it from a thread on 127.0.0.1."""

    thread_name = "github-emulator"

    def __init__(self, github: GitHub | None = None, *, port: int = 0, host: str = "127.0.0.1",
                 webhook: tuple[str, bytes] | None = None, keep_requests: int = 2000):
        super().__init__(port=port, host=host, keep_requests=keep_requests)
        self.github = github or GitHub()
        self.webhook = webhook
        self.counts: collections.Counter[str] = collections.Counter()
        self.webhook_deliveries: list[int] = []

    # ---- scenario control (also over HTTP under /_emulator) ------------------------------------------
    def add_run(self, jobs: list[dict[str, Any]], name: str = "CI") -> Run:
        with self.lock:
            run = Run(self.github.next_id(), name)
            self.github.runs[run.id] = run
            for spec in jobs:
                self._add_job(run, spec)
            return run

    def add_job(self, run_id: int, spec: dict[str, Any]) -> Job:
        with self.lock:
            return self._add_job(self.github.runs[run_id], spec)

    def _add_job(self, run: Run, spec: dict[str, Any]) -> Job:
        job = Job(self.github.next_id(), run.id, str(spec.get("name") or f"job-{len(run.jobs) + 1}"),
                  [str(label) for label in spec.get("labels", ["self-hosted"])], float(spec.get("duration", 0)),
                  steps=[str(step) for step in spec.get("steps", [])])
        run.jobs.append(job)
        run.updated = time.time()
        self.github.jobs[job.id] = job
        if self.webhook is not None:
            self._deliver(job)
        return job

    def cancel_run(self, run_id: int) -> None:
        with self.lock:
            run = self.github.runs[run_id]
            run.cancelled = True
            for job in run.jobs:
                if job.status != "completed":
                    job.status, job.conclusion, job.completed = "completed", "cancelled", time.time()
            run.updated = time.time()

    def summary(self) -> dict[str, Any]:
        with self.lock:
            github = self.github
            jobs = list(github.jobs.values())
            return {
                "jobs": len(jobs), "queued": sum(j.status == "queued" for j in jobs),
                "in_progress": sum(j.status == "in_progress" for j in jobs),
                "completed": sum(j.status == "completed" for j in jobs),
                "success": sum(j.conclusion == "success" for j in jobs),
                "runners": len(github.runners), "registered": len(github.registered),
                "deleted": len(github.deleted_runners), "remaining": github.remaining,
                "served_twice": [job_id for job_id, names in github.served.items() if len(names) > 1],
                "counts": dict(self.counts),
            }

    def _deliver(self, job: Job) -> None:
        assert self.webhook is not None
        url, secret = self.webhook
        payload = json.dumps({"action": "queued", "workflow_job": job.as_api(self.github.repository),
                              "repository": {"full_name": self.github.repository}}).encode()
        signature = "sha256=" + hmac.new(secret, payload, hashlib.sha256).hexdigest()

        def send() -> None:
            request = urllib.request.Request(url, data=payload, method="POST", headers={
                "Content-Type": "application/json", "X-GitHub-Event": "workflow_job",
                "X-GitHub-Delivery": secrets.token_hex(8), "X-Hub-Signature-256": signature})
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    self.webhook_deliveries.append(response.status)
            except OSError as exc:
                self.webhook_deliveries.append(getattr(exc, "code", 0) or 0)

        threading.Thread(target=send, daemon=True).start()

    # ---- the API -------------------------------------------------------------------------------
    def hostile(self, method: str, target: str) -> tuple[int, dict[str, str], bytes] | None:
        """The raw answer `faults["answers"]` holds for this call, if any (used up by `count`)."""
        path = urlsplit(target).path
        with self.lock:
            queue = self.github.faults.get("answers") or []
            for index, spec in enumerate(queue):
                if spec["path"] == path and spec.get("method", "GET") == method:
                    spec["count"] = spec.get("count", 1) - 1
                    if spec["count"] <= 0:
                        del queue[index]
                    self.counts[f"{method} {_shape(path)}"] += 1
                    body = spec.get("body", b"")
                    return (int(spec.get("status", 200)), dict(spec.get("headers", {})),
                            body.encode() if isinstance(body, str) else bytes(body))
        return None

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(target)
        path = parts.path.rstrip("/") or "/"
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        if path.startswith("/_emulator/"):
            return self._control(method, path, body)
        with self.lock:
            self.counts[f"{method} {_shape(path)}"] += 1
            if path.startswith("/app/installations/"):
                return self._app_token(path, headers)
            self._authorise(headers)
            github = self.github
            if github.faults.get("server_error", 0) > 0:
                github.faults["server_error"] -= 1
                raise HttpError(502, "Server Error")
            limited = github.faults.get("rate_limit")
            if limited and limited.get("count", 1) > 0:
                limited["count"] = limited.get("count", 1) - 1
                raise HttpError(int(limited.get("status", 429)),
                                "You have exceeded a secondary rate limit. Please wait a few minutes before you try "
                                "again.", {"Retry-After": str(limited.get("retry_after", 1))})
            if time.time() >= github.reset:
                github.remaining, github.reset = github.limit, time.time() + RATE_WINDOW
            if "remaining" in github.faults:
                github.remaining = int(github.faults.pop("remaining"))
            if path == "/rate_limit":
                core = {"limit": github.limit, "remaining": github.remaining, "reset": int(github.reset),
                        "used": github.limit - github.remaining}
                return 200, {"resources": {"core": core}, "rate": core}, {}
            if github.remaining <= 0:
                raise HttpError(403, "API rate limit exceeded for installation.", {"X-RateLimit-Remaining": "0"})
            status, data, extra = self._route(method, path, query, body)
            etag = 'W/"' + hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:40] + '"'
            if method == "GET" and status == 200:
                extra["ETag"] = etag
                if headers.get("if-none-match") == etag:
                    return 304, None, extra  # a conditional hit costs no rate limit
            github.remaining -= 1
            return status, data, extra

    def rate_headers(self) -> dict[str, str]:
        github = self.github
        return {"X-RateLimit-Limit": str(github.limit), "X-RateLimit-Remaining": str(max(github.remaining, 0)),
                "X-RateLimit-Reset": str(int(github.reset)), "X-RateLimit-Used": str(github.limit - github.remaining),
                "X-RateLimit-Resource": "core"}

    def answer(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Answer:
        """GitHub's answer: JSON (none for 204/304), rate-limit headers on the API, errors worded as GitHub does;
        a raw answer of `faults["answers"]` (hostile bytes) instead, when one is set for this call."""
        raw = self.hostile(method, target)
        if raw is not None:
            status, extra, payload = raw
            self.requests.append((method, target, status))
            return Answer(status, payload, extra)
        try:
            status, data, extra = self.handle(method, target, {k.lower(): v for k, v in headers.items()}, body)
        except HttpError as error:
            status, data, extra = error.status, {"message": error.message,
                                                 "documentation_url": "https://docs.github.com/rest"}, error.headers
        except Exception as error:  # an emulator bug answers 500, as a server would
            status, data, extra = 500, {"message": f"emulator error: {type(error).__name__}: {error}"}, {}
        self.requests.append((method, target, status))
        payload = b"" if status in (204, 304) or data is None else json.dumps(data).encode()
        if not target.startswith("/_emulator/"):
            rate = self.rate_headers()
            rate.update({k: v for k, v in extra.items() if k.startswith("X-RateLimit")})
            extra = {**extra, **rate}
        if payload:
            extra = {**extra, "Content-Type": "application/json; charset=utf-8"}
        return Answer(status, payload, extra)

    def _authorise(self, headers: dict[str, str]) -> None:
        value = headers.get("authorization", "")
        token = value.split(" ", 1)[1] if " " in value else ""
        if token != self.github.token and token not in self.github.app_tokens:
            raise HttpError(401, "Bad credentials")

    def _app_token(self, path: str, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        if self.github.app is None:
            raise HttpError(404, "Not Found")
        app_id, installation_id, public_key = self.github.app
        if path != f"/app/installations/{installation_id}/access_tokens":
            raise HttpError(404, "Not Found")
        token = headers.get("authorization", "").removeprefix("Bearer ")
        if not _valid_jwt(token, app_id, public_key):
            raise HttpError(401, "A JSON web token could not be decoded")
        issued = "ghs_" + secrets.token_hex(18)
        self.github.app_tokens.add(issued)
        return 201, {"token": issued, "expires_at": iso(time.time() + 3600)}, {}

    def _runner_scope(self, path: str) -> str | None:
        github = self.github
        if github.organisation and path.startswith(f"/orgs/{github.organisation}/actions/runners"):
            return path[len(f"/orgs/{github.organisation}/actions/runners"):]
        if not github.organisation and path.startswith(f"/repos/{github.repository}/actions/runners"):
            return path[len(f"/repos/{github.repository}/actions/runners"):]
        return None

    def _route(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
        github = self.github
        runs_path = f"/repos/{github.repository}/actions/runs"
        if method == "GET" and path == runs_path:
            status = query.get("status")
            runs = [run for run in (github.active_runs() if status in ("queued", "in_progress")
                                    else github.runs.values()) if status is None or run.status == status]
            runs.sort(key=lambda run: -run.id)
            return self._page(path, query, "workflow_runs", [run.as_api(github.repository) for run in runs])
        if method == "GET" and path.startswith(runs_path + "/") and path.endswith("/jobs"):
            run = github.runs.get(int(path[len(runs_path) + 1:-len("/jobs")]))
            if run is None:
                raise HttpError(404, "Not Found")
            return self._page(path, query, "jobs", [job.as_api(github.repository) for job in run.jobs])
        rest = self._runner_scope(path)
        if rest is None:
            raise HttpError(404, "Not Found")
        if method == "GET" and rest == "":
            runners = sorted(github.runners.values(), key=lambda runner: runner.id)
            return self._page(path, query, "runners", [runner.as_api() for runner in runners])
        if method == "POST" and rest == "/generate-jitconfig":
            data = json.loads(body or b"{}")
            name, labels = str(data.get("name", "")), [str(label) for label in data.get("labels", [])]
            if not name or not labels or "runner_group_id" not in data:
                raise HttpError(422, "Invalid request: name, runner_group_id and labels are required")
            if any(runner.name == name for runner in github.runners.values()):
                raise HttpError(409, "Already exists - A runner with the same name already exists.")
            runner = Runner(github.next_id(), name, labels, secrets.token_hex(16))
            github.runners[runner.id] = runner
            github.registered.append(name)
            config = base64.b64encode(json.dumps({"url": self.url, "runner_id": runner.id, "name": name,
                                                  "secret": runner.secret,
                                                  "work_folder": str(data.get("work_folder") or "_work")}
                                                 ).encode()).decode()
            github.jit_configs.append(config)
            return 201, {"runner": runner.as_api(), "encoded_jit_config": config}, {}
        if method == "DELETE" and rest.startswith("/") and rest[1:].isdigit():
            runner = github.runners.get(int(rest[1:]))
            if runner is None:
                raise HttpError(404, "Not Found")
            if runner.busy:
                raise HttpError(422, "Bad request - Runner is still running a job")
            del github.runners[runner.id]
            github.deleted_runners.append(runner.name)
            return 204, None, {}
        raise HttpError(404, "Not Found")

    def _page(self, path: str, query: dict[str, str], key: str, items: list[dict[str, Any]]
              ) -> tuple[int, Any, dict[str, str]]:
        per_page = max(1, min(int(query.get("per_page", 30)), 100))
        page = max(1, int(query.get("page", 1)))
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page: page * per_page]
        links = []
        base = {k: v for k, v in query.items() if k != "page"}
        if page < last:
            links.append(f'<{self.url}{path}?{urlencode({**base, "page": page + 1})}>; rel="next"')
            links.append(f'<{self.url}{path}?{urlencode({**base, "page": last})}>; rel="last"')
        headers = {"Link": ", ".join(links)} if links else {}
        return 200, {"total_count": len(items), key: chunk}, headers

    # ---- what the stand-in runner calls --------------------------------------------------------
    def _control(self, method: str, path: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
        data = json.loads(body or b"{}") if body else {}
        with self.lock:
            github = self.github
            if path.startswith("/_emulator/runner/"):
                runner = next((r for r in github.runners.values() if r.secret == data.get("secret")), None)
                if runner is None:
                    raise HttpError(401, "unknown runner (deleted, or a bad config)")
                action = path.rsplit("/", 1)[1]
                if action == "connect":
                    runner.status = "online"
                    github.connected.setdefault(runner.name, time.time())
                    return 200, {"id": runner.id, "name": runner.name, "labels": runner.labels}, {}
                if action == "acquire":
                    return self._acquire(runner)
                if action == "complete":
                    job = github.jobs[int(data["job_id"])]
                    if job.status == "in_progress" and job.runner_id == runner.id:
                        conclusion = "failure" if data.get("conclusion") == "failure" else "success"
                        job.status, job.conclusion, job.completed = "completed", conclusion, time.time()
                        github.completed_jobs += 1
                        github.runs[job.run_id].updated = time.time()
                    del github.runners[runner.id]  # ephemeral: gone after its one job
                    return 200, {"conclusion": job.conclusion}, {}
                raise HttpError(404, "Not Found")
            if method == "POST" and path == "/_emulator/faults":
                github.faults.update(data)
                return 200, github.faults, {}
            if method == "POST" and path == "/_emulator/runs":
                run = self.add_run(list(data.get("jobs", [])), str(data.get("name", "CI")))
                return 201, {"id": run.id, "jobs": [job.id for job in run.jobs]}, {}
            if method == "POST" and path.startswith("/_emulator/runs/") and path.endswith("/jobs"):
                job = self.add_job(int(path.split("/")[3]), data)
                return 201, {"id": job.id}, {}
            if method == "POST" and path.startswith("/_emulator/runs/") and path.endswith("/cancel"):
                self.cancel_run(int(path.split("/")[3]))
                return 200, {}, {}
            if method == "GET" and path == "/_emulator/summary":
                return 200, self.summary(), {}
        raise HttpError(404, "Not Found")

    def _acquire(self, runner: Runner) -> tuple[int, Any, dict[str, str]]:
        github = self.github
        if runner.busy:
            raise HttpError(409, "runner already has a job")
        mine = {label.lower() for label in runner.labels}
        for run in sorted(github.active_runs(), key=lambda r: r.id):
            for job in run.jobs:
                if job.status == "queued" and {label.lower() for label in job.labels} <= mine:
                    job.status, job.started = "in_progress", time.time()
                    job.runner_id, job.runner_name = runner.id, runner.name
                    runner.busy, runner.job_id = True, job.id
                    run.updated = time.time()
                    github.served.setdefault(job.id, []).append(runner.name)
                    return 200, {"job": job.as_api(github.repository), "duration": job.duration,
                                 "steps": list(job.steps)}, {}
        return 200, {"job": None}, {}


def _shape(path: str) -> str:
    return "/".join("{id}" if part.isdigit() else part for part in path.split("/"))


def _valid_jwt(token: str, app_id: int, public_key: Any) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    def unpad(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    try:
        header, payload, signature = token.split(".")
        public_key.verify(unpad(signature), f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
        claims = json.loads(unpad(payload))
    except (ValueError, InvalidSignature):
        return False
    return str(claims.get("iss")) == str(app_id) and claims.get("exp", 0) > time.time()


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll `condition` until true; a clear failure naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
