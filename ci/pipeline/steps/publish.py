"""The publish step: a tested image goes to every configured target that lacks it (after promote).

It reads what promotion filed (`tested/<name>/<stem>/result.json` and the image file beside it),
so it serves both an image tested in this run and one tested in an earlier run that was never
published (the plan skips those, but their publish step still runs). An image in `failed/` or not
promoted is never published. The step hands `ci.publish` a `TestedImage` and never names a
target kind; the outcome per target (where, the pull command, bytes sent) goes into the run's
report and summary.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ci.config.settings import RegistrySettings
from ci.errors import CIError
from ci.hosts import LocalHost
from ci.pipeline.executor import StepResult
from ci.pipeline.steps.chain import Chain, ChainStep
from ci.publish import Publishing, TestedImage
from ci.publish.base import SourceImage
from ci.publish.publishing import outcomes_json, summary
from ci.site.layout import TESTED, Site


def tested_image(site: Site, registry: RegistrySettings, push_address: str, name: str, stem: str,
                 cache: Path) -> TestedImage | None:
    """The tested image `tested/<name>/<stem>/` of the site, or None when it is not there."""
    folder = site.promoted_path(TESTED, name, stem)
    result_path = posixpath.join(folder, "result.json")
    if not site.host.exists(result_path):
        return None
    try:
        result: dict[str, Any] = json.loads(site.host.read_text(result_path))
    except ValueError:
        raise CIError(f"{result_path} is not readable JSON; the image cannot be published until it is "
                      "promoted again") from None
    file_name = posixpath.basename(str(result.get("image_file") or ""))
    if not file_name:
        raise CIError(f"{result_path} names no image file")
    remote = posixpath.join(folder, file_name)

    fetched: list[Path] = []

    def fetch() -> Path:
        if isinstance(site.host, LocalHost):
            return Path(remote)
        cache.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(dir=cache))
        fetched.append(folder)
        local = folder / file_name
        site.host.get(remote, local)
        return local

    def cleanup() -> None:
        """A remote site's file was copied here for publishing: remove the copy (images are GBs)."""
        for folder in fetched:
            shutil.rmtree(folder, ignore_errors=True)

    username, token = os.environ.get(registry.username_env), os.environ.get(registry.token_env)
    source = SourceImage(address=push_address, repository=name,
                         tag=f"{result.get('version')}-{str(result.get('digest'))[:12]}",
                         insecure=registry.insecure, username=username if username and token else None,
                         password=token if username and token else None)
    return TestedImage(result=result, fetch=fetch, source=source, cleanup=cleanup)


class PublishStep(ChainStep):
    name = "publish"
    resource = "publish"

    def __init__(self, chain: Chain, publishing: Publishing):
        super().__init__(chain)
        self.publishing = publishing

    def run(self) -> StepResult:
        chain = self.chain
        services = chain.site_services
        image = chain.image
        tested = tested_image(services.site, services.registry.settings, services.registry.push_address, image.name,
                              chain.stem, chain.run.path / "publish")
        if tested is None:
            return StepResult("not published: the image is not in tested/", {"published": []})
        if not self.publishing.wanted(tested.result):
            return StepResult("no publish target wants this image", {"published": []})
        outcomes = self.publishing.publish(tested)
        failed = any(outcome.state == "failed" for outcome in outcomes)
        return StepResult(summary(outcomes), {"published": outcomes_json(outcomes)}, failed=failed)
