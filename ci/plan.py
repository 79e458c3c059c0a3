"""Identity and skip decisions: digests, the FROM DAG, selection, and what needs doing.

The digest covers everything that decides an image and nothing else, so
"is this built?" is a lookup of the digest label, and a changed file rebuilds exactly the image
that sees it and its descendants.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from ci.definitions import Catalog, ImageSpec, UnsupportedDefinition, ancestors, definition_key
from ci.definitions.context import ContextError, context_digest
from ci.definitions.files import FileRefused, read_bytes, scan_tree
from ci.errors import DefinitionError, Problem

DIGEST_LABEL = "io.containers-ci.digest"
TEST_DIGEST_LABEL = "io.containers-ci.test-digest"
NAME_LABEL = "io.containers-ci.name"
DIGEST_VERSION = "1"  # bump when the digest recipe changes, so old images are not trusted


class Action(StrEnum):
    BUILD = "build"
    TAG = "tag"
    SKIP = "skip"


@dataclass(frozen=True)
class KnownImage:
    """An image some store (the local engine, a registry, a site) already holds."""

    name: str
    digest: str
    tags: tuple[str, ...] = ()


class ImageInventory(Protocol):
    """Answers "which digests exist already?" for a store of images."""

    def known_images(self) -> list[KnownImage]: ...


@dataclass
class PlannedImage:
    spec: ImageSpec
    digest: str
    test_digest: str
    tag: str
    parents: tuple[str, ...]
    action: Action
    reason: str
    selected: bool
    site_state: str | None = None  # "tested" / "failed" when the site already holds this digest
    needs_site: bool = False  # transfer, convert, test and promote are to be done
    site_reason: str = ""

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def digest12(self) -> str:
        return self.digest[:12]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "definition": self.spec.definition,
            "arch": self.spec.arch,
            "version": self.spec.version,
            "digest": self.digest,
            "digest12": self.digest12,
            "test_digest": self.test_digest,
            "tag": self.tag,
            "platform": self.spec.platform,
            "parents": [p.split("/", 1)[1] for p in self.parents],
            "action": self.action.value,
            "reason": self.reason,
            "selected": self.selected,
            "site_state": self.site_state,
            "needs_site": self.needs_site,
            "site_reason": self.site_reason,
            "tests": [test.name for test in self.spec.tests],
            "source": str(self.spec.source),
            "kind": self.spec.kind,
            "builder": self.spec.builder,
            "build_args": dict(self.spec.build_args),
            "secrets": list(self.spec.secrets),
        }


@dataclass
class Plan:
    """Images in dependency order (parents first), with what to do for each."""

    root: Path
    images: dict[str, PlannedImage] = field(default_factory=dict)
    unsupported: list[UnsupportedDefinition] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)  # worth knowing, blocking nothing

    def to_build(self) -> list[PlannedImage]:
        return [image for image in self.images.values() if image.action is not Action.SKIP]

    def has_work(self, image: PlannedImage) -> bool:
        return image.action is not Action.SKIP or image.needs_site

    def as_dict(self) -> dict[str, Any]:
        return {
            "definitions": str(self.root),
            "images": [image.as_dict() for image in self.images.values()],
            "unsupported": [
                {"name": u.name, "arch": u.arch, "kind": u.kind, "source": str(u.source), "reason": u.reason}
                for u in self.unsupported
            ],
            "warnings": [{"path": str(w.path), "field": w.field, "message": w.message, "fix": w.fix}
                         for w in self.warnings],
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)


def topological_order(parents: Mapping[str, Sequence[str]]) -> list[str]:
    """Kahn's algorithm, ties broken by name so that plans are stable."""
    children: dict[str, list[str]] = {key: [] for key in parents}
    missing = {key: 0 for key in parents}
    for key, keys in parents.items():
        for parent in keys:
            if parent in children:
                children[parent].append(key)
                missing[key] += 1
    ready = sorted(key for key, count in missing.items() if count == 0)
    order: list[str] = []
    while ready:
        key = ready.pop(0)
        order.append(key)
        for child in sorted(children[key]):
            missing[child] -= 1
            if missing[child] == 0:
                ready.append(child)
        ready.sort()
    return order


