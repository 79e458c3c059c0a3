"""The test step: each test of an image is one batch job; wait for them all, then judge each.

A test runs inside the image (`run: image`, the default) or on the node with the image file as
`$1` and a launcher in `SCMD` (`run: host`, LUMI's style; see ci.jobs). Each test has its own job
name (unique per arch, image and test; ci.schedulers.base.job_name), its own log and exit file
in the image's staging folder, and a host-side test its own working folder `work/<test>/`.
A job already submitted by an earlier attempt of the run is adopted by name, and one that ran to
its end (its exit file exists) is judged from its files without running it again.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from ci.definitions import TestSpec
from ci.engines.base import Bind
from ci.errors import SiteError
from ci.pipeline.executor import StepResult
from ci.pipeline.steps.chain import ChainStep, wait_for_job
from ci.pipeline.testjobs import (
    exit_status_from_log,
    judge,
    own_output,
    render_host_test_script,
    render_job_script,
    scmd,
)
from ci.schedulers.base import JobSpec, JobState, JobStatus, job_name

EXIT_SUFFIX = ".exit"
LAUNCHER_HELPER = "scmd.sh"


def runs_on_host(test: TestSpec) -> bool:
    """`run: host` in container.yaml: the script runs on the node, not inside the image."""
    return test.run == "host"


def parse_binds(values: tuple[str, ...] | list[str]) -> list[Bind]:
    """`ci.site.binds`: each `PATH` (bound at the same place) or `SRC:DST`."""
    binds = []
    for value in values:
        source, _, target = str(value).partition(":")
        binds.append(Bind(source, target or source))
    return binds


class TestStep(ChainStep):
    __test__ = False  # not a pytest test class, whatever it is imported as
    name = "test"
    resource = "test"

    def run(self) -> StepResult:
        chain = self.chain
        if chain.image_file is None:
            raise SiteError("nothing to test: the convert step left no image file")
        if not chain.site_services.site.host.exists(chain.image_file):
            # a failed (or never run) conversion: a job would only fail on the missing file, or worse,
            # a later `inv validate` would submit the tests again on every attempt
            raise SiteError(f"not converted: {posixpath.basename(chain.image_file)} is not in the run's staging "
                            "folder (the convert step failed or did not run); no test job submitted")
        submitted = []
        for test in chain.image.spec.tests:
            chain.cancel.check()
            submitted.append((test, self._submit_or_adopt(test)))
        verdicts: list[dict[str, Any]] = []
        for test, job_id in submitted:
            status = wait_for_job(chain.site_services, job_id, chain.cancel) if job_id else None
            verdicts.append(self._judge(test, job_id, status))
        failed = [v["name"] for v in verdicts if not v["passed"]]
        detail = f"{len(verdicts) - len(failed)}/{len(verdicts)} tests passed" + \
            (f"; failed: {', '.join(failed)}" if failed else "")
        if not verdicts:
            detail = "no tests declared: built, not tested"
        return StepResult(detail, {"tests": verdicts}, failed=bool(failed))

    def absorb(self, data: Mapping[str, Any]) -> None:
        chain = self.chain
        chain.tested = True
        chain.verdicts = list(data.get("tests", []))
        chain.tests_failed = any(not v.get("passed") for v in chain.verdicts)

    # ------------------------------------------------------------------ jobs

    def job_name(self, test: TestSpec) -> str:
        chain = self.chain
        return job_name(chain.site_services.job_prefix, chain.run.run_id, chain.image.name, test.name,
                        arch=chain.image.spec.arch)

    def _paths(self, test: TestSpec) -> tuple[str, str, str]:
        logs = posixpath.join(self.chain.staging, "logs")
        return (posixpath.join(logs, f"{test.name}.out"), posixpath.join(logs, f"{test.name}{EXIT_SUFFIX}"),
                posixpath.join(self.chain.staging, f"{test.name}.job.sh"))

    def _submit_or_adopt(self, test: TestSpec) -> str | None:
        """Submit the test's job, unless an earlier attempt already did (then adopt it, or its result)."""
        chain = self.chain
        services = chain.site_services
        output, exit_file, script_path = self._paths(test)
        host = services.site.host
        if host.exists(exit_file):
            return None  # it ran to the end before a crash: judge its files, do not run it again
        name = self.job_name(test)
        existing = [status for status in services.scheduler.find(name) if status.name == name]
        if existing:
            return existing[0].job_id
        assert chain.image_file is not None
        tests_dir = posixpath.join(chain.staging, "tests")
        relative = test.script.relative_to(chain.image.spec.root / "tests").as_posix()
        script = posixpath.join(tests_dir, relative)
        workdir = chain.staging
        spec = JobSpec(name=name, workdir=workdir, output=output, script_path=script_path, resources=test.slurm,
                       account=services.account, partition=services.partition_for(chain.image.spec.arch))
        header = services.scheduler.directives(spec)
        if runs_on_host(test):
            workdir = posixpath.join(chain.staging, "work", test.name)
            host.run(["rm", "-rf", workdir])
            host.run(["mkdir", "-p", workdir])
            helper = posixpath.join(chain.staging, LAUNCHER_HELPER)
            helper_text = services.engine.launcher_helper()
            if helper_text is not None:
                host.write_text(helper, helper_text, mode=0o755)
            launcher = scmd(services.scheduler.task_launch(test.slurm),
                            services.engine.launcher(parse_binds(services.binds), helper))
            text = render_host_test_script(
                test=test, engine=services.engine, image_file=chain.image_file, script=script, workdir=workdir,
                output=output, scmd_value=launcher, header=header, exit_file=exit_file, image=chain.image.name,
                test_dir=tests_dir)
        else:
            text = render_job_script(
                test=test, engine=services.engine, image_file=chain.image_file, script=script, test_dir=tests_dir,
                workdir=workdir, output=output, header=header, launch=services.scheduler.task_launch(test.slurm),
                exit_file=exit_file, image=chain.image.name)
        host.write_text(script_path, text, mode=0o755)
        return services.scheduler.submit(spec)

    def _judge(self, test: TestSpec, job_id: str | None, status: JobStatus | None) -> dict[str, Any]:
        """Judge from the job's own files first (they survive the scheduler forgetting the job)."""
        chain = self.chain
        host = chain.site_services.site.host
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
        chain.run.log_path(chain.image.key, f"test-{test.name}").write_text(log, encoding="utf-8")
        return {"name": test.name, "passed": verdict.passed and ended_normally, "job_id": job_id,
                "state": status.state.value if status is not None else "COMPLETED", "exit_code": exit_code,
                "reasons": reasons, "metrics": [m.as_dict() for m in verdict.metrics],
                "output_tail": "\n".join(own_output(log).splitlines()[-20:])}
