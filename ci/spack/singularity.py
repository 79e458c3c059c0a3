"""Apptainer/Singularity definition files: the parser, the version rule, and the Dockerfile translation.

A `.def` is built by default by translating it to a Dockerfile, so it flows through build,
transfer, convert and test like any image; the sections that Apptainer keeps as files
(`%environment`, `%runscript`, `%startscript`, `%help`, `%test`) are written where Apptainer
itself reads them, under `/.singularity.d/`. `%setup` (runs as root on the build host) and the
`%app*` sections (SCIF apps) cannot be honoured safely by a Docker build and are clear errors.
A site engine that builds `.def` files natively gets `native_build_command` instead.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from ci.errors import Problem
from ci.spack.render import render_template, write_file_command
from ci.validation import has_control, shown

BOOTSTRAPS = ("docker", "docker-daemon", "localimage")
SECTIONS = ("files", "post", "environment", "runscript", "startscript", "labels", "help", "test")
_REFUSED = {
    "setup": ("%setup runs as root on the build host, outside the container",
              "move the commands into %post, or copy what you need with %files"),
    "app": ("SCIF apps (%app* sections) have no Docker equivalent",
            "install each app in %post and choose between them in %runscript"),
}
_HEADER_KEYS = ("bootstrap", "from", "stage", "registry", "namespace", "includecmd", "fingerprints")
_SECTION_LINE = re.compile(r"^%([A-Za-z]+)(?:\s+(.*))?$")
_HEADER_LINE = re.compile(r"^([A-Za-z]+)\s*:\s*(.*)$")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]*\Z")
_PATH = re.compile(r"^[^\s'\"\\$`*?\[\]]+\Z")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")


@dataclass(frozen=True)
class ImageReference:
    """`host:5000/ns/img:tag@sha256:...` in parts (tag and digest optional)."""

    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, text: str) -> ImageReference:
        name, _, digest = text.partition("@")
        last = name.rsplit("/", 1)[-1]
        tag = None
        if ":" in last:  # a colon before the last slash is a registry port, not a tag
            tag = last.split(":", 1)[1]
            name = name[: len(name) - len(last)] + last.split(":", 1)[0]
        return cls(repository=name, tag=tag or None, digest=digest or None)


@dataclass(frozen=True)
class FileCopy:
    """One %files line; `data` set: the file travels inside the recipe (no build context needed)."""

    source: str
    target: str
    data: bytes | None = None


@dataclass
class DefinitionFile:
    """A parsed `.def`: header, and each section's text (its first line's arguments apart)."""

    path: Path
    bootstrap: str = ""
    base: str = ""
    sections: dict[str, str] = field(default_factory=dict)
    arguments: dict[str, str] = field(default_factory=dict)
    files: list[FileCopy] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def reference(self) -> ImageReference:
        return ImageReference.parse(self.base)

    def version(self, fallback: str | None = None) -> str:
        """The From tag (`img:2.1@sha256:...` -> `2.1`); without a tag: container.yaml's, else latest."""
        tag = self.reference.tag
        if tag and _TAG.match(tag):
            return tag
        return fallback or "latest"


def parse_definition(path: Path, folder: Path, text: str | None = None) -> tuple[DefinitionFile | None,
                                                                                list[Problem]]:
    """Every problem of the file in one pass; `folder` is what %files sources are relative to.

    `text` is the file's content when the caller read it already (the kind reads through the
    definitions' fenced, size-capped reader).
    """
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return None, [Problem(path, "", f"cannot be read ({exc.__class__.__name__})", "make it a UTF-8 text file")]
    problems: list[Problem] = []
    definition = DefinitionFile(path=path)
    header: dict[str, str] = {}
    header_lines: dict[str, int] = {}
    starts: dict[str, int] = {}  # the line of each section's header
    current: str | None = None
    body: dict[str, list[str]] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if has_control(line.replace("\t", " ")):
            problems.append(Problem(path, f"line {number}", "contains a control character",
                                    "remove it (only tabs and printable text belong in a .def)"))
            continue
        section = _SECTION_LINE.match(line)
        if section and not raw[:1].isspace():
            name = section.group(1).lower()
            current = name
            if name.startswith("app"):
                message, fix = _REFUSED["app"]
                problems.append(Problem(path, f"%{section.group(1)}", message, fix))
            elif name in _REFUSED:
                message, fix = _REFUSED[name]
                problems.append(Problem(path, f"%{name}", message, fix))
            elif name not in SECTIONS:
                problems.append(Problem(path, f"%{section.group(1)}", "is not a section of a definition file",
                                        f"use one of {', '.join('%' + s for s in SECTIONS)}"))
            elif name in body:
                problems.append(Problem(path, f"%{name}", "appears twice", "merge the two sections into one"))
            else:
                body[name] = []
                starts[name] = number
                definition.arguments[name] = (section.group(2) or "").strip()
            continue
        if current is None:
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            match = _HEADER_LINE.match(stripped)
            if match is None:
                problems.append(Problem(path, f"line {number}", f"{shown(stripped)} is not a 'Keyword: value' header",
                                        "start the file with 'Bootstrap: docker' and 'From: image:tag'"))
                continue
            key, value = match.group(1).lower(), match.group(2).strip()
            if key not in _HEADER_KEYS:
                problems.append(Problem(path, match.group(1), "is not a header keyword this project reads",
                                        "use Bootstrap and From"))
            elif key in header:
                problems.append(Problem(path, match.group(1), f"is given twice (lines {header_lines[key]} and "
                                        f"{number})", "keep one of them"))
            header[key] = value
            header_lines.setdefault(key, number)
            continue
        if current in body:
            body[current].append(raw)
    _check_header(definition, header, problems)
    definition.sections = {name: _dedent(lines) for name, lines in body.items()}
    _check_arguments(definition, problems)
    definition.files = _files(definition, folder, problems)
    definition.labels = _labels(definition, problems, _label_lines(text, starts.get("labels")))
    return (definition if not problems else None), problems


