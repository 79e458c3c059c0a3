"""The transfer step: push the image to the site's registry (only missing layers move) and stage
the image's test files in its staging folder on the site."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from ci.pipeline.executor import StepResult
from ci.pipeline.steps.chain import ChainStep


class TransferStep(ChainStep):
    name = "transfer"
    resource = "transfer"

    def run(self) -> StepResult:
        chain = self.chain
        services = chain.site_services
        image = chain.image
        with chain.run.log_path(image.key, "transfer").open("w", encoding="utf-8") as log:
            engine = services.image_engine(image.tag, log) if services.image_engine is not None else None
            pushed = services.registry.push(image.tag, image.name, f"{image.spec.version}-{image.digest12}", log,
                                            engine=engine)
        host = services.site.host
        tests_folder = image.spec.root / "tests"
        host.run(["mkdir", "-p", posixpath.join(chain.staging, "tests"), posixpath.join(chain.staging, "logs")])
        copied = 0
        if tests_folder.is_dir():
            for path in sorted(p for p in tests_folder.rglob("*") if p.is_file()):
                chain.cancel.check()
                host.put(path, posixpath.join(chain.staging, "tests", path.relative_to(tests_folder).as_posix()))
                copied += 1
        detail = f"{pushed.pushed_layers} layers pushed, {pushed.existing_layers} already there"
        return StepResult(detail, {"reference": pushed.reference, "pushed_layers": pushed.pushed_layers,
                                   "existing_layers": pushed.existing_layers, "test_files": copied})

    def absorb(self, data: Mapping[str, Any]) -> None:
        self.chain.reference = data.get("reference")
