"""The two questions the workflow asks GitHub's REST API: the commit of the last successful run, and
whether the build VM's runners came online (`inv gh.last-success`, `inv gh.runners --wait`).

- The helper image is rebuilt when its inputs changed since the last *successful* run, not since
  `github.event.before`: the concurrency group keeps one pending run and a newer push replaces it,
  so the replaced push's commits would never be compared.
- A VM bills from its start; if its runners never connect, the prepare job would queue for 24 hours.
  The start job waits for one online runner per label, with a deadline, and fails (teardown follows).

The token comes from the environment (`GITHUB_TOKEN`), never a flag; listing runners needs a token
with the repository's "Administration: read" permission (the workflow's `RUNNERS_TOKEN` secret).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from ci.errors import CIError, ConfigError

API_VERSION = "2022-11-28"


@dataclass(frozen=True)
class GitHub:
    """Where the API is, which repository, and the token (from $GITHUB_API_URL, $GITHUB_REPOSITORY, $GITHUB_TOKEN)."""

    api_url: str
    repository: str
    token: str
    timeout: float = 20.0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> GitHub:
        environ = os.environ if environ is None else environ
        repository = environ.get("GITHUB_REPOSITORY", "")
        token = environ.get("GITHUB_TOKEN", "")
        if "/" not in repository:
            raise ConfigError("GITHUB_REPOSITORY (owner/name) is not set: run this in GitHub Actions or set it")
        if not token:
            raise ConfigError("GITHUB_TOKEN is not set: give the step a token through env: (never a flag)")
        return cls(environ.get("GITHUB_API_URL", "https://api.github.com").rstrip("/"), repository, token)

    def get(self, path: str, params: Mapping[str, str | int] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/vnd.github+json",
                   "X-GitHub-Api-Version": API_VERSION}
        url = f"{self.api_url}/repos/{self.repository}/{path.lstrip('/')}"
        try:
            answer = httpx.get(url, params=dict(params or {}), headers=headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise CIError(f"GitHub's API at {self.api_url} did not answer: {type(exc).__name__}: {exc}") from None
        if answer.status_code in (401, 403, 404):
            raise CIError(f"GitHub's API refused {path} ({answer.status_code}): the token lacks the permission, "
                          f"or {self.repository} is wrong")
        if answer.status_code != 200:
            raise CIError(f"GitHub's API answered {answer.status_code} to {path}")
        try:
            return answer.json()
        except ValueError:
            raise CIError(f"GitHub's API answered {path} with something that is not JSON") from None


def last_successful_commit(github: GitHub, workflow: str, branch: str) -> str | None:
    """The head commit of the newest successful run of `workflow` (file name or id) on `branch`."""
    data = github.get(f"actions/workflows/{workflow}/runs", {"branch": branch, "status": "success", "per_page": 1})
    runs = data.get("workflow_runs") if isinstance(data, dict) else None
    if not runs:
        return None
    sha = runs[0].get("head_sha")
    return str(sha) if isinstance(sha, str) and sha else None


@dataclass(frozen=True)
class Runner:
    name: str
    online: bool
    labels: frozenset[str]


def runners(github: GitHub) -> list[Runner]:
    """Every self-hosted runner of the repository (all pages)."""
    found: list[Runner] = []
    page = 1
    while True:
        data = github.get("actions/runners", {"per_page": 100, "page": page})
        listed = data.get("runners") if isinstance(data, dict) else None
        if not isinstance(listed, list):
            raise CIError("GitHub's API answered actions/runners without a runners list")
        for item in listed:
            labels = frozenset(str(label.get("name")) for label in item.get("labels") or [] if isinstance(label, dict))
            found.append(Runner(str(item.get("name")), item.get("status") == "online", labels))
        if len(listed) < 100:
            return found
        page += 1


def missing_labels(found: Sequence[Runner], labels: Sequence[str]) -> list[str]:
    """The labels no online runner carries."""
    return [label for label in labels if not any(r.online and label in r.labels for r in found)]


def wait_for_runners(github: GitHub, labels: Sequence[str], *, timeout: float, interval: float = 10.0,
                     say: Callable[[str], None] = lambda _: None, clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], None] = time.sleep) -> list[Runner]:
    """Wait until each label has an online runner; a CIError naming the missing ones after `timeout`."""
    if not labels:
        raise ConfigError("name at least one runner label to wait for (--label)")
    deadline = clock() + timeout
    while True:
        found = runners(github)
        missing = missing_labels(found, labels)
        if not missing:
            return [r for r in found if r.online and r.labels & set(labels)]
        if clock() >= deadline:
            seen = ", ".join(f"{r.name} ({'online' if r.online else 'offline'})" for r in found) or "none"
            raise CIError(f"no online runner with the label(s) {', '.join(missing)} after {timeout:.0f}s "
                          f"(runners: {seen}); the VM's runner services did not connect: check the snapshot "
                          "(OS_MY_IMAGE) and register the runners again (docs/frontends/github-workflow.md, Runners)")
        say(f"waiting for runners with {', '.join(missing)} ({max(0.0, deadline - clock()):.0f}s left)")
        sleep(min(interval, max(0.0, deadline - clock())))
