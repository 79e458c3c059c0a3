"""The promote step: file the image folder under tested/ or failed/ with one rename.

Only an image with both an image file and a test verdict is promoted; after an earlier failure
(no file, no verdict) it stays in staging and the next run tries again, so nothing untested ever
lands in tested/. Promotion itself is `Site.promote`: one rename(2) inside the site root.
"""

from __future__ import annotations

import posixpath
from typing import Any

from ci.pipeline.executor import StepResult
from ci.pipeline.steps.chain import ChainStep
from ci.site.layout import FAILED, TESTED

NOT_TESTED = "built, not tested"
REQUIRED = "ci.site.require_tests is true"


class PromoteStep(ChainStep):
    name = "promote"
    resource = "promote"
    always = True  # a failed test still files the image under failed/

    def run(self) -> StepResult:
        chain = self.chain
        image = chain.image
        site = chain.site_services.site
        untested = chain.tested and not chain.verdicts  # no tests declared: built, not tested
        verdict = FAILED if chain.tests_failed or (untested and chain.site_services.require_tests) else TESTED
        target = site.promoted_path(verdict, image.name, chain.stem)
        if not chain.tested or chain.image_file is None or not site.host.exists(chain.image_file):
            if chain.tested and site.host.exists(target):
                return StepResult(f"already in {verdict}/", {"verdict": verdict, "path": target})
            # An earlier step failed (no image file, or no verdict): promoting now would file an
            # untested image under tested/. It stays in staging; the next run tries again.
            return StepResult("not promoted: no image file and test verdict to promote", {"verdict": None})
        chain.cancel.check()  # the last moment a cancellation keeps the image in staging
        result: dict[str, Any] = {
            "name": image.name, "arch": image.spec.arch, "version": image.spec.version, "digest": image.digest,
            "test_digest": image.test_digest, "run_id": chain.run.run_id, "verdict": verdict, "tests": chain.verdicts,
            "image_file": posixpath.basename(chain.image_file), **chain.image_file_checksums}
        if untested:
            result["untested"] = NOT_TESTED + (f" ({REQUIRED})" if verdict == FAILED else "")
        if chain.spack is not None:  # Spack's version and the spack.lock (ci.pipeline.steps.spack_image)
            result["spack"] = {key: chain.spack.get(key) for key in ("spack_version", "spack_commit", "lock_sha256",
                                                                      "roots", "lock")}
        path = site.promote(chain.run.run_id, image.key, chain.stem, verdict, result)
        passed = sum(1 for v in chain.verdicts if v.get("passed"))
        if untested:
            detail = str(result["untested"]) if verdict == TESTED else f"{verdict}: {result['untested']}"
            return StepResult(detail, {"verdict": verdict, "path": path, "untested": True},
                              failed=verdict == FAILED)
        summary = f"{verdict}: {passed}/{len(chain.verdicts)} tests passed"
        failing = [f"{v['name']}: {'; '.join(v.get('reasons') or [])}" for v in chain.verdicts if not v.get("passed")]
        if failing:
            summary += " (" + " | ".join(failing) + ")"
        return StepResult(summary, {"verdict": verdict, "path": path}, failed=chain.tests_failed)
