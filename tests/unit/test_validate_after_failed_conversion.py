"""`inv validate` after a failed conversion submits no test job (issue 10, item 4): the test step
checks that the image file is there before it submits, with a scheduler that records submissions."""

from __future__ import annotations

from pathlib import Path

import pytest

from ci.config.settings import RegistrySettings
from ci.definitions import load_catalog
from ci.docker.registry import Registry
from ci.engines import make_engine
from ci.hosts import LocalHost
from ci.pipeline.executor import Executor, Work
from ci.pipeline.runs import RunFolder
from ci.pipeline.steps import Chain, PromoteStep, SiteServices, TestStep
from ci.plan import make_plan
from ci.schedulers.base import settled
from ci.schedulers.direct import DirectScheduler
from ci.schedulers.watch import JobWatcher
from ci.site.layout import Site
from tests.support.paths import EXAMPLES


class RecordingScheduler(DirectScheduler):
    """The direct scheduler (jobs are local processes), counting what is submitted."""

    def __init__(self, host: LocalHost, state_dir: Path):
        super().__init__(host, str(state_dir))
        self.submitted: list[str] = []

    def submit(self, job):  # type: ignore[no-untyped-def]
        self.submitted.append(job.name)
        return super().submit(job)


def steps(tmp_path: Path) -> tuple[Chain, RecordingScheduler, JobWatcher]:
    host = LocalHost()
    scheduler = RecordingScheduler(host, tmp_path / "jobs")
    watcher = JobWatcher(scheduler.poll, interval=0.05, settled=settled)
    plan = make_plan(load_catalog(EXAMPLES), only=["base"])
    image = plan.images["amd64/base"]
    services = SiteServices(site=Site(host, str(tmp_path / "site")), registry=Registry(RegistrySettings(), None, host),
                            engine=make_engine("charliecloud"), scheduler=scheduler, watcher=watcher,
                            job_prefix="cci")
    return Chain(image, RunFolder(tmp_path / "runs", "gh-1-1"), services, {}), scheduler, watcher


@pytest.mark.parametrize("attempt", [1, 2])
def test_no_test_job_for_an_image_that_was_not_converted(tmp_path: Path, attempt: int) -> None:
    chain, scheduler, watcher = steps(tmp_path)
    with watcher:
        for _ in range(attempt):  # validate, and validate again (a re-run of the job)
            outcomes = Executor({"test": 2, "promote": 1}).run([Work(
                key=chain.image.key, steps=[TestStep(chain).step(), PromoteStep(chain).step()])])
            events = outcomes[chain.image.key].steps
            assert events["test"].state.value == "failed"
            assert "not converted" in events["test"].detail and "no test job submitted" in events["test"].detail
            assert "not promoted" in events["promote"].detail
    assert scheduler.submitted == []
    assert not Path(tmp_path, "site", "tested").exists() or not any(Path(tmp_path, "site", "tested").iterdir())


def test_a_converted_image_is_tested(tmp_path: Path) -> None:
    chain, scheduler, watcher = steps(tmp_path)
    assert chain.image_file is not None
    Path(chain.image_file).parent.mkdir(parents=True)
    Path(chain.image_file).write_text("not really squashfs")
    with watcher:
        result = TestStep(chain)()  # the job fails on the fake file: judged, not the point here
    assert len(scheduler.submitted) == len(chain.image.spec.tests) == 1
    assert [test["name"] for test in result.data["tests"]] == ["release"]