def image_digest(spec: ImageSpec, parent_digests: Iterable[str], context: str | None = None) -> str:
    """SHA-256 over the recipe, visible context, build args, platform, version, parents (and kind, secrets).

    `context` is the build context's digest when the caller has it already: variants of one
    definition share one context, hashed once. A Docker recipe is hashed under its old label, and
    kind and secrets only when they are not the defaults, so existing digests stay what they were.
    """
    digest = hashlib.sha256()
    digest.update(f"containers-ci digest v{DIGEST_VERSION}\n".encode())
    digest.update(f"version\0{spec.version}\nplatform\0{spec.platform}\n".encode())
    for name in sorted(spec.build_args):
        digest.update(f"arg\0{name}\0{spec.build_args[name]}\n".encode())
    for parent in sorted(parent_digests):
        digest.update(f"parent\0{parent}\n".encode())
    if spec.kind != "docker":
        digest.update(f"kind\0{spec.kind}\n".encode())
    for name in spec.secrets:  # the names only: a secret's value never decides (nor enters) the image
        digest.update(f"secret\0{name}\n".encode())
    digest.update(b"dockerfile\0" + spec.recipe.encode() + b"\n")
    digest.update(f"context\0{context if context is not None else context_digest(spec.root)}\n".encode())
    return digest.hexdigest()


def tests_digest(spec: ImageSpec) -> str:
    """SHA-256 over the test declarations and the tests folder: tests change without rebuilding the image.

    The folder is read through the same fence as the loader (links leaving the definition folder and
    special files were refused there), so a test digest never reads outside the definition.
    """
    digest = hashlib.sha256()
    for test in spec.tests:
        declared = {"name": test.name, "run": test.run, "resources": test.slurm.model_dump(mode="json"),
                    "expect": repr(test.expect), "script": test.script.name}
        digest.update(json.dumps(declared, sort_keys=True).encode() + b"\n")
        digest.update(_bytes(test.script))
    tests_folder = spec.root / "tests"
    if tests_folder.is_dir():
        found, _ = scan_tree(tests_folder, spec.root)
        for entry in found:
            digest.update(os.fsencode(entry.relative) + b"\0" + _bytes(entry.path))
    return digest.hexdigest()


def _bytes(path: Path) -> bytes:
    try:
        return read_bytes(path, what=str(path), limit=64 << 20)
    except FileRefused as exc:  # the loader refused it already; hash the refusal so the digest still moves
        return f"unreadable: {exc.message}".encode()


def image_tag(spec: ImageSpec, digest: str, registry_prefix: str = "") -> str:
    return f"{registry_prefix}{spec.name}:{spec.version}-{digest[:12]}"


def select(catalog: Catalog, only: Sequence[str] = ()) -> set[str]:
    """Image keys matching the `--only` globs (by image or definition name); all when empty.

    A pattern that matches nothing is an error: a typo must not silently build nothing. Images kept
    for when they are needed (`catalog.on_demand`) are not in "all".
    """
    if not only:
        return (set(catalog.images) | set(catalog.problems)) - catalog.on_demand
    chosen: set[str] = set()
    invalid_names = {key.split("/", 1)[-1]: key for key in catalog.problems}
    for pattern in only:
        matched = {key for key, spec in catalog.images.items()
                   if fnmatch.fnmatchcase(spec.name, pattern) or fnmatch.fnmatchcase(spec.definition, pattern)}
        matched |= {key for name, key in invalid_names.items() if fnmatch.fnmatchcase(name, pattern)}
        if not matched and not any(fnmatch.fnmatchcase(u.name, pattern) for u in catalog.unsupported):
            known = ", ".join(sorted(spec.name for spec in catalog.images.values())) or "none"
            raise DefinitionError([Problem(catalog.root, "--only", f"'{pattern}' matches no definition",
                                           f"use one of: {known}")])
        chosen |= matched
    return chosen


