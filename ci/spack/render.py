"""Recipes from templates: the merged `spack.yaml` and the multi-stage Dockerfile of a Spack definition.

Like `spack containerize`, code only gathers a small context (images, paths, cache, files) and a
Jinja2 template in `templates/` turns it into text; `inv render NAME` shows exactly this text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Protocol

import jinja2
import yaml

from ci.config.spack import SpackSettings

ENV_DIR = "/opt/spack-environment"
MIRROR_NAME = "ci-buildcache"
DEFAULT_INSTALL_TREE = "/opt/software"


class Pair(Protocol):
    """A `source:target` copy (the Spacktainers `files:` pair, or container.yaml's)."""

    @property
    def source(self) -> str: ...

    @property
    def target(self) -> str: ...


class _Dumper(yaml.SafeDumper):
    """Block-style YAML with lists indented under their key, as Spack writes its files."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def to_yaml(value: Any) -> str:
    return yaml.dump(value, Dumper=_Dumper, default_flow_style=False, sort_keys=False, allow_unicode=True,
                     width=100).rstrip("\n")


_ENV = jinja2.Environment(loader=jinja2.PackageLoader("ci.spack", "templates"), trim_blocks=True,
                          lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
                          autoescape=False)
_ENV.filters["to_yaml"] = to_yaml


def render_template(name: str, context: Mapping[str, Any]) -> str:
    return _ENV.get_template(name).render(**context)


@dataclass(frozen=True)
class View:
    """A Spack view: its root (a link) and the folder the link points into (`<parent>/._<name>`)."""

    root: str
    store: str


def views_of(environment: Mapping[str, Any]) -> list[View]:
    """The view roots of `spack: view:` (a path, true for the environment's default, a mapping of views)."""
    value = environment.get("spack", {}).get("view")
    roots: list[str] = []
    if value is True:
        roots = [f"{ENV_DIR}/.spack-env/view"]
    elif isinstance(value, str):
        roots = [value]
    elif isinstance(value, Mapping):
        roots = [str(item["root"]) for item in value.values() if isinstance(item, Mapping) and item.get("root")]
    out = []
    for root in roots:
        path = PurePosixPath(root)
        out.append(View(root=str(path), store=str(path.parent / f"._{path.name}")))
    return out


def install_tree(environment: Mapping[str, Any]) -> str:
    tree = environment.get("spack", {}).get("config", {}).get("install_tree", DEFAULT_INSTALL_TREE)
    if isinstance(tree, Mapping):
        tree = tree.get("root", DEFAULT_INSTALL_TREE)
    return str(tree)


def render_spack_yaml(environment: Mapping[str, Any], *, name: str, arch: str, source: str) -> str:
    return render_template("spack.yaml.j2", {"environment": environment, "name": name, "arch": arch,
                                             "source": source})


def write_file_command(path: str, content: str, mode: str = "644") -> str:
    """An exec-form RUN argument list that writes `content` to `path` byte for byte (no shell quoting)."""
    return json.dumps(["/bin/sh", "-c", 'mkdir -p "$(dirname "$1")" && printf "%s" "$3" > "$1" && chmod "$2" "$1"',
                       "write", path, mode, content], ensure_ascii=False)


def render_dockerfile(environment: Mapping[str, Any], settings: SpackSettings, *, name: str, arch: str, source: str,
                      files: Sequence[Pair] = (), epilogue: str = "", builder_identity: str | None = None) -> str:
    """The multi-stage Dockerfile; it carries the merged spack.yaml itself, so it needs no build context."""
    spack_yaml = render_spack_yaml(environment, name=name, arch=arch, source=source)
    context = {
        "name": name, "arch": arch, "source": source, "spack_yaml": spack_yaml,
        "write_spack_yaml": write_file_command(f"{ENV_DIR}/spack.yaml", spack_yaml),
        "builder_identity": builder_identity or settings.builder_image,
        "builder_image": settings.builder_image, "runtime_image": settings.runtime_image,
        "runtime_packages": list(settings.runtime_packages),
        "env_dir": ENV_DIR, "install_tree": install_tree(environment), "views": views_of(environment),
        "buildcache": settings.buildcache, "mirror_name": MIRROR_NAME, "signed": settings.signed,
        "secret": settings.signing_key_env, "secrets": settings.build_secrets(),
        "s3_secrets": [("AWS_ACCESS_KEY_ID", settings.s3.access_key_env),
                       ("AWS_SECRET_ACCESS_KEY", settings.s3.secret_key_env)] if settings.s3_cache else [],
        "s3_endpoint": settings.s3.endpoint if settings.s3_cache else None,
        "s3_region": settings.s3.region if settings.s3_cache else None,
        "files": list(files), "epilogue": epilogue.strip("\n"),
    }
    return render_template("Dockerfile.j2", context)
