"""Re-validation: run the tests of images already in tested/ again, without rebuilding or reconverting.

A site's system update (a new Slurm, libfabric or driver) can break an image that passed months
ago; LUMI's CI re-ran the tests of settled images on every run for that reason. `inv site.retest`
(and `inv build-all --retest`, and the workflow's weekly run) submits each current definition's
tests against the image file that sits in `tested/<name>/<stem>/`, judges them as the test step
does (exit code, patterns, metric thresholds), and appends one line per image to that folder's
`history.jsonl` (time, run, verdict, each test's result and metrics). A tested image that now
fails is a **regression**: reported loudly, and the run exits non-zero, but the image stays in
tested/ untouched (only its history grows), so a site problem never destroys a good image.
"""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ci.api import pipeline as api
from ci.config.settings import Settings
from ci.docker.registry import Registry
from ci.engines import select_engine
from ci.pipeline.executor import Executor, Listener, Note, StepResult, Work
from ci.pipeline.report import RunReport, build_report
from ci.pipeline.runs import RunFolder
from ci.pipeline.steps import Chain, SiteServices, TestStep
from ci.plan import Plan, PlannedImage, make_plan
from ci.schedulers import select_scheduler
from ci.schedulers.base import settled
from ci.schedulers.watch import JobWatcher
from ci.shutdown import CancelToken
from ci.site import environment as site_env
from ci.site.layout import TESTED, Site, image_stem

HISTORY = "history.jsonl"


@dataclass
class RetestResult:
    """The report of a re-validation run, and the images that regressed."""

    report: RunReport
    regressions: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.report.ok and not self.regressions

    def as_dict(self) -> dict[str, Any]:
        return {**self.report.as_dict(), "ok": self.ok, "regressions": list(self.regressions)}


def tested_folder(site: Site, image: PlannedImage) -> str:
    return site.path(TESTED, image.name, image_stem(image.name, image.spec.version, image.digest))


def history_line(image: PlannedImage, run_id: str, data: dict[str, Any], failed: bool) -> str:
    """One verdict of one image: when, which run, passed or failed, and each test's result and metrics."""
    tests = [{"name": t.get("name"), "passed": bool(t.get("passed")), "exit_code": t.get("exit_code"),
              "reasons": list(t.get("reasons") or []),
              "metrics": {m["name"]: m.get("value") for m in t.get("metrics") or [] if "name" in m}}
             for t in data.get("tests", [])]
    return json.dumps({"time": time.time(), "run_id": run_id, "kind": "retest", "digest": image.digest,
                       "test_digest": image.test_digest, "verdict": "failed" if failed else "passed",
                       "tests": tests}, sort_keys=True)


def read_history(site: Site, image: PlannedImage) -> list[dict[str, Any]]:
    """The verdicts recorded for this image's tested folder, oldest first."""
    path = posixpath.join(tested_folder(site, image), HISTORY)
    if not site.host.exists(path):
        return []
    lines = []
    for line in site.host.read_text(path).splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return lines


class RetestStep(TestStep):
    """The test step on the settled image file: stage the current tests, run them, record the verdict."""

    __test__ = False

    def __init__(self, chain: Chain, folder: str):
        super().__init__(chain)
        self.folder = folder
        self.regressed = False

    def run(self) -> StepResult:
        chain = self.chain
        host = chain.site_services.site.host
        suffix = chain.site_services.engine.file_suffix
        tested_file = posixpath.join(self.folder, f"{posixpath.basename(self.folder)}.{suffix}")
        if not host.exists(tested_file):
            self.regressed = True
            return StepResult(f"REGRESSION: no image file {tested_file} in tested/", failed=True)
        tests_folder = chain.image.spec.root / "tests"
        host.run(["mkdir", "-p", posixpath.join(chain.staging, "tests"), posixpath.join(chain.staging, "logs")])
        if tests_folder.is_dir():
            for path in sorted(p for p in tests_folder.rglob("*") if p.is_file()):
                host.put(path, posixpath.join(chain.staging, "tests", path.relative_to(tests_folder).as_posix()))
        chain.image_file = tested_file  # the settled file itself: nothing is converted again
        result = super().run()
        chain.cancel.check()  # a cancelled run records no verdict (its jobs did not end on their own)
        line = history_line(chain.image, chain.run.run_id, dict(result.data), result.failed)
        host.run(["sh", "-c", 'cat >> "$1"', "sh", posixpath.join(self.folder, HISTORY)], stdin=line + "\n")
        if result.failed:
            self.regressed = True
            return StepResult(f"REGRESSION (still in tested/): {result.detail}", dict(result.data), failed=True)
        return StepResult(f"still passes: {result.detail}", dict(result.data))


