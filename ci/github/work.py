"""What each image's jobs of the generated workflow are to do in this run (`inv gh.plan`).

The prepare job writes two step outputs per image, `build-<id>` and `test-<id>` (true/false), from
the same site-aware plan `inv build-all` makes; the jobs' `if:` read them, so the YAML decides
nothing. An image whose build failed before (recorded on the site) is reported with its log's place
and not retried unless --retry-failed, and an image built on it is blocked, not built on nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ci.github.workflow import ImageJobs
from ci.pipeline.failures import BuildFailure, blocked_by
from ci.plan import Action, Plan


@dataclass(frozen=True)
class ImageWork:
    key: str
    name: str
    build: bool
    test: bool
    reason: str


@dataclass(frozen=True)
class Work:
    images: tuple[ImageWork, ...]

    @property
    def has_work(self) -> bool:
        return any(image.build or image.test for image in self.images)

    def outputs(self) -> dict[str, str]:
        outputs = {"has_work": "true" if self.has_work else "false"}
        for image in self.images:
            jobs = ImageJobs(image.key, image.name, image.key.split("/", 1)[0])
            outputs[jobs.build_output] = "true" if image.build else "false"
            outputs[jobs.test_output] = "true" if image.test else "false"
        outputs["images"] = ",".join(image.name for image in self.images if image.build or image.test)
        return outputs

    def lines(self) -> list[str]:
        return [f"{image.name}: {'build, ' if image.build else ''}{'transfer + test, ' if image.test else ''}"
                f"{image.reason}" for image in self.images]

    def markdown(self) -> str:
        count = sum(1 for image in self.images if image.build or image.test)
        lines = [f"### Plan: {count} of {len(self.images)} images have work", "",
                 "| image | build | transfer + test | why |", "|---|---|---|---|"]
        for image in self.images:
            lines.append(f"| `{image.name}` | {'yes' if image.build else '-'} | {'yes' if image.test else '-'} | "
                         f"{image.reason.replace('|', '/')} |")
        if not count:
            lines += ["", "Nothing to do: every image's jobs are skipped."]
        return "\n".join(lines) + "\n"


def work_for(plan: Plan, failures: Mapping[str, BuildFailure]) -> Work:
    """Per image of the plan: build? transfer + test? and why, with recorded build failures applied."""
    blocked = blocked_by(plan, failures)
    images = []
    for key, image in plan.images.items():
        if key in failures:
            images.append(ImageWork(key, image.name, False, False, failures[key].describe() +
                                    " (use --retry-failed to build it again)"))
        elif key in blocked:
            cause = plan.images[blocked[key]].name
            images.append(ImageWork(key, image.name, False, False, f"blocked: {cause}, which it is built on, "
                                                                  "failed to build"))
        else:
            build = image.action is not Action.SKIP
            reason = image.site_reason if image.needs_site else image.reason
            if build and image.needs_site:
                reason = f"{image.reason}; {image.site_reason}"
            images.append(ImageWork(key, image.name, build, image.needs_site, reason or image.reason))
    return Work(tuple(images))
