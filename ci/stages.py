"""The per-image chain of a full run: build → transfer → convert → test → promote.

`ImageChain` holds what one image's steps hand each other (the registry reference, the image
file, the test verdicts), so each step stays a small method the executor can run on its own
thread. Every step is safe to repeat after a crash: a step recorded as done in the run's
events is not redone (its recorded data is reused), jobs already submitted are adopted by
name instead of submitted twice, and promotion is one rename that is checked before it is tried.
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ci.build import BuildStep
from ci.definitions import SlurmResources, TestSpec
from ci.engines.base import Engine, ImageSource
from ci.errors import CIError, SiteError
from ci.jobs import exit_status_from_log, judge, render_conversion_script, render_job_script, test_output
from ci.jobwatch import JobWatcher
from ci.pipeline import Step, StepResult
from ci.plan import Action, PlannedImage
from ci.runs import RunFolder
from ci.schedulers.base import JobSpec, JobState, JobStatus, Scheduler, job_name, never_starts
from ci.site import FAILED, TESTED, Site, image_stem
from ci.transfer import Registry, site_reference

EXIT_SUFFIX = ".exit"


@dataclass
class SiteServices:
    """The backends one run uses, chosen by the composition root (ci.api) from the settings."""

    site: Site
    registry: Registry
    engine: Engine
    scheduler: Scheduler
    watcher: JobWatcher
    job_prefix: str
    account: str | None = None
    partition: str | None = None
    job_env: Mapping[str, str] = field(default_factory=dict)
    convert_job: SlurmResources | None = None  # set: convert as a batch job on a compute node


class ImageChain:
    """The steps of one image, and the values they pass along."""

    def __init__(self, image: PlannedImage, run: RunFolder, services: SiteServices | None,
                 build: BuildStep | None, previous: Mapping[str, Mapping[str, Any]]):
        self.image = image
        self.run = run
        self.services = services
        self.build_step = build
        self.previous = {step: data for step, data in previous.items() if data.get("digest") == image.digest}
        self.stem = image_stem(image.name, image.spec.version, image.digest)
        # Deterministic names: a step run on another machine (a workflow job) finds the same ones.
        self.reference: str | None = None
        self.image_file: str | None = None
        if services is not None:
            self.reference = site_reference(services.registry.settings, image.name,
                                            f"{image.spec.version}-{image.digest12}")
            self.image_file = posixpath.join(self.staging, f"{self.stem}.{services.engine.file_suffix}")
        self.verdicts: list[dict[str, Any]] = []
        self.tests_failed = False
        self.tested = False  # the test step finished (now or in an earlier attempt): there is a verdict

    # ------------------------------------------------------------------ helpers

    @property
    def _services(self) -> SiteServices:
        if self.services is None:
            raise CIError("this step needs a site (ci.site)")
        return self.services

    @property
    def staging(self) -> str:
        return posixpath.join(self._services.site.staging(self.run.run_id, self.image.name), self.stem)

    def _resumed(self, step: str) -> StepResult | None:
        data = self.previous.get(step)
        if data is None:
            return None
        self._absorb(step, data)
        return StepResult(detail="done in an earlier attempt of this run", data=dict(data))

    def _absorb(self, step: str, data: Mapping[str, Any]) -> None:
        if step == "transfer":
            self.reference = data.get("reference")
        elif step == "convert":
            self.image_file = data.get("image_file")
        elif step == "test":
            self.tested = True
            self.verdicts = list(data.get("tests", []))
            self.tests_failed = any(not v.get("passed") for v in self.verdicts)

    def _result(self, step: str, detail: str, failed: bool = False, **data: Any) -> StepResult:
        payload = {"digest": self.image.digest, **data}
        self._absorb(step, payload)
        return StepResult(detail=detail, data=payload, failed=failed)

    def steps(self) -> list[Step]:
        chain: list[Step] = []
        if self.build_step is not None and self.image.action is not Action.SKIP:
            chain.append(Step("build", "build", self.build))
        if self.image.needs_site:
            chain += [Step("transfer", "transfer", self.transfer), Step("convert", "convert", self.convert),
                      Step("test", "test", self.test), Step("promote", "promote", self.promote, always=True)]
        return chain

    # ------------------------------------------------------------------ steps

    def build(self) -> StepResult:
        resumed = self._resumed("build")
        if resumed is not None:
            return resumed
        assert self.build_step is not None
        result = self.build_step()
        return self._result("build", result.detail, **dict(result.data))

    def transfer(self) -> StepResult:
        resumed = self._resumed("transfer")
        if resumed is not None:
            return resumed
        services = self._services
        with self.run.log_path(self.image.name, "transfer").open("w", encoding="utf-8") as log:
            pushed = services.registry.push(self.image.tag, self.image.name,
                                            f"{self.image.spec.version}-{self.image.digest12}", log)
        host = services.site.host
        tests_folder = self.image.spec.root / "tests"
        host.run(["mkdir", "-p", posixpath.join(self.staging, "tests"), posixpath.join(self.staging, "logs")])
        copied = 0
        if tests_folder.is_dir():
            for path in sorted(p for p in tests_folder.rglob("*") if p.is_file()):
                host.put(path, posixpath.join(self.staging, "tests", path.relative_to(tests_folder).as_posix()))
                copied += 1
        detail = f"{pushed.pushed_layers} layers pushed, {pushed.existing_layers} already there"
        return self._result("transfer", detail, reference=pushed.reference, pushed_layers=pushed.pushed_layers,
                            existing_layers=pushed.existing_layers, test_files=copied)

    def convert(self) -> StepResult:
        resumed = self._resumed("convert")
        if resumed is not None:
            return resumed
        services = self._services
        if self.reference is None:
            raise SiteError("nothing to convert: the transfer step left no registry reference")
        assert self.image_file is not None
        output = self.image_file
        if services.site.host.exists(output):
            return self._result("convert", f"{posixpath.basename(output)} (already converted)", image_file=output)
        source = ImageSource.registry(self.reference, insecure=services.registry.settings.insecure)
        if services.convert_job is not None:
            return self._convert_as_job(source, output, services.convert_job)
        host = services.site.host
        # Each attempt converts in a folder of its own beside the staged one (which is what gets promoted):
        # a conversion orphaned by a killed run (its ch-convert or mksquashfs lives on) keeps writing there
        # and never meets this attempt's scratch files; the finished file is renamed into place.
        attempt = posixpath.join(posixpath.dirname(self.staging), f".convert-{uuid.uuid4().hex[:12]}")
        partial = posixpath.join(attempt, posixpath.basename(output))
        try:
            services.engine.convert(host, source, partial, credentials=services.registry.credentials())
            host.run(["mkdir", "-p", self.staging])
            host.run(["mv", "-f", partial, output])
        finally:
            host.run(["rm", "-rf", attempt], check=False)
        return self._result("convert", f"{posixpath.basename(output)}", image_file=output)

    def _convert_as_job(self, source: ImageSource, output: str, resources: SlurmResources) -> StepResult:
        """Convert on a compute node: submit (or adopt) the conversion job, wait, check the file."""
        services = self._services
        host = services.site.host
        name = job_name(services.job_prefix, self.run.run_id, self.image.name, "convert")
        log = posixpath.join(self.staging, "logs", "convert.out")
        existing = [status for status in services.scheduler.find(name) if status.name == name]
        if existing:
            job_id = existing[0].job_id
        else:
            host.run(["mkdir", "-p", posixpath.join(self.staging, "logs")])
            services.engine.prepare(host, source, f"{output}.part")
            script_path = posixpath.join(self.staging, "convert.job.sh")
            host.write_text(script_path, render_conversion_script(
                engine=services.engine, source=source, output=output, log=log, resources=resources, job_name=name,
                account=services.account, partition=services.partition), mode=0o755)
            job_id = services.scheduler.submit(JobSpec(
                name=name, workdir=self.staging, output=log, script_path=script_path, resources=resources,
                account=services.account, partition=services.partition))
        status = self._wait(job_id)
        services.engine.cleanup(host, f"{output}.part")  # helpers staged by prepare(), a part left by a kill
        if never_starts(status):
            raise SiteError(f"conversion job {job_id} can never start as submitted ({status.reason}); "
                            "ask for less in ci.site.convert_job or choose another partition")
        if not host.exists(output):
            tail = " / ".join(host.read_text(log).splitlines()[-3:]) if host.exists(log) else ""
            raise SiteError(f"conversion job {status.describe()} left no {posixpath.basename(output)}; "
                            f"see {log} on {host.name}" + (f": {tail}" if tail else ""))
        return self._result("convert", f"{posixpath.basename(output)} (job {job_id})", image_file=output,
                            job_id=job_id)

    def test(self) -> StepResult:
        resumed = self._resumed("test")
        if resumed is not None:
            return resumed
        if self.image_file is None:
            raise SiteError("nothing to test: the convert step left no image file")
        submitted = [(test, self._submit_or_adopt(test)) for test in self.image.spec.tests]
        verdicts: list[dict[str, Any]] = []
        for test, job_id in submitted:
            status = self._wait(job_id) if job_id else None
            verdicts.append(self._judge(test, job_id, status))
        failed = [v["name"] for v in verdicts if not v["passed"]]
        detail = f"{len(verdicts) - len(failed)}/{len(verdicts)} tests passed" + \
            (f"; failed: {', '.join(failed)}" if failed else "")
        if not verdicts:
            detail = "no tests declared"
        return self._result("test", detail, failed=bool(failed), tests=verdicts)

    def promote(self) -> StepResult:
        resumed = self._resumed("promote")
        if resumed is not None:
            return resumed
        services = self._services
        site = services.site
        verdict = FAILED if self.tests_failed else TESTED
        target = site.promoted_path(verdict, self.image.name, self.stem)
        if not self.tested or self.image_file is None or not site.host.exists(self.image_file):
            if self.tested and site.host.exists(target):
                return self._result("promote", f"already in {verdict}/", verdict=verdict, path=target)
            # An earlier step failed (no image file, or no verdict): promoting now would file an
            # untested image under tested/. It stays in staging; the next run tries again.
            return self._result("promote", "not promoted: no image file and test verdict to promote", verdict=None)
        result = {"name": self.image.name, "version": self.image.spec.version, "digest": self.image.digest,
                  "test_digest": self.image.test_digest, "run_id": self.run.run_id, "verdict": verdict,
                  "tests": self.verdicts, "image_file": posixpath.basename(self.image_file)}
        path = site.promote(self.run.run_id, self.image.name, self.stem, verdict, result)
        passed = sum(1 for v in self.verdicts if v.get("passed"))
        summary = f"{verdict}: {passed}/{len(self.verdicts)} tests passed"
        failing = [f"{v['name']}: {'; '.join(v.get('reasons') or [])}" for v in self.verdicts if not v.get("passed")]
        if failing:
            summary += " (" + " | ".join(failing) + ")"
        return self._result("promote", summary, failed=self.tests_failed, verdict=verdict, path=path)

    # ------------------------------------------------------------------ jobs

    def job_name(self, test: TestSpec) -> str:
        return job_name(self._services.job_prefix, self.run.run_id, self.image.name, test.name)

    def _paths(self, test: TestSpec) -> tuple[str, str, str]:
        logs = posixpath.join(self.staging, "logs")
        return (posixpath.join(logs, f"{test.name}.out"), posixpath.join(logs, f"{test.name}{EXIT_SUFFIX}"),
                posixpath.join(self.staging, f"{test.name}.job.sh"))

    def _submit_or_adopt(self, test: TestSpec) -> str | None:
        """Submit the test's job, unless an earlier attempt already did (then adopt it, or its result)."""
        services = self._services
        output, exit_file, script_path = self._paths(test)
        host = services.site.host
        if host.exists(exit_file):
            return None  # it ran to the end before a crash: judge its files, do not run it again
        name = self.job_name(test)
        existing = [status for status in services.scheduler.find(name) if status.name == name]
        if existing:
            return existing[0].job_id
        assert self.image_file is not None
        tests_dir = posixpath.join(self.staging, "tests")
        relative = test.script.relative_to(self.image.spec.root / "tests").as_posix()
        script = render_job_script(
            test=test, engine=services.engine, image_file=self.image_file,
            script=posixpath.join(tests_dir, relative), test_dir=tests_dir, workdir=self.staging, output=output,
            exit_file=exit_file, account=services.account, partition=services.partition, job_name=name,
            image=self.image.name,
        )
        host.write_text(script_path, script, mode=0o755)
        spec = JobSpec(name=name, workdir=self.staging, output=output, script_path=script_path,
                       resources=test.slurm, account=services.account, partition=services.partition)
        return services.scheduler.submit(spec)

    def _wait(self, job_id: str) -> JobStatus:
        """Wait for a job; one that can never start is cancelled, with Slurm's reason kept."""
        services = self._services
        status: JobStatus = services.watcher.wait(job_id)
        if never_starts(status):
            services.scheduler.cancel([job_id], reason=f"never starts as submitted: {status.reason}")
        return status

    def _judge(self, test: TestSpec, job_id: str | None, status: JobStatus | None) -> dict[str, Any]:
        """Judge from the job's own files first (they survive the scheduler forgetting the job)."""
        host = self._services.site.host
        output_path, exit_file, _ = self._paths(test)
        log = host.read_text(output_path) if host.exists(output_path) else ""
        exit_code: int | None = None
        if host.exists(exit_file):
            text = host.read_text(exit_file).strip()
            exit_code = int(text) if text.lstrip("-").isdigit() else None
        if exit_code is None:
            exit_code = exit_status_from_log(log)
        verdict = judge(test.expect, exit_code, log)
        reasons = list(verdict.reasons)
        ended_normally = exit_code is not None and (status is None or status.state in (
            JobState.COMPLETED, JobState.FAILED))
        if not ended_normally and status is not None:
            reasons.insert(0, status.describe())
        self.run.log_path(self.image.name, f"test-{test.name}").write_text(log, encoding="utf-8")
        return {"name": test.name, "passed": verdict.passed and ended_normally, "job_id": job_id,
                "state": status.state.value if status is not None else "COMPLETED", "exit_code": exit_code,
                "reasons": reasons, "metrics": [m.as_dict() for m in verdict.metrics],
                "output_tail": "\n".join(test_output(log).splitlines()[-20:])}


