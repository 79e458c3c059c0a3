"""ci.api as a long-running caller uses it: listeners, a cancel token, two runs at once in one process.

The runner allocator and the image service call `api.run_pipeline` on threads of their own; these
tests do the same against real Docker, the registry, Slurm and Charliecloud, and SIGTERM a real
`inv build-all` as a cancelled CI step would.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci import api
from ci.pipeline.executor import Event, Note
from ci.pipeline.report import RunReport
from ci.shutdown import CancelToken
from tests.support.paths import PROJECT_DIR
from tests.support.site_helpers import SiteProject, isolated_project, passing, sleeping, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slurm, pytest.mark.registry]


@pytest.fixture
def two_projects(tmp_path: Path) -> Iterator[tuple[SiteProject, SiteProject]]:
    for first in isolated_project(tmp_path / "one"):
        for second in isolated_project(tmp_path / "two"):
            yield first, second


@pytest.fixture
def project(tmp_path: Path) -> Iterator[SiteProject]:
    yield from isolated_project(tmp_path)


def test_two_runs_on_two_sites_go_on_in_one_process_at_once(two_projects: tuple[SiteProject, SiteProject]) -> None:
    first, second = two_projects
    first.add("alpha", [passing()])
    second.add("omega", [passing()])
    heard: dict[str, list[Event | Note]] = {"alpha": [], "omega": []}
    reports: dict[str, RunReport] = {}

    def listen(name: str) -> api.Listener:
        def listener(event: Event | Note) -> None:
            heard[name].append(event)
        return listener

    def run(project: SiteProject, name: str) -> None:
        reports[name] = api.run_pipeline(project.settings(), listeners=[listen(name)])

    threads = [threading.Thread(target=run, args=(project, name)) for project, name in ((first, "alpha"),
                                                                                        (second, "omega"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    assert reports["alpha"].ok and reports["omega"].ok
    for name, other in (("alpha", "omega"), ("omega", "alpha")):
        images = {event.image for event in heard[name] if isinstance(event, Event)}
        assert images == {f"amd64/{name}"}, f"{name}'s listener heard about {images}"
        notes = [event.text for event in heard[name] if isinstance(event, Note)]
        assert any(reports[name].run_id in text for text in notes) and not any(other in text for text in notes)
    assert (Path(first.site_root, "tested", "alpha").is_dir() and Path(second.site_root, "tested", "omega").is_dir())
    assert not Path(first.site_root, "tested", "omega").exists()


def test_a_cancelled_run_cancels_its_jobs_promotes_nothing_and_frees_the_site(project: SiteProject) -> None:
    project.add("sleepy", [sleeping(seconds=300)])
    project.add("quick", [passing()])
    token = CancelToken()
    reports: list[RunReport] = []
    thread = threading.Thread(target=lambda: reports.append(api.run_pipeline(project.settings(), cancel=token)))
    thread.start()
    wait_for(lambda: [job for job in project.jobs(all_states=False) if "sleepy" in job[1]], 300,
             "the sleeping test job")
    token.cancel("the service shuts down")
    thread.join(120)
    assert not thread.is_alive(), "the run did not stop after its cancellation"
    (report,) = reports
    states = {image.name: image.state for image in report.images}
    assert states["sleepy"] == "cancelled" and not report.ok
    (sleepy,) = [image for image in report.images if image.name == "sleepy"]
    assert "the service shuts down" in sleepy.detail
    # scancel was sent before the run returned; slurmd may still show the job COMPLETING for a moment
    left = [job for job in project.jobs(all_states=False) if job[2] != "COMPLETING"]
    assert not left, "the run's jobs were left running"
    wait_for(lambda: not project.jobs(all_states=False), 60, "the cancelled job to leave the queue")
    assert not Path(project.site_root, "tested", "sleepy").exists()
    assert not Path(project.site_root, "failed", "sleepy").exists(), "a cancelled test is no failed image"
    assert not Path(project.site_root, ".lock").exists()
    assert api.run_pipeline(project.settings(), only=["quick"]).ok, "the next run gets the site"


def test_sigterm_to_inv_build_all_cancels_the_run_and_releases_the_site(project: SiteProject) -> None:
    """What GitHub does to a cancelled step (SIGINT, then SIGTERM): the next run proceeds at once."""
    project.add("sleepy", [sleeping(seconds=300)])
    process = subprocess.Popen(project.inv_command("build-all", "--json"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=PROJECT_DIR)
    try:
        wait_for(lambda: project.jobs(all_states=False), 300, "the test job")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, err
    assert "SIGTERM received: cancelling the run" in err
    report = json.loads(out)
    assert {image["name"]: image["state"] for image in report["images"]} == {"sleepy": "cancelled"}
    deadline = time.monotonic() + 30
    while project.jobs(all_states=False) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not project.jobs(all_states=False), "the run's Slurm job was left running"
    assert not Path(project.site_root, ".lock").exists(), "the site lock was left behind"
    history = [line for line in Path(project.site_root, ".lock.log").read_text().splitlines() if '"removed"' in line]
    assert history and '"released"' in history[-1]
