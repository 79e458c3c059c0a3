"""Settings validation, job names and scripts, webhook signatures, metrics text."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.request
from typing import Any

import pytest

from ci.config.runners import RunnersConfigError, parse_runners
from ci.hosts import LocalHost
from ci.runners import batch as jobs
from ci.runners.endpoints import Endpoints, metrics_route, verify, webhook_route
from ci.runners.metrics import Metrics
from ci.schedulers import SlurmScheduler

GOOD: dict[str, Any] = {"github": {"repository": "octo-org/hpc-app"},
                        "targets": [{"name": "cpu", "labels": ["self-hosted", "slurm"]}]}


def problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(RunnersConfigError) as raised:
        parse_runners(raw)
    return [str(problem) for problem in raised.value.problems]


def test_defaults() -> None:
    settings = parse_runners(GOOD)
    assert settings.poll_interval == 5 and settings.runner_command == "./run.sh"
    assert settings.github.api_url == "https://api.github.com" and settings.targets[0].slurm.cpus == 1


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"targets": [{"name": "CPU!", "labels": ["a"]}]}, "ci.runners.targets[0].name", "not a target name"),
    ({"targets": [{"name": "cpu", "labels": []}]}, "ci.runners.targets[0].labels", "at least one label"),
    ({"targets": [{"name": "cpu", "labels": ["a", "A"]}]}, "ci.runners.targets[0].labels", "case-insensitively"),
    ({"targets": [{"name": "cpu", "labels": ["a"], "slurm": {"extra": ["--output=/tmp/x"]}}]},
     "ci.runners.targets[0].slurm.extra[0]", "chooses the job's output file"),
    ({"targets": [{"name": "cpu", "labels": ["a"], "slurm": {"extra": ["--x=$(id)"]}}]},
     "ci.runners.targets[0].slurm.extra[0]", "not an sbatch option the CI allows"),
    ({"targets": [{"name": "cpu", "labels": ["a"], "slurm": {"time": "soon"}}]},
     "ci.runners.targets[0].slurm.time", "not a Slurm time limit"),
    ({"targets": [{"name": "cpu", "labels": ["a"], "max": 0}]}, "ci.runners.targets[0].max", "below the minimum 1"),
    ({"targets": [{"name": "a", "labels": ["x"]}, {"name": "b", "labels": ["X"]}]}, "ci.runners",
     "same label set"),
    ({"github": {"repository": "not a repo"}}, "ci.runners.github.repository", "owner/name"),
    ({"metrics": {"host": "0.0.0.0", "port": 9464}}, "ci.runners.metrics", "loopback"),
    ({"runner_command": "./run.sh\nrm -rf /"}, "ci.runners.runner_command", "not one line of text"),
    ({"colour": "blue"}, "ci.runners.colour", "unknown key 'colour'"),
])
def test_each_bad_value_is_one_problem_naming_its_field(change: dict[str, Any], field: str, message: str) -> None:
    found = problems({**GOOD, **change})
    assert len(found) == 1, found
    assert f"invoke.yaml: {field}: " in found[0] and message in found[0], found


def test_an_unconfigured_allocator_says_what_to_set() -> None:
    (problem,) = problems({"github": {"repository": None}, "targets": []})
    assert "set ci.runners.github.repository and ci.runners.targets" in problem


def test_job_names_encode_target_and_runner_and_parse_back() -> None:
    name = jobs.runner_name("ghr", "gpu-a100")
    assert jobs.parse_job_name("ghr", jobs.job_name("ghr", "gpu-a100", name)) == ("gpu-a100", name)
    assert jobs.parse_job_name("ghr", f"ghr.cpu.{name}") is None  # the runner belongs to another target
    assert jobs.parse_job_name("ghr", "cci-run-image-test") is None


def test_the_job_script_reads_the_config_file_and_never_holds_a_config() -> None:
    settings = parse_runners({**GOOD, "runner_dir": "~/actions-runner"})
    spec = jobs.job_spec(settings, settings.targets[0], "ghr-cpu-0123abcd", "/state/jobs", partition="small")
    assert spec.name == "ghr.cpu.ghr-cpu-0123abcd" and spec.partition == "small"
    assert spec.resources.cpus_per_task == 1 and spec.resources.ntasks == 1 and spec.resources.extra == ()
    spec = jobs.with_directives(spec, SlurmScheduler(LocalHost()).directives(spec))
    script = spec.script or ""
    assert script.startswith("#!/bin/bash\n#SBATCH --job-name=ghr.cpu.ghr-cpu-0123abcd\n")
    assert "#SBATCH --cpus-per-task=1\n" in script and "#SBATCH --partition=small\n" in script
    assert "jit=/state/jobs/jit/ghr-cpu-0123abcd.jit" in script
    assert 'ACTIONS_RUNNER_INPUT_JITCONFIG=$(cat "$jit")' in script and 'rm -f "$jit"' in script
    assert script.index('rm -f "$jit"') < script.index("\n./run.sh &\n")  # waited for: SIGTERM reaches the trap
    assert 'cd "$HOME"/actions-runner' in script


def test_the_runner_command_can_run_inside_an_image() -> None:
    settings = parse_runners({**GOOD, "container": {"image": "/images/runner.sif", "engine": "apptainer"}})
    line = jobs.runner_exec_line(settings)
    assert line == 'exec apptainer exec "$CI_RUNNER_IMAGE" sh -c ./run.sh'  # the node-local copy (imagecache)


def signed(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def test_webhooks_are_verified_with_hmac_sha256_before_they_wake_anything() -> None:
    secret = b"s3cret"
    woken: list[dict[str, Any]] = []
    endpoints = Endpoints()
    try:
        host, port = endpoints.add("127.0.0.1", 0, "POST", "/hook", webhook_route(secret, "octo-org/hpc-app",
                                                                                   woken.append))
        endpoints.add("127.0.0.1", port, "GET", "/metrics", metrics_route(lambda: "x 1\n"))

        def post(body: bytes, signature: str | None, event: str = "workflow_job") -> int:
            headers = {"X-GitHub-Event": event, **({"X-Hub-Signature-256": signature} if signature else {})}
            request = urllib.request.Request(f"http://{host}:{port}/hook", data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return int(response.status)
            except urllib.error.HTTPError as error:
                return int(error.code)

        body = json.dumps({"action": "queued", "repository": {"full_name": "octo-org/hpc-app"}}).encode()
        assert post(body, None) == 401
        assert post(body, signed(b"wrong", body)) == 401
        assert post(body + b" ", signed(secret, body)) == 401  # the signature covers the exact bytes
        assert woken == []
        assert post(body, signed(secret, body)) == 202
        assert len(woken) == 1
        other = json.dumps({"action": "queued", "repository": {"full_name": "someone/else"}}).encode()
        assert post(other, signed(secret, other)) == 202 and len(woken) == 1
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
            assert response.read() == b"x 1\n"
    finally:
        endpoints.close()
    assert verify(secret, b"x", signed(secret, b"x")) and not verify(secret, b"x", None)


def test_metrics_text_format() -> None:
    metrics = Metrics()
    metrics.set_counter("ci_runners_github_api_calls_total", 12)
    metrics.gauge("ci_runners_runners", 3, target="cpu", phase="pending")
    for value in (0.1, 0.2, 5.0):
        metrics.observe_latency(value)
    text = metrics.render()
    assert "# TYPE ci_runners_github_api_calls_total counter\nci_runners_github_api_calls_total 12\n" in text
    assert 'ci_runners_runners{phase="pending",target="cpu"} 3' in text
    assert "ci_runners_queued_to_submitted_seconds_count 3" in text
    assert 'ci_runners_queued_to_submitted_seconds{quantile="0.95"} 5.000000' in text
