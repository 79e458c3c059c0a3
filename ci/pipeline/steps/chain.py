"""The values one image's steps share (`Chain`), the backends of a run (`SiteServices`), and the
step base class (`ChainStep`): resume from an earlier attempt, honour the cancel token, keep values.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import IO, Any, ClassVar

from ci.docker.engine import DockerEngine
from ci.docker.registry import Registry, site_reference
from ci.engines.base import Engine
from ci.errors import CIError
from ci.pipeline.executor import Step, StepResult
from ci.pipeline.runs import RunFolder
from ci.plan import PlannedImage
from ci.publish import Publishing
from ci.resources import Resources
from ci.schedulers.base import JobStatus, Scheduler, never_starts
from ci.schedulers.watch import JobWatcher
from ci.shutdown import CancelToken
from ci.site.layout import Site, image_stem


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
    convert_job: Resources | None = None  # set: convert as a batch job on a compute node
    binds: tuple[str, ...] = ()  # ci.site.binds: host paths (or src:dst) every host-side test's SCMD binds
    cancel: CancelToken = field(default_factory=CancelToken)
    arch_partitions: Mapping[str, str] = field(default_factory=dict)  # ci.site.arch.<arch>.partition
    require_tests: bool = False  # ci.site.require_tests: an image without tests is filed under failed/
    publishing: Publishing | None = None  # ci.publish: where tested images go after promote (none: nowhere)
    # The engine that holds an image now (the build host that built it, or another one after
    # failover); None: the registry's own engine (one build host).
    image_engine: Callable[[str, IO[str]], DockerEngine] | None = None

    def partition_for(self, arch: str) -> str | None:
        """Where an architecture's conversions and tests run (e.g. arm64 images on arm64 nodes)."""
        return self.arch_partitions.get(arch) or self.partition


class Chain:
    """The values one image's steps hand each other, and the data of steps done earlier in this run."""

    def __init__(self, image: PlannedImage, run: RunFolder, services: SiteServices | None,
                 previous: Mapping[str, Mapping[str, Any]], cancel: CancelToken | None = None):
        self.image = image
        self.run = run
        self.services = services
        self.cancel = cancel or (services.cancel if services is not None else CancelToken())
        self.previous = {step: data for step, data in previous.items() if data.get("digest") == image.digest}
        self.stem = image_stem(image.name, image.spec.version, image.digest)
        # Deterministic names: a step run on another machine (a workflow job) finds the same ones.
        self.reference: str | None = None
        self.image_file: str | None = None
        self.image_file_checksums: dict[str, Any] = {}  # its size, md5, sha256 as convert recorded them
        if services is not None:
            self.reference = site_reference(services.registry.settings, image.name,
                                            f"{image.spec.version}-{image.digest12}")
            self.image_file = posixpath.join(self.staging, f"{self.stem}.{services.engine.file_suffix}")
        self.verdicts: list[dict[str, Any]] = []
        self.tests_failed = False
        self.tested = False  # the test step finished (now or in an earlier attempt): there is a verdict
        self.spack: dict[str, Any] | None = None  # a Spack image's build facts (ci.pipeline.steps.spack_image)

    def set_version(self, version: str, tag: str) -> None:
        """The version became known with the build (a Spack image's concretized one): names follow it."""
        if version == self.image.spec.version and tag == self.image.tag:
            return
        self.image.spec = replace(self.image.spec, version=version)
        self.image.tag = tag
        self.stem = image_stem(self.image.name, version, self.image.digest)
        if self.services is not None:
            self.reference = site_reference(self.services.registry.settings, self.image.name,
                                            f"{version}-{self.image.digest12}")
            self.image_file = posixpath.join(self.staging, f"{self.stem}.{self.services.engine.file_suffix}")

    @property
    def site_services(self) -> SiteServices:
        if self.services is None:
            raise CIError("this step needs a site (ci.site)")
        return self.services

    @property
    def staging(self) -> str:
        """`staging/<run>/<arch>/<name>/<stem>/`: one folder per image key and digest."""
        return posixpath.join(self.site_services.site.staging(self.run.run_id, self.image.key), self.stem)


class ChainStep:
    """One step of one image: resumed from an earlier attempt's data, or run, then its values kept."""

    name: ClassVar[str] = "step"
    resource: ClassVar[str] = "step"
    always: ClassVar[bool] = False  # runs even after an earlier step of the same image failed

    def __init__(self, chain: Chain):
        self.chain = chain

    def __call__(self) -> StepResult:
        data = self.chain.previous.get(self.name)
        if data is not None:
            self.absorb(data)
            return StepResult(detail="done in an earlier attempt of this run", data=dict(data))
        self.chain.cancel.check()
        result = self.run()
        payload = {"digest": self.chain.image.digest, **result.data}
        self.absorb(payload)
        return StepResult(detail=result.detail, data=payload, failed=result.failed)

    def run(self) -> StepResult:
        raise NotImplementedError

    def absorb(self, data: Mapping[str, Any]) -> None:
        """Take this step's values into the chain (from this attempt or an earlier one)."""

    def step(self) -> Step:
        return Step(self.name, self.resource, self, always=self.always)


def wait_for_job(services: SiteServices, job_id: str, cancel: CancelToken) -> JobStatus:
    """Wait for a job (until `cancel`); one that can never start is cancelled, with Slurm's reason kept."""
    status: JobStatus = services.watcher.wait(job_id, cancel=cancel)
    if never_starts(status):
        services.scheduler.cancel([job_id], reason=f"never starts as submitted: {status.reason}")
    return status