def retest(settings: Settings, *, only: Sequence[str] = (), run_id: str | None = None,
           listeners: Sequence[Listener] = (), cancel: CancelToken | None = None) -> RetestResult:
    """Re-run the tests of every selected image whose current digest is in tested/; nothing else."""
    cancel = cancel or CancelToken()
    started = time.time()
    host = api.site_host(settings)
    try:
        site = api.open_site(settings, host)
        run = RunFolder(settings.state_dir / "runs", run_id)
        with api.hold_site(site, run.run_id, lease=api.lock_lease(settings), cancel=cancel):
            engine = api.docker_engine(settings)
            full = make_plan(api.catalog(settings), only=only, registry_prefix=settings.registry_prefix,
                             site=site.listing(),
                             extra_parents=site_env.extra_parents(settings.site_env, engine))
            plan = Plan(root=full.root, images={key: image for key, image in full.images.items()
                                                if image.selected and image.site_state == TESTED})
            return _run(settings, plan, run, site, engine, listeners, cancel, started)
    finally:
        host.close()


def _say(listeners: Sequence[Listener], text: str, level: str = "info") -> None:
    for listener in listeners:
        listener(Note(time.time(), text, level, {}))


def _run(settings: Settings, plan: Plan, run: RunFolder, site: Site, engine: Any, listeners: Sequence[Listener],
         cancel: CancelToken, started: float) -> RetestResult:
    registry = Registry(settings.site.registry, engine, site.host)  # unused: nothing is pushed or pulled
    engine_backend = select_engine(settings.site.engine, site.host, compression=settings.site.compression)
    scheduler = select_scheduler(settings.site.scheduler, site.host)
    watcher = JobWatcher(scheduler.poll, interval=settings.site.poll_interval, settled=settled,
                         on_error=lambda exc: _say(listeners, f"status query failed, retrying: {exc}", "warning"))
    _say(listeners, f"run {run.run_id}: re-validating {len(plan.images)} tested images (site {site.host.name}:"
                    f"{site.root}, engine {engine_backend.name}, scheduler {scheduler.name})")
    steps: dict[str, RetestStep] = {}
    with watcher:
        services = SiteServices(site=site, registry=registry, engine=engine_backend, scheduler=scheduler,
                                watcher=watcher, job_prefix=settings.site.job_prefix, account=settings.site.account,
                                partition=settings.site.partition,
                                binds=tuple(getattr(settings.site, "binds", ()) or ()), cancel=cancel)
        works = []
        for key, image in plan.images.items():
            steps[key] = RetestStep(Chain(image, run, services, {}, cancel), tested_folder(site, image))
            works.append(Work(key=key, steps=[steps[key].step()]))
        try:
            outcomes = Executor(dict(settings.limits), [*listeners, run.record], cancel=cancel).run(works)
        finally:
            if cancel.is_set():
                api.cancel_run_jobs(scheduler, settings.site.job_prefix, run.run_id,
                                    reason=cancel.reason or "re-validation cancelled")
    report = build_report(run.run_id, settings.profile, plan, outcomes, started)
    api.write_reports(run, report, listeners)
    for name in ("report.json", "junit.xml", "summary.md"):
        site.host.put(run.path / name, site.path("runs", run.run_id, name))
    regressions = [plan.images[key].name for key, step in steps.items() if step.regressed]
    for name in regressions:
        _say(listeners, f"REGRESSION: {name} passed its tests when it was promoted and fails them now; it stays "
                        "in tested/ (see its history.jsonl and the run's logs)", "warning")
    return RetestResult(report, regressions)