def _check_header(definition: DefinitionFile, header: Mapping[str, str], problems: list[Problem]) -> None:
    path = definition.path
    bootstrap = header.get("bootstrap", "")
    if not bootstrap:
        problems.append(Problem(path, "Bootstrap", "is missing", "start the file with 'Bootstrap: docker'"))
    elif bootstrap.lower() not in BOOTSTRAPS:
        problems.append(Problem(path, "Bootstrap", f"{shown(bootstrap)} cannot be built here",
                                f"use one of {', '.join(BOOTSTRAPS)}"))
    definition.bootstrap = bootstrap.lower()
    base = header.get("from", "")
    if not base:
        problems.append(Problem(path, "From", "is missing", "name the base image, e.g. 'From: debian:12'"))
    elif definition.bootstrap == "localimage":
        problems.append(Problem(path, "Bootstrap", "a local image file cannot be the base of a Docker build",
                                "push the image to a registry and use 'Bootstrap: docker', or build natively "
                                "with the apptainer engine"))
    elif not re.match(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*\Z", base):
        problems.append(Problem(path, "From", f"{shown(base)} is not an image reference",
                                "write e.g. 'From: registry:5000/ns/image:1.0'"))
    definition.base = base
    for key in ("stage", "registry", "namespace", "includecmd", "fingerprints"):
        if key in header:
            problems.append(Problem(path, key.capitalize(), "is not supported by the Docker translation",
                                    "write the full image reference in From (registry/namespace/image:tag) "
                                    "and use one stage per definition"))


def _dedent(lines: Sequence[str]) -> str:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    while lines and not lines[0].strip():
        lines = lines[1:]
    indents = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    cut = min(indents) if indents else 0
    return "\n".join(line[cut:] if line.strip() else "" for line in lines)


def _check_arguments(definition: DefinitionFile, problems: list[Problem]) -> None:
    for name, argument in definition.arguments.items():
        if not argument:
            continue
        shell = re.fullmatch(r"-c\s+(/[A-Za-z0-9/_.-]+)", argument)
        if name in ("post", "test", "runscript", "startscript") and shell:
            continue
        problems.append(Problem(definition.path, f"%{name}", f"the argument {shown(argument)} is not supported",
                                "only '-c /bin/bash' (the shell) may follow %post, %test, %runscript, %startscript"))


def shell_of(definition: DefinitionFile, section: str) -> str:
    argument = definition.arguments.get(section, "")
    return argument.split()[1] if argument.startswith("-c") else "/bin/sh"


def _files(definition: DefinitionFile, folder: Path, problems: list[Problem]) -> list[FileCopy]:
    out: list[FileCopy] = []
    for index, line in enumerate(definition.sections.get("files", "").splitlines()):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        parts = entry.split()
        where = f"%files[{index}]"
        if len(parts) > 2:
            problems.append(Problem(definition.path, where, f"{shown(entry)} has more than a source and a target",
                                    "write 'source target', paths without spaces"))
            continue
        source, target = parts[0], parts[-1]
        if not _PATH.match(source) or not _PATH.match(target):
            problems.append(Problem(definition.path, where, f"{shown(entry)} holds characters a path here cannot",
                                    "use paths without quotes, '$', '*' or brackets"))
            continue
        if PurePosixPath(source).is_absolute() or ".." in PurePosixPath(source).parts or \
                not (folder / source).resolve().is_relative_to(folder.resolve()):
            problems.append(Problem(definition.path, where, f"source {shown(source)} leaves the definition folder",
                                    f"put it inside {folder} and name it relative to that folder"))
            continue
        if not (folder / source).exists():
            problems.append(Problem(definition.path, where, f"source {shown(source)} does not exist",
                                    f"create {folder / source} or fix the path"))
            continue
        if not PurePosixPath(target).is_absolute():
            target = "/" + target  # Apptainer copies a relative target under the container's root
        out.append(FileCopy(source=source, target=target))
    return out


def _label_lines(text: str, start: int | None) -> list[int]:
    """The file's line numbers of the %labels entries, in order (for messages naming both lines)."""
    if start is None:
        return []
    numbers = []
    for number, raw in enumerate(text.splitlines()[start:], start=start + 1):
        if _SECTION_LINE.match(raw.rstrip()) and not raw[:1].isspace():
            break
        if raw.strip() and not raw.strip().startswith("#"):
            numbers.append(number)
    return numbers


def _labels(definition: DefinitionFile, problems: list[Problem], lines: Sequence[int] = ()) -> dict[str, str]:
    labels: dict[str, str] = {}
    first: dict[str, str] = {}
    entry_number = 0
    for index, line in enumerate(definition.sections.get("labels", "").splitlines()):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        key, _, value = entry.partition(" ")
        line = f"line {lines[entry_number]}" if entry_number < len(lines) else f"%labels[{index}]"
        entry_number += 1
        if not _LABEL_KEY.match(key):
            problems.append(Problem(definition.path, f"%labels[{index}]", f"{shown(key)} is not a label name",
                                    "write 'Name value', the name of letters, digits, '.', '_', '-' or '/'"))
            continue
        if key in labels:
            problems.append(Problem(definition.path, f"%labels[{index}]", f"the label {shown(key)} is given twice "
                                    f"({first[key]} and {line})", "keep one of them"))
            continue
        first[key] = line
        labels[key] = value.strip()
    return labels


def apptainer_files(definition: DefinitionFile) -> list[tuple[str, str, str]]:
    """(path in the image, file mode, content) of the files Apptainer reads under /.singularity.d/."""
    out: list[tuple[str, str, str]] = []
    sections = definition.sections
    if sections.get("environment"):
        out.append(("/.singularity.d/env/90-environment.sh", "644",
                    "#!/bin/sh\n# Custom environment shell code should follow\n\n" + sections["environment"] + "\n"))
    for name, file_name in (("runscript", "runscript"), ("startscript", "startscript"), ("test", "test")):
        if sections.get(name):
            out.append((f"/.singularity.d/{file_name}", "755",
                        f"#!{shell_of(definition, name)}\n\n" + sections[name] + "\n"))
    if sections.get("help"):
        out.append(("/.singularity.d/runscript.help", "644", sections["help"] + "\n"))
    return out


def _json(argv: Sequence[str]) -> str:
    """A Dockerfile exec-form array: JSON keeps every byte of a script exact, no shell quoting."""
    return json.dumps(list(argv), ensure_ascii=False)


def translate(definition: DefinitionFile, *, source: str, name: str, base: str | None = None) -> str:
    """The Dockerfile a translated build uses; `base` replaces From (a parent definition's tag)."""
    writes = [write_file_command(path, content, mode) for path, mode, content in apptainer_files(definition)]
    post = definition.sections.get("post", "")
    embedded = [_json(["/bin/sh", "-c", 'mkdir -p "$(dirname "$1")" && printf "%s" "$2" | base64 -d > "$1"',
                       "write", pair.target, base64.b64encode(pair.data).decode("ascii")])
                for pair in definition.files if pair.data is not None]
    context = {
        "name": name, "source": source, "base": base or definition.base,
        "files": [pair for pair in definition.files if pair.data is None], "embedded": embedded,
        "post": _json([shell_of(definition, "post"), "-e", "-c", post]) if post.strip() else "",
        "writes": writes,
        "labels": [(key, json.dumps(value, ensure_ascii=False)) for key, value in definition.labels.items()],
        "has_runscript": bool(definition.sections.get("runscript")),
    }
    return render_template("singularity.Dockerfile.j2", context)


class BuildingEngine(Protocol):
    """What a site engine offers to build a .def itself (ci.engines' Apptainer and SingularityCE engines)."""

    name: str

    @property
    def settings(self) -> Any: ...


def native_build_command(engine: BuildingEngine, definition: str, output: str) -> list[str]:
    """`apptainer build --fix-perms [--mksquashfs-args ..] OUT.sif X.def`, for an engine that builds .def itself.

    The `From:` of a `Bootstrap: docker` definition names an image in the site registry; a plain-http
    registry is selected with `<ENGINE>_NOHTTPS` in the environment (see the engine's conversion_env).
    """
    settings = engine.settings
    argv = [settings.binary or engine.name, "build", "--fix-perms"]
    if settings.compression is not None:
        argv += ["--mksquashfs-args", " ".join(settings.compression.mksquashfs_args())]
    return [*argv, *settings.build_options, output, definition]
