"""The GitHub Actions endpoints the project calls, on the one client (`ci.github.client`).

Two front ends use them:
- the workflow's tasks: `inv gh.last-success` (the commit of the last successful run: the helper
  image is rebuilt when its inputs changed since then, not since `github.event.before`, because the
  concurrency group replaces a pending run and the replaced push's commits would never be compared)
  and `inv gh.runners --wait` (a VM bills from its start; if its runners never connect the prepare
  job would queue for 24 hours, so the start job waits for one online runner per label, with a
  deadline). They read `$GITHUB_API_URL`, `$GITHUB_REPOSITORY` and `$GITHUB_TOKEN` (`from_environment`);
- the runner allocator (`ci.runners`): queued and in-progress runs, their jobs, our runners, a
  runner's deletion and its just-in-time config.

Every answer arrives as a checked model of `ci.github.models`; a malformed one is a `BadAnswer`.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ci.errors import ConfigError, printable
from ci.github.client import GitHubClient, GitHubError, RateLimit, TokenAuth, check_api_url
from ci.github.models import JitConfig, Job, JobsPage, Runner, RunnersPage, RunsPage, WorkflowRun
from ci.validation import GITHUB_OWNER, GITHUB_REPOSITORY

REPOSITORY = re.compile(GITHUB_REPOSITORY + r"\Z")
ORGANISATION = re.compile(GITHUB_OWNER + r"\Z")
WORKFLOW = re.compile(r"(?:[A-Za-z0-9_-][A-Za-z0-9._-]{0,250}\.ya?ml|[0-9]{1,19})\Z")


@dataclass(frozen=True)
class Scope:
    """Where runners are registered: the repository, or (optionally) its organisation."""

    repository: str
    organisation: str | None = None

    def __post_init__(self) -> None:
        if not REPOSITORY.match(self.repository) or not self.repository.rpartition("/")[2].strip("."):
            raise ConfigError(f"{printable(self.repository[:120])!r} is not a repository owner/name; "
                              "write it like my-org/my-repo")
        if self.organisation is not None and not ORGANISATION.match(self.organisation):
            raise ConfigError(f"{printable(self.organisation[:60])!r} is not an organisation name; "
                              "write it like my-org")

    @property
    def runners_path(self) -> str:
        if self.organisation:
            return f"/orgs/{self.organisation}/actions/runners"
        return f"/repos/{self.repository}/actions/runners"


class Actions:
    """The few Actions endpoints we call, each answer read through its model."""

    def __init__(self, client: GitHubClient, scope: Scope):
        self.client = client
        self.scope = scope

    def close(self) -> None:
        self.client.close()

    def runs(self, status: str) -> list[WorkflowRun]:
        """The repository's workflow runs in `status` (queued, in_progress, ...), every page."""
        return list(self.client.pages(f"/repos/{self.scope.repository}/actions/runs", RunsPage, {"status": status}))

    def jobs(self, run_id: int) -> list[Job]:
        """The latest attempt's jobs of one run."""
        return list(self.client.pages(f"/repos/{self.scope.repository}/actions/runs/{int(run_id)}/jobs", JobsPage,
                                      {"filter": "latest"}))

    def runners(self) -> list[Runner]:
        """Every self-hosted runner of the scope (repository or organisation)."""
        return list(self.client.pages(self.scope.runners_path, RunnersPage))

    def delete_runner(self, runner_id: int) -> bool:
        """True when deleted now, False when GitHub no longer had it (a 422 means busy: a GitHubError)."""
        try:
            self.client.delete(f"{self.scope.runners_path}/{int(runner_id)}")
        except GitHubError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def generate_jitconfig(self, name: str, labels: list[str], runner_group_id: int,
                           work_folder: str) -> tuple[int, str]:
        """(runner id, encoded JIT config). The config is a secret: keep it off argv, logs and reports."""
        reply = self.client.request("POST", f"{self.scope.runners_path}/generate-jitconfig", JitConfig, ok=(201,),
                                    body={"name": name, "runner_group_id": runner_group_id, "labels": labels,
                                          "work_folder": work_folder})
        return reply.data.runner.id, reply.data.encoded_jit_config.get_secret_value()

    def rate_limit(self) -> RateLimit:
        return self.client.rate_limit()

    def last_successful_commit(self, workflow: str, branch: str) -> str | None:
        """The head commit of the newest successful run of `workflow` (file name or id) on `branch`."""
        check_workflow(workflow)
        reply = self.client.request("GET", f"/repos/{self.scope.repository}/actions/workflows/{workflow}/runs",
                                    RunsPage, params={"branch": branch, "status": "success", "per_page": 1})
        return reply.data.items[0].head_sha if reply.data.items else None


def check_workflow(workflow: str) -> str:
    """A workflow's file name (`containers-build.yml`) or numeric id, or a ConfigError."""
    if not WORKFLOW.match(workflow):
        raise ConfigError(f"{printable(workflow[:120])!r} is not a workflow file name or id; give the file name "
                          "under .github/workflows (like containers-build.yml) or the workflow's number")
    return workflow


def from_environment(environ: Mapping[str, str] | None = None, *, timeout: float = 20.0, retries: int = 3,
                     backoff: float = 1.0) -> Actions:
    """The workflow's view: $GITHUB_API_URL, $GITHUB_REPOSITORY and $GITHUB_TOKEN (never a flag)."""
    environ = os.environ if environ is None else environ
    repository = environ.get("GITHUB_REPOSITORY", "")
    if "/" not in repository:
        raise ConfigError("GITHUB_REPOSITORY (owner/name) is not set: run this in GitHub Actions or set it")
    auth = TokenAuth.from_environment("GITHUB_TOKEN", environ,
                                      "give the step a token through env: (never a flag)")
    scope = Scope(repository)
    api_url = check_api_url(environ.get("GITHUB_API_URL") or "https://api.github.com", "GITHUB_API_URL")
    return Actions(GitHubClient(api_url, auth, timeout=timeout, retries=retries, backoff=backoff), scope)


def missing_labels(found: Sequence[Runner], labels: Sequence[str]) -> list[str]:
    """The labels no online runner carries."""
    return [label for label in labels if not any(r.online and label in r.label_names for r in found)]


def wait_for_runners(actions: Actions, labels: Sequence[str], *, timeout: float, interval: float = 10.0,
                     say: Callable[[str], None] = lambda _: None, clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], None] = time.sleep) -> list[Runner]:
    """Wait until each label has an online runner; a CIError naming the missing ones after `timeout`."""
    if not labels:
        raise ConfigError("name at least one runner label to wait for (--label)")
    deadline = clock() + timeout
    while True:
        found = actions.runners()
        missing = missing_labels(found, labels)
        if not missing:
            return [r for r in found if r.online and r.label_names & set(labels)]
        if clock() >= deadline:
            seen = ", ".join(f"{r.name} ({'online' if r.online else 'offline'})" for r in found) or "none"
            raise GitHubError(f"no online runner with the label(s) {', '.join(printable(m) for m in missing)} after "
                              f"{timeout:.0f}s (runners: {seen}); the VM's runner services did not connect: check "
                              "the snapshot (OS_MY_IMAGE) and register the runners again "
                              "(docs/frontends/github-workflow.md, Runners)")
        say(f"waiting for runners with {', '.join(missing)} ({max(0.0, deadline - clock()):.0f}s left)")
        sleep(min(interval, max(0.0, deadline - clock())))
