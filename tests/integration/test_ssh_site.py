"""The same pipeline against a site reached over SSH: sshd on 127.0.0.1:2222 plays the login node.

Every site operation (layout, lock, staging, conversion, sbatch, squeue, promotion, reports) goes
through fabric, and the push goes through an SSH port-forward to the registry "on the login node"
(127.0.0.1:5000 as the site sees it), as the lumi profile does: the build side only ever talks to
127.0.0.1:<local_port>, a free port picked for the test.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ci.config.settings import Settings, SSHSettings
from ci.hosts import SSHHost
from ci.pipeline.report import RunReport
from tests.support.services import REGISTRY, free_port
from tests.support.site_helpers import (
    SiteProject,
    assert_site_consistent,
    failing,
    isolated_project,
    job_label,
    metric,
    passing,
    promoted,
    step_data,
)

pytestmark = [pytest.mark.docker, pytest.mark.slurm, pytest.mark.registry, pytest.mark.ssh]

TESTS = {"good": ["smoke", "bandwidth"], "bad": ["broken"]}


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def ssh_section(ssh: SSHSettings) -> dict[str, Any]:
    return {"host": ssh.host, "port": ssh.port, "user": ssh.user, "key_filename": ssh.key_filename,
            "known_hosts": ssh.known_hosts}


class RemoteRun:
    def __init__(self, project: SiteProject, settings: Settings, report: RunReport, port: int):
        self.project, self.settings, self.report, self.port = project, settings, report, port


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory, loopback_ssh: SSHSettings) -> Iterator[RemoteRun]:
    root = tmp_path_factory.mktemp("ssh-site")
    for project in isolated_project(root, site_root=str(root / "login-node" / "containers")):
        project.add("good", [passing(), metric(value=20, minimum=10)])
        project.add("bad", [failing(code=5)])
        port = free_port()
        settings = project.settings(ssh=ssh_section(loopback_ssh),
                                    registry={"address": REGISTRY, "tunnel": True, "local_port": port})
        assert settings.site.remote and settings.site.registry.tunnel
        yield RemoteRun(project, settings, project.run(settings), port)


def test_the_pipeline_runs_on_the_ssh_site(remote: RemoteRun) -> None:
    output = remote.project.console_output.getvalue()
    assert f"site root@127.0.0.1:{remote.project.site_root}, engine charliecloud, scheduler slurm" in output
    states = {image.name: image.state for image in remote.report.images}
    assert states == {"good": "done", "bad": "failed"}, output
    verdicts = {v["name"]: v for v in step_data(remote.report, "good", "test")["tests"]}
    assert verdicts["bandwidth"]["metrics"][0]["value"] == 20.0
    (broken,) = step_data(remote.report, "bad", "test")["tests"]
    assert (broken["exit_code"], broken["passed"]) == (5, False)


def test_images_are_promoted_on_the_remote_site(remote: RemoteRun, ssh_host: SSHHost) -> None:
    root = remote.project.site_root
    listing = ssh_host.run(["find", f"{root}/tested", f"{root}/failed", "-mindepth", "2", "-maxdepth", "2"]).stdout
    good = next(image for image in remote.report.images if image.name == "good")
    bad = next(image for image in remote.report.images if image.name == "bad")
    assert sorted(listing.split()) == sorted([f"{root}/tested/good/good-1.0-{good.digest12}",
                                              f"{root}/failed/bad/bad-1.0-{bad.digest12}"])
    # sshd runs on this machine, so the login node's files can be read here too
    assert promoted(root, "tested") == {"good": [f"good-1.0-{good.digest12}"]}
    assert_site_consistent(root, TESTS)
    result = json.loads(ssh_host.read_text(f"{root}/tested/good/good-1.0-{good.digest12}/result.json"))
    assert result["verdict"] == "tested" and result["run_id"] == remote.report.run_id
    reports = ssh_host.run(["ls", f"{root}/runs/{remote.report.run_id}"]).stdout.split()
    assert sorted(reports) == ["junit.xml", "report.json", "summary.md"]
    assert not ssh_host.exists(f"{root}/.lock")


def test_the_push_went_through_the_tunnel(remote: RemoteRun) -> None:
    good = next(image for image in remote.report.images if image.name == "good")
    transfer = step_data(remote.report, "good", "transfer")
    assert transfer["reference"] == f"{REGISTRY}/good:1.0-{good.digest12}", "what the site's engine pulls"
    log = (remote.project.run_folder(remote.report.run_id) / "logs" / "amd64" / "good.transfer.log").read_text()
    assert f"The push refers to repository [127.0.0.1:{remote.port}/good]" in log
    with urllib.request.urlopen(f"http://{REGISTRY}/v2/good/tags/list", timeout=5) as answer:
        assert f"1.0-{good.digest12}" in json.loads(answer.read())["tags"]
    assert not listening(remote.port), "the tunnel is closed after the run"


def test_test_jobs_ran_under_slurm_on_the_site(remote: RemoteRun) -> None:
    prefix = f"{remote.project.job_prefix}-{remote.report.run_id}-"
    names = sorted(job_label(name, prefix) for _, name, _ in remote.project.jobs())
    assert names == ["bad-broken", "good-bandwidth", "good-smoke"]
    good = next(image for image in remote.report.images if image.name == "good")
    log = Path(remote.project.site_root, "tested", "good", f"good-1.0-{good.digest12}", "logs", "smoke.out")
    assert "test smoke with charliecloud" in log.read_text()


def test_a_second_run_over_ssh_does_nothing(remote: RemoteRun) -> None:
    report = remote.project.run(remote.settings)
    assert {image.name: image.state for image in report.images} == {"good": "up to date", "bad": "up to date"}
    assert [event for event in remote.project.events(report.run_id) if event["step"]] == []
