"""The build step: stage the visible context, pin parents by tag, and build one image.

Staging makes the build see exactly the files the digest was computed from, and rewriting
`FROM parent` to the parent's exact tag means a child always builds on the parent image of
this same plan, never on whatever `parent:latest` happens to be.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ci.definitions.context import stage_context
from ci.definitions.dockerfile import FromReference, rewrite_from
from ci.docker.engine import BuildRequest, DockerEngine, image_labels
from ci.pipeline.executor import StepResult
from ci.pipeline.steps import spack_image
from ci.pipeline.steps.chain import Chain, ChainStep
from ci.plan import Action, PlannedImage


def pinned_dockerfile(image: PlannedImage, parent_tags: Mapping[str, str]) -> str:
    """The composed Dockerfile with every FROM of a parent definition replaced by its exact tag."""

    def replace(ref: FromReference) -> str | None:
        return None if ref.stage_alias else parent_tags.get(ref.repository)

    spec = image.spec
    return rewrite_from(spec.composed_dockerfile(), spec.build_args, replace)


class BuildStep(ChainStep):
    """Build (or just re-tag) one planned image with the build side's Docker engine."""

    name = "build"
    resource = "build"

    def __init__(self, chain: Chain, engine: DockerEngine, parent_tags: Mapping[str, str], stage_root: Path,
                 no_cache: bool = False):
        super().__init__(chain)
        self.engine = engine
        self.parent_tags = dict(parent_tags)
        self.stage = stage_root / chain.image.key
        self.log_path = chain.run.log_path(chain.image.key, "build")
        self.no_cache = no_cache

    def run(self) -> StepResult:
        image = self.chain.image
        if image.action is Action.TAG:
            source = self._existing_reference()
            self.engine.tag(source, image.tag)
            return StepResult(detail=f"tagged {image.tag}", data={"tag": image.tag})
        if self.stage.exists():
            shutil.rmtree(self.stage)
        context = self.stage / "context"
        stage_context(image.spec.root, context)
        dockerfile = self.stage / "Dockerfile"
        dockerfile.write_text(pinned_dockerfile(image, self.parent_tags), encoding="utf-8")
        labels = image_labels(image.name, image.spec.version, image.digest, image.test_digest, str(image.spec.source))
        request = BuildRequest(name=image.name, tag=image.tag, context=context, dockerfile=dockerfile,
                               build_args=image.spec.build_args, labels=labels, platform=image.spec.platform,
                               no_cache=self.no_cache, secrets=image.spec.secrets)
        try:
            with self.log_path.open("w", encoding="utf-8") as log:
                image_id = self.engine.build(request, log)
        finally:
            shutil.rmtree(self.stage, ignore_errors=True)
        data: dict[str, Any] = {"tag": image.tag, "image_id": image_id, "log": str(self.log_path)}
        if image.spec.kind == "spack":  # labels from its spack.lock; the concretized version's tag
            data["spack"] = spack_image.finish(self.engine, image, self.log_path)
            data["tag"] = data["spack"]["tag"]
        return StepResult(detail=f"built {data['tag']}", data=data)

    def absorb(self, data: Mapping[str, Any]) -> None:
        spack = data.get("spack")
        if isinstance(spack, Mapping):
            self.chain.spack = dict(spack)
            self.chain.set_version(str(spack["version"]), str(spack["tag"]))

    def _existing_reference(self) -> str:
        for known in self.engine.known_images():
            if known.digest == self.chain.image.digest and known.tags:
                return known.tags[0]
        raise LookupError(f"no local image carries digest {self.chain.image.digest12}")
