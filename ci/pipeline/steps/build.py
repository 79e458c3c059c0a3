"""The build step: stage the visible context, pin parents by tag, and build one image on a build host.

Staging makes the build see exactly the files the digest was computed from, and rewriting
`FROM parent` to the parent's exact tag means a child always builds on the parent image of
this same plan, never on whatever `parent:latest` happens to be.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from ci.buildhosts import BuildPool, cached_steps
from ci.definitions.context import stage_context
from ci.definitions.dockerfile import FromReference, parse_from_references, rewrite_from
from ci.docker.engine import BuildRequest, image_labels
from ci.errors import CIError
from ci.pipeline.executor import StepResult
from ci.pipeline.steps import spack_image
from ci.pipeline.steps.chain import Chain, ChainStep
from ci.plan import Action, PlannedImage
from ci.shutdown import Cancelled


def pinned_dockerfile(image: PlannedImage, parent_tags: Mapping[str, str]) -> str:
    """The composed Dockerfile with every FROM of a parent definition replaced by its exact tag."""

    def replace(ref: FromReference) -> str | None:
        return None if ref.stage_alias else parent_tags.get(ref.repository)

    spec = image.spec
    return rewrite_from(spec.composed_dockerfile(), spec.build_args, replace)


class BuildStep(ChainStep):
    """Build (or just re-tag) one planned image on a host of the build pool.

    The pool places the build (a free slot, the parents' host preferred), makes every image the
    build starts from present on that host (a parent built elsewhere comes from the build registry
    by digest), and gets the result back into the registry; the step records the host, the
    image's digest there, the digest of every parent it was built on, and how many steps the
    BuildKit cache answered. A host that stops answering mid-build is marked down and the build
    starts again on another host; the failed attempt stays in the log and in `attempts`.
    """

    name = "build"
    resource = "build"

    def __init__(self, chain: Chain, pool: BuildPool, parent_tags: Mapping[str, str], stage_root: Path,
                 no_cache: bool = False):
        super().__init__(chain)
        self.pool = pool
        self.parent_tags = dict(parent_tags)
        self.stage = stage_root / chain.image.key
        self.log_path = chain.run.log_path(chain.image.key, "build")
        self.no_cache = no_cache

    def run(self) -> StepResult:
        image = self.chain.image
        if image.action is Action.TAG:
            return self._retag()
        if self.pool.shared and not self.no_cache and image.reason != "forced":
            reused = self._from_registry()
            if reused is not None:
                return reused
        if self.stage.exists():
            shutil.rmtree(self.stage)
        context = self.stage / "context"
        stage_context(image.spec.root, context)
        dockerfile = self.stage / "Dockerfile"
        text = pinned_dockerfile(image, self.parent_tags)
        dockerfile.write_text(text, encoding="utf-8")
        labels = image_labels(image.name, image.spec.version, image.digest, image.test_digest, str(image.spec.source))
        cache_from, cache_to = self.pool.cache_options(image.tag, image.spec.platform, self.no_cache)
        request = BuildRequest(name=image.name, tag=image.tag, context=context, dockerfile=dockerfile,
                               build_args=image.spec.build_args, labels=labels, platform=image.spec.platform,
                               no_cache=self.no_cache, secrets=image.spec.secrets, cache_from=cache_from,
                               cache_to=cache_to)
        try:
            with self.log_path.open("w", encoding="utf-8") as log:
                return self._build_somewhere(request, needed_images(text, image.spec.build_args), log)
        finally:
            shutil.rmtree(self.stage, ignore_errors=True)

    def absorb(self, data: Mapping[str, Any]) -> None:
        spack = data.get("spack")
        if isinstance(spack, Mapping):
            self.chain.spack = dict(spack)
            self.chain.set_version(str(spack["version"]), str(spack["tag"]))

    def _build_somewhere(self, request: BuildRequest, needed: list[str], log: IO[str]) -> StepResult:
        image = self.chain.image
        attempts: list[dict[str, str]] = []
        while True:
            placement = self.pool.acquire(image.spec.platform, list(self.parent_tags.values()), self.chain.cancel)
            host = placement.host
            marker = f"== build host {host.name} (attempt {len(attempts) + 1})\n"
            log.write(marker)
            log.flush()
            try:
                pulled = {ref: digest for ref in needed if (digest := self.pool.ensure(host, ref, log))}
                image_id = host.build(request, log)
                log.flush()
                cached = cached_steps(self.log_path.read_text(encoding="utf-8", errors="replace").rsplit(marker, 1)[-1])
                self.pool.export_cache(host, image.tag, image.spec.platform, log)
                digest = self.pool.publish(host, image.tag, log)
            except Cancelled:
                raise
            except CIError as exc:
                if host.alive():
                    raise
                self.pool.mark_down(host, f"it stopped answering during the build of {image.name}")
                attempts.append({"host": host.name, "error": str(exc)})
                log.write(f"== attempt {len(attempts)} on build host {host.name} failed: the host stopped "
                          f"answering ({exc}); trying another host\n")
                continue
            finally:
                self.pool.release(host)
            parents = {tag: self.pool.digest_of(tag) or "" for tag in self.parent_tags.values()}
            data: dict[str, Any] = {
                "tag": image.tag, "image_id": image_id, "log": str(self.log_path), "host": host.name,
                "digest": digest or "", "parents": parents, "pulled": pulled, "cached_steps": cached,
                "held_parents": list(placement.held), "attempts": attempts}
            if image.spec.kind == "spack":  # labels from its spack.lock; the concretized version's tag
                data["spack"] = spack_image.finish(host.engine(), image, self.log_path)
                data["tag"] = data["spack"]["tag"]
            detail = f"built {data['tag']} on {host.name}" + (f" (after {len(attempts)} failed attempt(s))"
                                                              if attempts else "")
            return StepResult(detail=detail, data=data)

    def _from_registry(self) -> StepResult | None:
        """The image of this exact definition digest, already in the build registry (built by another
        process, e.g. a workflow job on another build VM): pulled by digest instead of built again.

        Our tag ends in the definition's digest, and the pulled image's digest label is checked;
        `--force` and `--no-cache` always build.
        """
        image = self.chain.image
        try:
            found = self.pool.resolve(image.tag)
        except CIError:
            return None  # no answer about it: build it
        if found is None:
            return None
        placement = self.pool.acquire(image.spec.platform, [], self.chain.cancel)
        host = placement.host
        try:
            with self.log_path.open("w", encoding="utf-8") as log:
                log.write(f"== build host {host.name}: {image.tag} is in the build registry ({found})\n")
                digest = self.pool.ensure(host, image.tag, log)
            if host.engine().image_digest_label(image.tag) != image.digest:
                host.untag(image.tag)
                return None
        except CIError:
            return None
        finally:
            self.pool.release(host)
        return StepResult(detail=f"pulled {image.tag} from the build registry onto {host.name}",
                          data={"tag": image.tag, "host": host.name, "digest": digest or found, "reused": True,
                                "log": str(self.log_path)})

    def _retag(self) -> StepResult:
        image = self.chain.image
        found = self.pool.holder_of_digest(image.digest)
        if found is None:
            raise LookupError(f"no build host holds an image with digest {image.digest12}")
        host, source = found
        host.tag(source, image.tag)
        with self.log_path.open("w", encoding="utf-8") as log:
            digest = self.pool.publish(host, image.tag, log)
        return StepResult(detail=f"tagged {image.tag} on {host.name}",
                          data={"tag": image.tag, "host": host.name, "digest": digest or ""})


_COPY_FROM = re.compile(r"(?im)^\s*(?:COPY|ADD|RUN)\b[^\n]*?--from=[\"']?(?P<image>[^\s\"']+)")


def needed_images(dockerfile: str, build_args: Mapping[str, str]) -> list[str]:
    """The images a build starts from: every FROM that is not a stage or scratch, and `--from=` images.

    These must be on the host that builds (the pool brings them there from the build registry).
    """
    refs = parse_from_references(dockerfile, build_args)
    stages = {ref.image.lower() for ref in refs if ref.stage_alias}
    aliases = {m.lower() for m in re.findall(r"(?im)^\s*FROM\s+(?:--\S+\s+)*\S+\s+AS\s+(\S+)", dockerfile)}
    out: list[str] = []
    for ref in refs:
        if not ref.stage_alias and ref.image.lower() != "scratch" and ref.image not in out:
            out.append(ref.image)
    for match in _COPY_FROM.finditer(dockerfile):
        name = match.group("image")
        if name.lower() not in stages | aliases and not name.isdigit() and name not in out:
            out.append(name)
    return out
