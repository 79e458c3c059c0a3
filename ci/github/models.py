"""GitHub's REST answers as pydantic models: what the project reads, checked before anyone uses it.

Every answer of `ci.github.client` is parsed from its bytes by one of these models, so an answer
that is not what GitHub documents (a missing key, a string where an id belongs, a page of 10,000
items, an HTML page, bytes that are not UTF-8) becomes one `BadAnswer` naming the endpoint and
the field, before the allocator or a task acts on half of it.

- Strict types: an id is a JSON integer, `busy` a JSON boolean; nothing is coerced ("12" is not 12).
- Unknown keys are ignored: GitHub adds fields without a new API version.
- Free text GitHub echoes from users (job, runner and label names) is kept to a length and its
  control characters are escaped, so a name cannot start a fake line in the allocator's log.
- A page holds at most `PER_PAGE` items (the most GitHub sends); more is a hostile answer.
- Secrets in answers (`encoded_jit_config`, an installation `token`) are `SecretStr`: they show as
  `**********` in a repr, a log line or a validation error.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

from ci.errors import printable

PER_PAGE = 100  # GitHub's largest page
T = TypeVar("T")


class Answer(BaseModel):
    """The base of every answer model: strict JSON types, unknown keys ignored, immutable."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


Id = Annotated[int, Field(ge=1, lt=2**63)]
Count = Annotated[int, Field(ge=0, lt=2**63)]
Text = Annotated[str, Field(max_length=1024), AfterValidator(printable)]
Label = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(printable)]
Status = Annotated[str, Field(max_length=64), AfterValidator(printable)]
Sha = Annotated[str, Field(pattern=r"^[0-9a-f]{40}([0-9a-f]{24})?$")]


class WorkflowRun(Answer):
    """One entry of `GET /repos/{repo}/actions/runs` (and of a workflow's runs)."""

    id: Id
    status: Status | None = None
    conclusion: Status | None = None
    head_sha: Sha | None = None
    head_branch: Text | None = None


class Job(Answer):
    """One entry of `GET /repos/{repo}/actions/runs/{run_id}/jobs`."""

    id: Id
    run_id: Id | None = None
    name: Text = ""
    status: Status = ""
    labels: Annotated[list[Label], Field(max_length=100)] = []
    runner_name: Text | None = None
    created_at: datetime | None = None

    @property
    def created(self) -> float | None:
        """`created_at` as epoch seconds."""
        return self.created_at.timestamp() if self.created_at is not None else None


class RunnerLabel(Answer):
    name: Label


class Runner(Answer):
    """One self-hosted runner of `GET .../actions/runners`."""

    id: Id
    name: Text
    status: Status = "offline"
    busy: bool = False
    labels: Annotated[list[RunnerLabel], Field(max_length=100)] = []

    @property
    def online(self) -> bool:
        return self.status == "online"

    @property
    def label_names(self) -> frozenset[str]:
        return frozenset(label.name for label in self.labels)


class Page(Answer, Generic[T]):
    """A page of a listing; `items` is the list under the key GitHub uses for that listing (its alias)."""

    total_count: Count | None = None
    items: list[T]


class RunsPage(Page[WorkflowRun]):
    items: Annotated[list[WorkflowRun], Field(alias="workflow_runs", max_length=PER_PAGE)]


class JobsPage(Page[Job]):
    items: Annotated[list[Job], Field(alias="jobs", max_length=PER_PAGE)]


class RunnersPage(Page[Runner]):
    items: Annotated[list[Runner], Field(alias="runners", max_length=PER_PAGE)]


class RunnerRef(Answer):
    id: Id


class JitConfig(Answer):
    """`POST .../actions/runners/generate-jitconfig` (201). The config is a credential."""

    runner: RunnerRef
    encoded_jit_config: Annotated[SecretStr, Field(min_length=1, max_length=65536)]


class InstallationToken(Answer):
    """`POST /app/installations/{id}/access_tokens` (201): an hour's token for the App's installation."""

    token: Annotated[SecretStr, Field(min_length=1, max_length=4096)]
    expires_at: datetime


class RateLimitResource(Answer):
    limit: Count
    remaining: Count
    reset: Annotated[int, Field(ge=0, lt=2**40)]
    used: Count | None = None


class RateLimitResources(Answer):
    core: RateLimitResource


class RateLimitAnswer(Answer):
    """`GET /rate_limit` (free: it does not count against the limit)."""

    resources: RateLimitResources
