"""The one GitHub client (ci.github) against the emulated API: ETags/304, pagination, rate limits, retries,
JIT, App auth, as the runner allocator uses it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci.github.actions import Actions, Scope
from ci.github.client import AppAuth, GitHubClient, GitHubError, RateLimited, TokenAuth
from tests.github_emulator import REPOSITORY, TOKEN, Emulator, GitHub


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator() as running:
        yield running


def actions(emulator: Emulator, **options: float) -> Actions:
    client = GitHubClient(emulator.url, TokenAuth(TOKEN), backoff=0.01, **options)  # type: ignore[arg-type]
    return Actions(client, Scope(REPOSITORY, emulator.github.organisation))


def test_an_idle_poll_is_two_conditional_requests_answered_304(emulator: Emulator) -> None:
    github = actions(emulator)
    assert github.runs("queued") == [] and github.runs("in_progress") == []
    remaining = emulator.github.remaining
    calls, not_modified = github.client.calls, github.client.not_modified
    github.runs("queued")
    github.runs("in_progress")
    assert github.client.calls - calls == 2 and github.client.not_modified - not_modified == 2
    assert emulator.github.remaining == remaining  # a 304 costs no rate limit
    assert github.client.rate.remaining == remaining and github.client.rate.limit == 5000


def test_every_page_is_read_and_a_change_is_seen_through_the_etag(emulator: Emulator) -> None:
    for _ in range(230):
        emulator.add_run([{"labels": ["slurm"]}])
    github = actions(emulator)
    assert len(github.runs("queued")) == 230
    assert github.client.calls == 3  # 100 + 100 + 30
    emulator.add_run([{"labels": ["slurm"]}])
    assert len(github.runs("queued")) == 231  # newest first: every page shifted, none answered 304
    assert (github.client.calls, github.client.not_modified) == (6, 0)
    assert len(github.runs("queued")) == 231
    assert (github.client.calls, github.client.not_modified) == (9, 3)


def test_jobs_of_a_run_and_their_labels(emulator: Emulator) -> None:
    run = emulator.add_run([{"labels": ["self-hosted", "slurm"], "name": "build"}])
    (job,) = actions(emulator).jobs(run.id)
    assert job.status == "queued" and job.labels == ["self-hosted", "slurm"] and job.name == "build"


def test_server_errors_are_retried_with_backoff(emulator: Emulator) -> None:
    emulator.github.faults["server_error"] = 2
    github = actions(emulator)
    assert github.runs("queued") == []
    assert github.client.errors == 2
    emulator.github.faults["server_error"] = 10
    with pytest.raises(GitHubError, match="HTTP 502"):
        actions(emulator, retries=3).runs("queued")


@pytest.mark.parametrize("status", [403, 429])
def test_a_secondary_rate_limit_waits_retry_after(emulator: Emulator, status: int) -> None:
    emulator.github.faults["rate_limit"] = {"status": status, "retry_after": 1, "count": 1}
    github = actions(emulator)
    began = time.monotonic()
    assert github.runs("queued") == []
    assert time.monotonic() - began >= 0.9


def test_a_long_wait_is_not_slept_but_raised_and_calls_stop_until_then(emulator: Emulator) -> None:
    emulator.github.faults["rate_limit"] = {"status": 429, "retry_after": 120, "count": 1}
    github = actions(emulator)
    with pytest.raises(RateLimited) as raised:
        github.runs("queued")
    assert raised.value.until > time.time() + 100
    calls = emulator.counts.copy()
    with pytest.raises(RateLimited):
        github.runs("in_progress")
    assert emulator.counts == calls  # nothing was sent while blocked


def test_the_primary_limit_blocks_until_its_reset(emulator: Emulator) -> None:
    emulator.github.faults["remaining"] = 0
    github = actions(emulator)
    with pytest.raises(RateLimited):
        github.runs("queued")
    assert github.client.rate.remaining == 0
    assert github.client.blocked_until >= emulator.github.reset


def test_bad_token_is_one_clear_error(emulator: Emulator) -> None:
    client = GitHubClient(emulator.url, TokenAuth("wrong", "CI_GITHUB_TOKEN"), backoff=0.01)
    with pytest.raises(GitHubError, match=r"401.*renew CI_GITHUB_TOKEN"):
        Actions(client, Scope(REPOSITORY)).runs("queued")


def test_jit_config_list_and_delete_runners_in_an_organisation() -> None:
    with Emulator(GitHub(organisation="octo-org")) as emulator:
        github = actions(emulator)
        assert github.scope.runners_path == "/orgs/octo-org/actions/runners"
        runner_id, config = github.generate_jitconfig("ghr-cpu-00000001", ["self-hosted", "slurm"], 1, "_work")
        assert config in emulator.github.jit_configs
        assert [r.name for r in github.runners()] == ["ghr-cpu-00000001"]
        with pytest.raises(GitHubError, match="409"):
            github.generate_jitconfig("ghr-cpu-00000001", ["self-hosted"], 1, "_work")
        assert github.delete_runner(runner_id) is True
        assert github.delete_runner(runner_id) is False  # 404: already gone
        assert github.runners() == []


def test_github_app_installation_token(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "app.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    with Emulator(GitHub(app=(42, 7, key.public_key()))) as emulator:
        client = GitHubClient(emulator.url, AppAuth(42, 7, str(pem)), backoff=0.01)
        assert Actions(client, Scope(REPOSITORY)).runs("queued") == []
        assert len(emulator.github.app_tokens) == 1
        wrong = GitHubClient(emulator.url, AppAuth(43, 7, str(pem)), backoff=0.01)
        with pytest.raises(GitHubError, match="installation token for App 43"):
            Actions(wrong, Scope(REPOSITORY)).runs("queued")


def test_the_cache_forgets_pages_no_longer_asked_for(emulator: Emulator) -> None:
    runs = [emulator.add_run([{"labels": ["slurm"]}]) for _ in range(5)]
    github = actions(emulator)
    for run in runs:
        github.jobs(run.id)
    github.client.forget_untouched()
    assert github.client.cache_size == 5
    github.jobs(runs[0].id)
    github.client.forget_untouched()
    assert github.client.cache_size == 1


def test_demand_is_every_queued_job_of_queued_and_in_progress_runs_but_not_github_hosted_ones(
        emulator: Emulator) -> None:
    from ci.runners.allocator import observe

    waiting = emulator.add_run([{"labels": ["self-hosted", "slurm"]}, {"labels": ["ubuntu-latest"]}])
    running = emulator.add_run([{"labels": ["self-hosted", "slurm"]}])
    (first,) = running.jobs
    first.status, first.runner_name = "in_progress", "ghr-cpu-00000001"
    later = emulator.add_job(running.id, {"labels": ["self-hosted", "gpu"]})  # released by `needs:`
    observed = observe(actions(emulator), "ghr-", ("ubuntu-*", "windows-*", "macos-*"))
    assert sorted(job.id for job in observed.queued) == sorted([waiting.jobs[0].id, later.id])
    assert observed.used == {"ghr-cpu-00000001": "in_progress"} and observed.runs == 2