class SiteRecords(Protocol):
    """Answers "was this digest tested, or did it fail, at the site?"."""

    def state(self, name: str, digest: str) -> str | None: ...


def make_plan(
    catalog: Catalog,
    *,
    only: Sequence[str] = (),
    inventory: ImageInventory | None = None,
    force: bool = False,
    registry_prefix: str = "",
    site: SiteRecords | None = None,
    retry_failed: bool = False,
    extra_parents: Callable[[ImageSpec], Iterable[str]] | None = None,
) -> Plan:
    """Decide, for the selected images and the parents they need, what must be done.

    Without a site, the goal is that every selected image exists in the Docker engine. With a
    site, a selected image also needs the site steps unless its digest is already in tested/
    (or in failed/, unless retry_failed); an image is built only when it needs the site steps
    or a child that must be built needs it as its base.

    `extra_parents` names digests of inputs from outside the definitions that an image is built on
    (e.g. the site-env image, ci.site_env): they count like a parent's digest.

    Raises DefinitionError when any selected definition or one of its parents is invalid, so
    that nothing is built from a tree that is partly wrong.
    """
    selected = select(catalog, only)
    needed_images = {key for key in selected if key in catalog.images}
    needed_images |= ancestors(catalog, needed_images)
    blocking = {key for key in selected if key in catalog.problems}
    blocking |= {definition_key(catalog.images[key]) for key in needed_images}
    # A parent that failed to load is no image, so list its own problems with the child's.
    blocking |= {f"{catalog.images[key].arch}/{ref.repository}" for key in needed_images
                 for ref in catalog.images[key].from_references} & catalog.problems.keys()
    if "" in catalog.problems:
        blocking.add("")
    catalog.raise_for(sorted(blocking))

    known = _Known(inventory)

    order = topological_order({key: catalog.parents.get(key, ()) for key in needed_images})
    warnings = list(catalog.warnings)
    digests = _digests(catalog, order, warnings, extra_parents)

    site_states: dict[str, str | None] = {}
    needs_site: dict[str, bool] = {}
    site_reasons: dict[str, str] = {}
    for key in order:
        spec = catalog.images[key]
        state = site.state(spec.name, digests[key]) if site is not None else None
        site_states[key] = state
        if site is None or key not in selected:
            needs_site[key], site_reasons[key] = False, ""
        elif force:
            needs_site[key], site_reasons[key] = True, "forced"
        elif state == "tested":
            needs_site[key], site_reasons[key] = False, "tested"
        elif state == "failed" and not retry_failed:
            needs_site[key], site_reasons[key] = False, "failed before (use --retry-failed to try again)"
        else:
            needs_site[key] = True
            site_reasons[key] = "retrying a failed image" if state == "failed" else "not tested yet"

    children_of: dict[str, list[str]] = {key: [] for key in order}
    for key in order:
        for parent in catalog.parents.get(key, ()):
            children_of[parent].append(key)
    needs_image: dict[str, bool] = {}
    for key in reversed(order):
        wanted = needs_site[key] if site is not None else key in selected
        children = children_of[key]
        needs_image[key] = wanted or any(needs_image[child] and _will_build(child, digests, known.by_digest, force
                                                                            and child in selected)
                                         for child in children)

    plan = Plan(root=catalog.root, unsupported=list(catalog.unsupported), warnings=warnings)
    for key in order:
        spec = catalog.images[key]
        parents = tuple(catalog.parents.get(key, ()))
        digest = digests[key]
        tag = image_tag(spec, digest, registry_prefix)
        if not needs_image[key]:
            action, reason = Action.SKIP, site_reasons[key] or "already built"
            if site is None and key not in selected:
                action, reason = Action.SKIP, "not selected"
        else:
            action, reason = _decide(spec, digest, tag, parents, plan, known.by_digest, known.last_by_name,
                                     force and key in selected)
            if key not in selected and action is not Action.SKIP:
                reason = f"{reason} (needed by a selected image)"
        plan.images[key] = PlannedImage(
            spec=spec, digest=digest, test_digest=tests_digest(spec), tag=tag, parents=parents,
            action=action, reason=reason, selected=key in selected, site_state=site_states[key],
            needs_site=needs_site[key], site_reason=site_reasons[key],
        )
    return plan


class _Known:
    """The inventory's images, asked once and only when a decision needs them: a run whose images
    are all settled at the site (tested, or failed) builds nothing and never asks the engine."""

    def __init__(self, inventory: ImageInventory | None):
        self._inventory = inventory

    @functools.cached_property
    def images(self) -> list[KnownImage]:
        return self._inventory.known_images() if self._inventory is not None else []

    @functools.cached_property
    def by_digest(self) -> dict[str, KnownImage]:
        found: dict[str, KnownImage] = {}
        for image in self.images:  # several images may carry one digest (e.g. an untagged one left by --force)
            seen = found.get(image.digest)
            found[image.digest] = image if seen is None else KnownImage(
                seen.name or image.name, image.digest, seen.tags + image.tags)
        return found

    @functools.cached_property
    def last_by_name(self) -> dict[str, str]:
        return {image.name: image.digest for image in self.images}


def _digests(catalog: Catalog, order: Sequence[str], warnings: list[Problem],
             extra_parents: Callable[[ImageSpec], Iterable[str]] | None = None) -> dict[str, str]:
    """Every image's digest, parents first; each definition's context hashed once for all its variants.

    A context that cannot be read as the build would read it is a problem of its definition; all
    of them are raised together, after every image was tried.
    """
    contexts: dict[Path, str] = {}
    refused: dict[Path, Problem] = {}
    digests: dict[str, str] = {}
    for key in order:
        spec = catalog.images[key]
        if spec.root not in contexts and spec.root not in refused:
            def skipped(relative: str, why: str, root: Path = spec.root) -> None:
                warnings.append(Problem(root / relative, "", why, "remove it or list it in .dockerignore"))
            try:
                contexts[spec.root] = context_digest(spec.root, skipped)
            except ContextError as exc:
                refused[spec.root] = Problem(exc.path, "", exc.message, exc.fix)
        parents = catalog.parents.get(key, ())
        if spec.root in refused or any(parent not in digests for parent in parents):
            continue
        extra = list(extra_parents(spec)) if extra_parents is not None else []
        digests[key] = image_digest(spec, [digests[p] for p in parents] + extra, contexts[spec.root])
    if refused:
        raise DefinitionError(list(refused.values()))
    return digests


def _will_build(key: str, digests: Mapping[str, str], by_digest: Mapping[str, KnownImage], force: bool) -> bool:
    return force or digests[key] not in by_digest


def _decide(
    spec: ImageSpec,
    digest: str,
    tag: str,
    parents: Sequence[str],
    plan: Plan,
    by_digest: Mapping[str, KnownImage],
    last_by_name: Mapping[str, str],
    force: bool,
) -> tuple[Action, str]:
    if force:
        return Action.BUILD, "forced"
    rebuilt = [plan.images[p].name for p in parents if plan.images[p].action is Action.BUILD]
    if rebuilt and digest not in by_digest:
        return Action.BUILD, f"parent {', '.join(rebuilt)} is rebuilt"
    known = by_digest.get(digest)
    if known is not None:
        if tag in known.tags:
            return Action.SKIP, "already built"
        return Action.TAG, "built under another tag"
    previous = last_by_name.get(spec.name)
    if previous is not None:
        return Action.BUILD, f"changed since {previous[:12]}"
    return Action.BUILD, "not built yet"
