"""Hostile definition trees: each is one clear problem (file, field, message, fix) or is accepted safely.

A shared CI runs other people's definitions, so every field and every file is hostile: links out of
the folder (`tests/env -> /proc/self/environ`), newlines that would add shell lines to job scripts,
FIFOs that hang a reader, bytes that are not UTF-8, folders deeper than Python's recursion limit,
YAML bombs, markup that breaks the terminal. Each case builds a tree in a tmp folder and runs it
through `ci.api.plan` (with an engine that does not answer, as on a machine without Docker); a
sample also runs as `inv plan --definitions DIR` (with and without `--json`) in a subprocess with a
time limit: exit 2, valid JSON, no traceback, no hang. The odd but valid trees at the end must be
accepted.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ci import api
from ci.config.settings import load_settings
from ci.definitions import load_catalog
from ci.errors import DefinitionError, Problem
from tests.support.paths import PROJECT_DIR

FROM = "FROM containers-ci/debian:bookworm\n"
ROOT_USER = os.geteuid() == 0  # root reads mode-000 files: then they are accepted, safely
DEEP = 1200  # deeper than Python's default recursion limit (1000)


@dataclass(frozen=True)
class Refused:
    key: str
    field: str | None  # None: any field
    message: str


@dataclass(frozen=True)
class Accepted:
    images: tuple[str, ...] = ()  # keys that must be planned
    warning: str = ""  # a part of a plan warning that must be there


Build = Callable[[Path], None]


@dataclass(frozen=True)
class Case:
    id: str
    files: dict[str, str | bytes]
    expect: Refused | Accepted
    links: dict[str, str] = field(default_factory=dict)  # path -> target (absolute, or relative to the link)
    fifos: tuple[str, ...] = ()
    sockets: tuple[str, ...] = ()
    modes: dict[str, int] = field(default_factory=dict)
    build: Build | None = None
    only: tuple[str, ...] = ()


def case(id: str, yaml_text: str | None, expect: Refused | Accepted, *, dockerfile: str | bytes | None = FROM,
         extra: dict[str, str | bytes] | None = None, **kwargs: object) -> Case:
    """A case about definition amd64/a: its container.yaml, Dockerfile and more files."""
    files: dict[str, str | bytes] = {}
    if dockerfile is not None:
        files["amd64/a/Dockerfile"] = dockerfile
    if yaml_text is not None:
        files["amd64/a/container.yaml"] = yaml_text
    files.update(extra or {})
    return Case(id, files, expect, **kwargs)  # type: ignore[arg-type]


def bad(field_name: str | None, message: str, key: str = "amd64/a") -> Refused:
    return Refused(key, field_name, message)


def unreadable(field_name: str | None, message: str, key: str = "amd64/a", images: tuple[str, ...] = ()
               ) -> Refused | Accepted:
    return Accepted(images) if ROOT_USER else Refused(key, field_name, message)


OK_A = Accepted(("amd64/a",))
SCRIPT = {"amd64/a/tests/t.sh": "echo ok\n"}


def with_test(body: str) -> str:
    return "tests:\n  - name: t\n    script: tests/t.sh\n" + body


def slurm(value: str) -> str:
    return with_test(f"    slurm: {value}\n")


def _deep_context(root: Path) -> None:
    _deep(root / "amd64/a/src")


def _deep_tests(root: Path) -> None:
    _deep(root / "amd64/a/tests", leaf="t.sh")


def _deep(top: Path, leaf: str = "leaf.txt") -> None:
    top.mkdir(parents=True, exist_ok=True)
    path = str(top)
    for _ in range(DEEP):  # one level at a time: Path.mkdir(parents=True) itself recurses
        path += "/d"
        os.mkdir(path)
    Path(path, leaf).write_text("deep\n")


def _from_chain(root: Path, cycle: bool = False) -> None:
    count = DEEP
    for index in range(count):
        parent = f"n{index - 1}" if index else ("n" + str(count - 1) if cycle else "containers-ci/debian:bookworm")
        folder = root / "amd64" / f"n{index}"
        folder.mkdir(parents=True)
        (folder / "Dockerfile").write_text(f"FROM {parent}\n")


def _jobs_collide(root: Path) -> None:
    for name, test in (("mpi", "hello-world"), ("mpi-hello", "world")):
        folder = root / "amd64" / name
        (folder / "tests").mkdir(parents=True)
        (folder / "Dockerfile").write_text(FROM)
        (folder / "tests" / f"{test}.sh").write_text("echo\n")


def _non_utf8_context_name(root: Path) -> None:
    folder = root / "amd64/a"
    folder.mkdir(parents=True)
    (folder / "Dockerfile").write_text(FROM)
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.txt"), "wb") as handle:
        handle.write(b"x")


def _non_utf8_folder_name(root: Path) -> None:
    folder = os.path.join(os.fsencode(root / "amd64"), b"bad\xff")
    os.makedirs(folder)
    with open(os.path.join(folder, b"Dockerfile"), "w") as handle:
        handle.write(FROM)


def _non_utf8_test_name(root: Path) -> None:
    folder = root / "amd64/a"
    (folder / "tests").mkdir(parents=True)
    (folder / "Dockerfile").write_text(FROM)
    with open(os.path.join(os.fsencode(folder / "tests"), b"r\xfcn.sh"), "w") as handle:
        handle.write("echo\n")


def _control_folder_name(root: Path) -> None:
    (root / "amd64" / "a\nb").mkdir(parents=True)
    (root / "amd64" / "a\nb" / "Dockerfile").write_text(FROM)


LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8))

CASES: list[Case] = [
    # -- links leaving the definition (the /proc/self/environ leak) ---------------------------------
    case("tests-link-to-proc-environ", None, bad("tests", "outside the definition folder"),
         links={"amd64/a/tests/env": "/proc/self/environ"}, extra=SCRIPT),
    case("declared-test-script-is-a-link-out", "tests: [{name: t, script: tests/t.sh}]\n",
         bad("tests[0].script", "outside the definition folder"), links={"amd64/a/tests/t.sh": "/etc/passwd"}),
    case("tests-link-to-ssh-key-in-subfolder", None, bad("tests", "outside the definition folder"),
         links={"amd64/a/tests/data/key": "/root/.ssh/id_ed25519"}, extra={"amd64/a/tests/data/x": "x"}),
    case("tests-link-to-dev-null", None, bad("tests", "outside the definition folder"),
         links={"amd64/a/tests/null": "/dev/null"}),
    case("tests-folder-is-a-link", None, bad("tests", "tests is a link"), links={"amd64/a/tests": "/etc"}),
    case("tests-link-to-a-folder-inside", None, bad("tests", "is a folder, not a regular file"),
         links={"amd64/a/tests/more": "../files"}, extra={"amd64/a/files/x": "x\n"}),
    case("dockerfile-is-a-link-out", None, bad("Dockerfile", "outside the definition folder"), dockerfile=None,
         links={"amd64/a/Dockerfile": "/etc/hostname"}),
    case("dockerfile-dangling-link", None, bad("Dockerfile", "is a link to nothing"), dockerfile=None,
         links={"amd64/a/Dockerfile": "nope"}),
    case("dockerfile-link-loop", None, bad("Dockerfile", "cannot be resolved"), dockerfile=None,
         links={"amd64/a/Dockerfile": "Dockerfile"}),
    case("container-yaml-is-a-link-out", None, bad("", "outside the definition folder"),
         links={"amd64/a/container.yaml": "/etc/passwd"}),
    case("definition-folder-links-out", None, bad("", "is a link leading outside the definitions folder", "amd64/b"),
         links={"amd64/b": "/etc"}),
    case("architecture-folder-is-a-link", None, bad("", "is a link", "arm64"), links={"arm64": "amd64"}),
    case("fragment-is-a-link-out", "fragments: [common/x.docker]\n", bad("fragments[0]", "outside the definitions"),
         links={"common/x.docker": "/etc/passwd"}),
    case("compose-fragment-link-out", "compose: [$DOCKERFILE, common/x.docker]\n",
         bad("compose[1]", "outside the definitions"), links={"common/x.docker": "/etc/passwd"}),
    case("dockerfile-key-is-a-link-out", "dockerfile: body.docker\n", bad("dockerfile", "outside the definition"),
         links={"amd64/a/body.docker": "/etc/passwd"}),
    case("files-source-links-out", "files: ['conf:/etc/conf']\n", bad("files[0]", "outside the definition folder"),
         links={"amd64/a/conf": "/etc"}),
    case("test-script-absolute", "tests: [{name: t, script: /etc/passwd}]\n",
         bad("tests[0].script", "leaves the definition folder")),
    case("test-script-dotdot", "tests: [{name: t, script: ../../../etc/passwd}]\n",
         bad("tests[0].script", "leaves the definition folder")),
    case("fragment-absolute", "fragments: [/etc/passwd]\n", bad("fragments[0]", "leaves the definitions folder")),
    case("dockerfile-key-dotdot", "dockerfile: ../b/Dockerfile\n", bad("dockerfile", "leaves the definition folder"),
         extra={"amd64/b/Dockerfile": FROM}),
    # -- newlines and other control characters that would reach scripts and directives ---------------
    case("partition-newline", slurm("{partition: \"gpu\\nrm -rf ~\"}"), bad("tests[0].slurm.partition",
         "contains a control character"), extra=SCRIPT),
    case("partition-space", slurm("{partition: 'gpu small'}"), bad("tests[0].slurm.partition",
         "is not a valid partition name"), extra=SCRIPT),
    case("extra-newline", slurm("{extra: [\"--exclusive\\nid > /tmp/pwned\"]}"),
         bad("tests[0].slurm.extra[0]", "contains a control character"), extra=SCRIPT),
    case("extra-output", slurm("{extra: ['--output=/home/u/.bashrc']}"), bad("tests[0].slurm.extra[0]",
         "--output is not allowed"), extra=SCRIPT),
    case("extra-error", slurm("{extra: ['--error=/tmp/e']}"), bad("tests[0].slurm.extra[0]", "--error is not allowed"),
         extra=SCRIPT),
    case("extra-account", slurm("{extra: ['--account=someone-else']}"), bad("tests[0].slurm.extra[0]",
         "--account is not allowed"), extra=SCRIPT),
    case("extra-wrap", slurm("{extra: ['--wrap=id']}"), bad("tests[0].slurm.extra[0]", "--wrap is not allowed"),
         extra=SCRIPT),
    case("extra-chdir", slurm("{extra: ['--chdir=/']}"), bad("tests[0].slurm.extra[0]", "--chdir is not allowed"),
         extra=SCRIPT),
    case("extra-export", slurm("{extra: ['--export=ALL,LD_PRELOAD=/x.so']}"), bad("tests[0].slurm.extra[0]",
         "--export is not allowed"), extra=SCRIPT),
    case("extra-job-name", slurm("{extra: ['--job-name=other']}"), bad("tests[0].slurm.extra[0]",
         "--job-name is not allowed"), extra=SCRIPT),
    case("extra-unknown", slurm("{extra: ['--frobnicate']}"), bad("tests[0].slurm.extra[0]",
         "--frobnicate is not an sbatch option the CI allows"), extra=SCRIPT),
    case("extra-short", slurm("{extra: ['-N2']}"), bad("tests[0].slurm.extra[0]", "is not a long sbatch option"),
         extra=SCRIPT),
    case("extra-space-value", slurm("{extra: ['--mem 4G']}"), bad("tests[0].slurm.extra[0]",
         "is not a long sbatch option"), extra=SCRIPT),
    case("extra-value-with-semicolon", slurm("{extra: ['--qos=a;id']}"), bad("tests[0].slurm.extra[0]",
         "is not a valid value for --qos"), extra=SCRIPT),
    case("time-trailing-newline", slurm("{time: \"00:10:00\\n\"}"), bad("tests[0].slurm.time",
         "contains a control character"), extra=SCRIPT),
    case("mem-newline", slurm("{mem: \"4G\\n\"}"), bad("tests[0].slurm.mem", "contains a control character"),
         extra=SCRIPT),
    case("nodes-huge", slurm("{nodes: 1000000000000, ntasks: 1000000000000}"), bad("tests[0].slurm.nodes",
         "is above the maximum"), extra=SCRIPT),
    case("gpus-word", slurm("{gpus: many}"), bad("tests[0].slurm.gpus", "expected a whole number"), extra=SCRIPT),
    case("test-name-newline", "tests: [{name: \"t\\nx\", script: tests/t.sh}]\n", bad("tests[0].name",
         "contains a control character"), extra=SCRIPT),
    case("test-name-trailing-newline", "tests: [{name: \"t\\n\", script: tests/t.sh}]\n", bad("tests[0].name",
         "contains a control character"), extra=SCRIPT),
    case("test-name-with-the-job-separator", "tests: [{name: hello.world, script: tests/t.sh}]\n",
         bad("tests[0].name", "is not a valid test name"), extra=SCRIPT),
    case("test-name-upper-case", "tests: [{name: Hello, script: tests/t.sh}]\n", bad("tests[0].name",
         "is not a valid test name"), extra=SCRIPT),
    case("test-name-too-long", f"tests: [{{name: {'t' * 65}, script: tests/t.sh}}]\n", bad("tests[0].name",
         "characters long"), extra=SCRIPT),
    case("test-name-shell", "tests: [{name: '$(id)', script: tests/t.sh}]\n", bad("tests[0].name",
         "is not a valid test name"), extra=SCRIPT),
    case("auto-test-name-with-dot", None, bad("tests", "is not a valid test name"),
         extra={"amd64/a/tests/hello.world.sh": "echo\n"}),
    case("variant-suffix-newline", "variants: [{suffix: \"x\\ny\"}]\n", bad("variants[0].suffix",
         "contains a control character")),
    case("variant-suffix-too-long", f"variants: [{{suffix: {'x' * 200}}}]\n", bad("variants[0].suffix",
         "characters long")),
    case("variant-suffix-trailing-dash", "variants: [{suffix: x-}]\n", bad("variants[0].suffix",
         "cannot be part of an image name")),
    case("variant-name-too-long", f"variants: [{{suffix: {'x' * 127}}}]\n", bad("variants[0].suffix",
         "characters long")),
    case("files-target-newline", "files: [\"f.sh:/opt/f.sh\\nRUN id\"]\n", bad("files[0]",
         "contains a control character"), extra={"amd64/a/f.sh": "x"}),
    case("files-target-space", "files: ['f.sh:/opt/a /etc/']\n", bad("files[0]", "is not a usable path"),
         extra={"amd64/a/f.sh": "x"}),
    case("files-source-dollar", "files: ['$(id):/opt/x']\n", bad("files[0]", "is not a usable path")),
    case("files-source-whole-folder", "files: ['.:/opt/all']\n", bad("files[0]", "is the whole definition folder")),
    case("platform-newline", "platforms: [\"linux/amd64\\n\"]\n", bad("platforms[0]", "contains a control character")),
    case("platform-other-arch", "platforms: [linux/arm64]\n", bad("platforms[0]", "does not match the 'amd64'")),
    case("build-arg-key-newline", "build_args: {\"A\\nB\": x}\n", bad("build_args.A\nB",
         "is not a valid build argument name")),
    case("build-arg-value-newline", "build_args: {A: \"x\\nRUN id\"}\n", bad("build_args.A",
         "contains a control character")),
    case("build-arg-value-escape", "build_args: {A: \"\\e[31mred\"}\n", bad("build_args.A",
         "contains a control character")),
    case("build-arg-value-huge", f"build_args: {{A: {'x' * 5000}}}\n", bad("build_args.A", "characters long")),
    case("version-trailing-newline", "version: \"1.0\\n\"\n", bad("version", "contains a control character")),
    case("version-too-long-for-a-tag", f"version: '{'1' * 116}'\n", bad("version", "characters long")),
    case("version-with-slash", "version: 1.0/x\n", bad("version", "cannot be used in an image tag")),
    case("version-rich-markup", "version: '[/red]'\n", bad("version", "cannot be used in an image tag")),
    case("version-is-a-date", "version: 2024-01-01\n", bad("version", "YAML reads 2024-01-01 as the date 2024-01-01")),
    case("secret-name-newline", "secrets: [\"A\\nB\"]\n", bad("secrets[0]", "contains a control character")),
    case("secret-name-shell", "secrets: ['$(id)']\n", bad("secrets[0]", "is not an environment variable name")),
    case("compose-entry-newline", "compose: [$DOCKERFILE, \"common/x\\n\"]\n", bad("compose[1]",
         "contains a control character")),
    case("dockerfile-key-space", "dockerfile: 'my file'\n", bad("dockerfile", "is not a usable path")),
    case("metric-name-newline", with_test("    expect: {metrics: {\"a\\nb\": {regex: 'x ([0-9]+)', min: 1}}}\n"),
         bad(None, "is not a valid metric name"), extra=SCRIPT),
    case("metric-unit-newline", with_test("    expect: {metrics: {bw: {regex: 'x ([0-9]+)', min: 1, unit: \"a\\nb\"}}}"
                                          "\n"), bad("tests[0].expect.metrics.bw.unit", "contains a control character"),
         extra=SCRIPT),
    case("pattern-too-long", with_test(f"    expect: {{patterns: ['{'a' * 1001}']}}\n"),
         bad("tests[0].expect.patterns[0]", "characters long"), extra=SCRIPT),
    case("exit-code-above-255", with_test("    expect: {exit_code: 256}\n"), bad("tests[0].expect.exit_code",
         "is above the maximum 255"), extra=SCRIPT),
    case("run-unknown", with_test("    run: node\n"), bad("tests[0].run", "is not one of"), extra=SCRIPT),
    # -- names: Docker's grammar and length caps ---------------------------------------------------------
    case("folder-name-upper", None, bad("", "is not a valid image name", "amd64/Big"), dockerfile=None,
         extra={"amd64/Big/Dockerfile": FROM}),
    case("folder-name-trailing-dash", None, bad("", "is not a valid image name", "amd64/a-"), dockerfile=None,
         extra={"amd64/a-/Dockerfile": FROM}),
    case("folder-name-double-dot", None, bad("", "is not a valid image name", "amd64/a..b"), dockerfile=None,
         extra={"amd64/a..b/Dockerfile": FROM}),
    case("folder-name-too-long", None, bad("", "is not a valid image name", f"amd64/{'a' * 129}"), dockerfile=None,
         extra={f"amd64/{'a' * 129}/Dockerfile": FROM}),
    case("folder-name-rich-markup", None, bad("", "is not a valid image name", "amd64/[bold]x"), dockerfile=None,
         extra={"amd64/[bold]x/Dockerfile": FROM}),
    case("folder-name-rich-closing-tag-in-a-subfolder", None, bad("Dockerfile", "no Dockerfile", "amd64/["),
         dockerfile=None, extra={"amd64/[/x]/Dockerfile": FROM}),
    Case("folder-name-newline", {}, bad("", "is not a valid image name", "amd64/a\nb"), build=_control_folder_name),
    Case("folder-name-not-utf8", {}, bad("", "is not a valid image name", os.fsdecode(b"amd64/bad\xff")),
         build=_non_utf8_folder_name),
    Case("test-script-name-not-utf8", {}, bad("tests", "is not a valid test name"), build=_non_utf8_test_name),
    # -- bytes that are not UTF-8, and YAML that is not YAML ----------------------------------------------
    case("container-yaml-latin1", b"version: caf\xe9\n", bad("", "is not UTF-8 text (byte 0xe9 at offset 12)")),
    case("container-yaml-utf16", "version: '1'\n".encode("utf-16"), bad("", "is not UTF-8 text")),
    case("container-yaml-nul", b"version: '1'\x00\n", bad("", "is not valid YAML")),
    case("dockerfile-latin1", None, bad("Dockerfile", "is not UTF-8 text"), dockerfile=b"FROM x\nRUN echo \xff\n"),
    case("fragment-latin1", "fragments: [common/x.docker]\n", bad("fragments[0]", "is not UTF-8 text"),
         extra={"common/x.docker": b"ENV A=\xe9\n"}),
    case("compose-fragment-latin1", "compose: [common/x.docker, $DOCKERFILE]\n", bad("compose[0]", "is not UTF-8"),
         extra={"common/x.docker": b"ENV A=\xe9\n"}),
    case("dockerignore-latin1", None, bad("", "is not UTF-8 text"), extra={"amd64/a/.dockerignore": b"caf\xe9\n"}),
    case("yaml-python-tag", "version: !!python/object/apply:os.system ['id']\n", bad("", "is not valid YAML")),
    case("yaml-billion-laughs", LAUGHS, bad("", "holds more than 100000 values")),
    case("yaml-nested-deeply", "version: " + "[" * 5000 + "]" * 5000 + "\n", bad("", "is not valid YAML")),
    case("yaml-top-level-list", "- a\n- b\n", bad("(top level)", "expected a mapping, got a list")),
    case("container-yaml-huge", "version: '1'\n" + "#" * (5 << 20) + "\n", bad("", "bytes (at most")),
    case("dockerfile-huge", None, bad("Dockerfile", "bytes (at most"), dockerfile=FROM + "#" * (5 << 20)),
    # -- special files -----------------------------------------------------------------------------------
    case("dockerfile-is-a-fifo", None, bad("Dockerfile", "is a FIFO"), dockerfile=None, fifos=("amd64/a/Dockerfile",)),
    case("container-yaml-is-a-fifo", None, bad("", "is a FIFO"), fifos=("amd64/a/container.yaml",)),
    case("fragment-is-a-fifo", "fragments: [common/x.docker]\n", bad("fragments[0]", "is a FIFO"),
         fifos=("common/x.docker",)),
    case("dockerignore-is-a-fifo", None, bad("", "is not a regular file"), fifos=("amd64/a/.dockerignore",)),
    case("fifo-in-tests", None, bad("tests", "is a FIFO"), fifos=("amd64/a/tests/pipe",)),
    case("socket-in-tests", None, bad("tests", "is a socket"), sockets=("amd64/a/tests/sock",)),
    case("fifo-as-definition-file", None, bad("", "is not a definition", "amd64/x.yaml"), dockerfile=None,
         fifos=("amd64/x.yaml",)),
    case("dockerfile-is-a-folder", None, bad("Dockerfile", "is a folder"), dockerfile=None,
         extra={"amd64/a/Dockerfile/x": "x"}),
    case("container-yaml-is-a-folder", None, bad("", "is a folder"), extra={"amd64/a/container.yaml/x": "x"}),
    case("tests-is-a-file", None, bad("tests", "not a folder"), extra={"amd64/a/tests": "x"}),
    # -- permissions (root reads everything: then the tree is accepted, and nothing leaks) ---------------
    case("container-yaml-mode-000", "version: '1'\n", unreadable("", "cannot be read", images=("amd64/a",)),
         modes={"amd64/a/container.yaml": 0}),
    case("dockerfile-mode-000", None, unreadable("Dockerfile", "cannot be read", images=("amd64/a",)),
         modes={"amd64/a/Dockerfile": 0}),
    case("context-file-mode-000", None, unreadable(None, "cannot be read", images=("amd64/a",)),
         extra={"amd64/a/secret.txt": "x"}, modes={"amd64/a/secret.txt": 0}),
    case("context-folder-mode-000", None, unreadable(None, "cannot be listed", images=("amd64/a",)),
         extra={"amd64/a/private/x": "x"}, modes={"amd64/a/private": 0}),
    case("tests-folder-mode-000", None, unreadable("tests", "cannot be listed", images=("amd64/a",)),
         extra=SCRIPT, modes={"amd64/a/tests": 0}),
    case("definition-folder-mode-000", None, unreadable(None, "cannot be", images=("amd64/a",)),
         modes={"amd64/a": 0}),
    # -- .dockerignore -------------------------------------------------------------------------------------
    case("dockerignore-bad-range", None, bad("", "line 2: '[z-a].txt' is not a valid pattern"),
         extra={"amd64/a/.dockerignore": "*.log\n[z-a].txt\n"}),
    case("dockerignore-too-many-wildcards", None, bad("", "more than 64 wildcards"),
         extra={"amd64/a/.dockerignore": "*" * 70 + "\n"}),
    # -- the FROM graph ------------------------------------------------------------------------------------
    Case("from-cycle-longer-than-the-recursion-limit", {}, bad("FROM", "FROM cycle: n0 -> n", "amd64/n0"),
         build=lambda root: _from_chain(root, cycle=True)),
    case("from-itself-by-variable", None, bad("FROM", "is built FROM itself"), dockerfile="ARG X=a\nFROM ${X}\n"),
    case("no-from-after-bom", None, bad("Dockerfile", "has no FROM instruction"), dockerfile="\ufeffRUN true\n"),
    # -- one bad definition never breaks --only of another ---------------------------------------------------
    case("only-good-beside-latin1-yaml", b"version: \xff\n", Accepted(("amd64/good",)), only=("good",),
         extra={"amd64/good/Dockerfile": FROM}),
    case("only-good-beside-fifo-dockerfile", None, Accepted(("amd64/good",)), dockerfile=None, only=("good",),
         fifos=("amd64/a/Dockerfile",), extra={"amd64/good/Dockerfile": FROM}),
    case("only-good-beside-bad-dockerignore", None, Accepted(("amd64/good",)), only=("good",),
         extra={"amd64/a/.dockerignore": "[z-a]\n", "amd64/good/Dockerfile": FROM}),
    case("only-good-beside-leaking-link", None, Accepted(("amd64/good",)), only=("good",),
         links={"amd64/a/tests/env": "/proc/self/environ"}, extra={"amd64/good/Dockerfile": FROM}),
    case("only-good-beside-yaml-bomb", LAUGHS, Accepted(("amd64/good",)), only=("good",),
         extra={"amd64/good/Dockerfile": FROM}),
    case("only-good-beside-markup-name", None, Accepted(("amd64/good",)), only=("good",), dockerfile=None,
         extra={"amd64/[bold]x/Dockerfile": FROM, "amd64/good/Dockerfile": FROM}),
    # -- odd but valid: these must be accepted ----------------------------------------------------------------
    case("valid-empty-container-yaml", "", OK_A),
    case("valid-null-container-yaml", "---\n", OK_A),
    case("valid-dockerfile-with-bom-and-crlf", None, OK_A, dockerfile="\ufeffFROM containers-ci/debian:bookworm\r\n"
         "RUN true\r\n"),
    case("valid-unicode-build-arg", "build_args: {GREETING: 'grüß dich ☃'}\n", OK_A),
    case("valid-quoted-numeric-suffix-and-version", "version: '3.10'\nvariants: [{suffix: \"2.6\"}]\n",
         Accepted(("amd64/a-2.6",))),
    case("valid-allowed-sbatch-options", slurm("{extra: ['--exclusive', '--constraint=mi250&amd', '--gres=gpu:2', "
                                               "'--mem-per-cpu=2G', '--hint=nomultithread', '--qos=debug']}"),
         OK_A, extra=SCRIPT),
    case("valid-name-at-the-cap", None, Accepted((f"amd64/{'a' * 128}",)), dockerfile=None,
         extra={f"amd64/{'a' * 128}/Dockerfile": FROM}),
    case("valid-version-at-the-cap", f"version: '{'1' * 115}'\n", OK_A),
    case("valid-context-link-out-is-sent-as-a-link", None, OK_A, links={"amd64/a/passwd": "/etc/passwd"}),
    case("valid-test-link-inside-the-folder", "tests: [{name: t, script: tests/t.sh}]\n", OK_A,
         links={"amd64/a/tests/t.sh": "../run.sh"}, extra={"amd64/a/run.sh": "echo\n"}),
    case("valid-dockerfile-link-inside", None, OK_A, dockerfile=None, links={"amd64/a/Dockerfile": "build.docker"},
         extra={"amd64/a/build.docker": FROM}),
    case("valid-definition-link-inside-the-root", None, Accepted(("amd64/a", "amd64/b")), links={"amd64/b": "a"}),
    case("valid-fifo-in-context-skipped-with-a-warning", None, Accepted(("amd64/a",), warning="a FIFO is not sent"),
         fifos=("amd64/a/pipe",)),
    case("valid-socket-in-context-skipped-with-a-warning", None,
         Accepted(("amd64/a",), warning="a socket is not sent"), sockets=("amd64/a/sock",)),
    case("valid-file-names-with-spaces", None, OK_A, extra={"amd64/a/my notes.txt": "x"}),
    Case("valid-non-utf8-file-name-in-context", {}, OK_A, build=_non_utf8_context_name),
    case("valid-dockerignore-odd-patterns", None, OK_A,
         extra={"amd64/a/.dockerignore": "**/**/**/**/**/x\n[abc\n!keep\n# [z-a]\n"}),
    case("valid-pattern-with-markup", with_test("    expect: {patterns: ['[/bold]', 'ok']}\n"), OK_A, extra=SCRIPT),
    Case("valid-deep-context", {"amd64/a/Dockerfile": FROM}, OK_A, build=_deep_context),
    Case("valid-deep-tests-folder", {"amd64/a/Dockerfile": FROM}, OK_A, build=_deep_tests),
    Case("valid-from-chain-longer-than-the-recursion-limit", {}, Accepted((f"amd64/n{DEEP - 1}",)),
         build=_from_chain),
    Case("valid-job-names-that-used-to-collide", {}, Accepted(("amd64/mpi", "amd64/mpi-hello")), build=_jobs_collide),
    case("valid-same-name-in-two-arches", None, Accepted(("amd64/a", "arm64/a")), extra={"arm64/a/Dockerfile": FROM}),
    case("valid-unsupported-kind-with-markup-name", None, OK_A,
         extra={"_arm64/[bold]legacy.def": "Bootstrap: docker\n"}),  # a disabled architecture folder
    case("valid-secrets-and-host-test", "secrets: [NPM_TOKEN]\ntests: [{name: t, script: tests/t.sh, run: host}]\n",
         OK_A, extra=SCRIPT),
]


def _make(root: Path, item: Case) -> None:
    for relative, content in item.files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    for relative, target in item.links.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
    for relative in item.fifos:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(root / relative)
    for relative in item.sockets:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        here = os.getcwd()
        os.chdir(path.parent)  # AF_UNIX paths are limited to ~108 bytes; bind a short relative one
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.bind(path.name)
        finally:
            os.chdir(here)
    if item.build is not None:
        item.build(root)
    for relative, mode in sorted(item.modes.items(), key=lambda pair: -len(pair[0])):
        os.chmod(root / relative, mode)


def _cleanup(root: Path) -> None:
    """Undo modes and remove deep chains iteratively, so pytest's recursive cleanup can follow."""
    for directory, subdirs, _ in os.walk(root, topdown=True):
        for name in subdirs:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755)
        if len(subdirs) == 1 and subdirs[0] == "d":
            chain = [os.path.join(directory, "d")]
            while os.path.isdir(os.path.join(chain[-1], "d")):
                chain.append(os.path.join(chain[-1], "d"))
            for folder in reversed(chain):
                for leaf in os.listdir(folder):
                    os.unlink(os.path.join(folder, leaf))
                os.rmdir(folder)
            subdirs[:] = []


def _settings(root: Path) -> object:
    # An engine that does not answer: plan then works as on a machine without Docker.
    return load_settings({"docker": {"host": "unix:///nonexistent/docker.sock"}}, PROJECT_DIR, profile="local",
                         overrides={"definitions": str(root), "arch": ["amd64", "arm64"]})


def _show(problems: list[Problem]) -> str:
    return "\n".join(f"  [{p.field}] {p.message} ({p.fix})" for p in problems) or "  (none)"


def _check_one_line(problems: list[Problem]) -> None:
    for problem in problems:
        assert problem.fix, f"no fix: {problem!r}"
        text = str(problem)
        assert "\n" not in text and "\x1b" not in text, f"a problem is printed as one line: {text!r}"


@pytest.mark.parametrize("item", CASES, ids=[item.id for item in CASES])
def test_hostile_tree(tmp_path: Path, item: Case) -> None:
    root = tmp_path / "defs"
    root.mkdir()
    _make(root, item)
    try:
        catalog = load_catalog(root)  # never raises, whatever the tree
        _check_one_line(catalog.all_problems())
        expect = item.expect
        if isinstance(expect, Refused):
            problems = catalog.problems.get(expect.key, [])
            with pytest.raises(DefinitionError) as raised:
                api.plan(_settings(root), only=item.only)  # type: ignore[arg-type]
            problems = problems or raised.value.problems
            matching = [p for p in raised.value.problems if expect.message in p.message
                        and (expect.field is None or p.field == expect.field)]
            assert matching, f"no [{expect.field}] '{expect.message}' for {expect.key}; got:\n" + _show(
                raised.value.problems)
            _check_one_line(raised.value.problems)
        else:
            result = api.plan(_settings(root), only=item.only)  # type: ignore[arg-type]
            assert set(expect.images) <= set(result.plan.images), sorted(result.plan.images)
            if expect.warning:
                assert any(expect.warning in w.message for w in result.plan.warnings), result.plan.warnings
    finally:
        _cleanup(root)


def test_there_are_at_least_100_hostile_trees_and_some_valid_ones() -> None:
    hostile = [item for item in CASES if isinstance(item.expect, Refused) or item.id.startswith("only-")]
    valid = [item for item in CASES if item.id.startswith("valid-")]
    assert len({item.id for item in CASES}) == len(CASES)
    assert len(CASES) >= 120 and len(valid) >= 20, (len(CASES), len(valid))
    assert len(hostile) + sum(1 for item in CASES if "mode-000" in item.id) >= 100


# -- the same trees through `inv plan`, as a user runs it: exit 2, valid JSON, no traceback, no hang -------

SAMPLE = ["tests-link-to-proc-environ", "partition-newline", "extra-output", "container-yaml-latin1",
          "dockerfile-is-a-fifo", "yaml-billion-laughs", "version-rich-markup", "folder-name-not-utf8",
          "dockerignore-bad-range", "only-good-beside-fifo-dockerfile", "valid-fifo-in-context-skipped-with-a-warning",
          "valid-unsupported-kind-with-markup-name"]


def _inv_plan(root: Path, only: tuple[str, ...], as_json: bool, home: Path) -> subprocess.CompletedProcess[str]:
    inv = Path(sys.executable).parent / "inv"
    config = home / "no-engine.yaml"  # as on a machine without Docker: the plan is the same, and quick
    config.write_text("ci:\n  docker:\n    host: unix:///nonexistent/docker.sock\n")
    command = [str(inv), "-f", str(config), "plan", "--definitions", str(root), *(f"--only={name}" for name in only)]
    env = {**os.environ, "XDG_STATE_HOME": str(home / "state"), "XDG_DATA_HOME": str(home / "data")}
    return subprocess.run(command + (["--json"] if as_json else []), cwd=PROJECT_DIR, capture_output=True,
                          text=True, errors="replace", timeout=120, env=env, check=False)


def test_a_sample_through_inv_plan_exits_2_with_valid_json_and_no_traceback(tmp_path: Path) -> None:
    by_id = {item.id: item for item in CASES}
    runs = []
    for name in SAMPLE:
        root = tmp_path / name / "defs"
        root.mkdir(parents=True)
        _make(root, by_id[name])
        runs += [(name, root, False), (name, root, True)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda run: (run, _inv_plan(run[1], by_id[run[0]].only, run[2], tmp_path)), runs))
    for (name, _, as_json), result in results:
        expect = by_id[name].expect
        where = f"{name} ({'--json' if as_json else 'text'}): rc {result.returncode}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr + result.stdout, where
        if isinstance(expect, Refused):
            assert result.returncode == 2, where
            if as_json:
                data = json.loads(result.stdout)
                assert data["ok"] is False
                assert any(expect.message in problem["message"] for problem in data["problems"]), data
            else:
                assert expect.message.splitlines()[0] in result.stderr, where
        else:
            assert result.returncode == 0, where
            if as_json:
                planned = {f"{image['arch']}/{image['name']}" for image in json.loads(result.stdout)["images"]}
                assert set(expect.images) <= planned
                if expect.warning:
                    assert any(expect.warning in w["message"] for w in json.loads(result.stdout)["warnings"])
            elif name == "valid-unsupported-kind-with-markup-name":
                assert "[bold]legacy" in result.stdout, "markup in a name is printed, not interpreted"


# -- unreadable files, as a user who cannot read them (root reads everything, so drop to nobody) -----------

UNREADABLE = {
    "container-yaml": ({"amd64/a/Dockerfile": FROM, "amd64/a/container.yaml": "version: '1'\n"},
                       "amd64/a/container.yaml", "cannot be read (Permission denied)"),
    "dockerfile": ({"amd64/a/Dockerfile": FROM}, "amd64/a/Dockerfile", "cannot be read (Permission denied)"),
    "fragment": ({"amd64/a/Dockerfile": FROM, "amd64/a/container.yaml": "fragments: [common/x.docker]\n",
                  "common/x.docker": "ENV A=1\n"}, "common/x.docker", "cannot be read (Permission denied)"),
    "context-file": ({"amd64/a/Dockerfile": FROM, "amd64/a/secret.txt": "x"}, "amd64/a/secret.txt",
                     "cannot be read (Permission denied)"),
    "context-folder": ({"amd64/a/Dockerfile": FROM, "amd64/a/private/x": "x"}, "amd64/a/private",
                       "cannot be listed (Permission denied)"),
    "tests-folder": ({"amd64/a/Dockerfile": FROM, "amd64/a/tests/t.sh": "echo\n"}, "amd64/a/tests",
                     "cannot be listed (Permission denied)"),
    "definition-folder": ({"amd64/a/Dockerfile": FROM}, "amd64/a", "cannot be read (Permission denied)"),
}


def _plan_problems(root: Path) -> list[str]:
    from ci.plan import make_plan

    try:
        make_plan(load_catalog(root))
    except DefinitionError as exc:
        return [str(problem) for problem in exc.problems]
    return []


def test_unreadable_files_are_problems_for_a_user_who_cannot_read_them(tmp_path: Path) -> None:
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="defs-unreadable-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        for name, (files, unreadable_path, _) in UNREADABLE.items():
            root = base / name
            _make(root, Case(name, dict(files), OK_A))
            for directory, _, _ in os.walk(root):
                os.chmod(directory, 0o755)
            os.chmod(root / unreadable_path, 0)
        if ROOT_USER:  # as root every file is readable: look at the trees as nobody, in a forked child
            read_end, write_end = os.pipe()
            child = os.fork()
            if child == 0:  # pragma: no cover - the child's results come back through the pipe
                try:
                    os.setgid(65534)
                    os.setuid(65534)
                    data = {name: _plan_problems(base / name) for name in UNREADABLE}
                    os.write(write_end, json.dumps(data).encode())
                finally:
                    os._exit(0)
            os.close(write_end)
            with os.fdopen(read_end, "rb") as pipe:
                output = pipe.read()
            os.waitpid(child, 0)
            results = json.loads(output)
        else:
            results = {name: _plan_problems(base / name) for name in UNREADABLE}
        for name, (_, unreadable_path, message) in UNREADABLE.items():
            assert any(message in line and unreadable_path.rsplit("/", 1)[-1] in line for line in results[name]), \
                f"{name}: {results[name]}"
    finally:
        for directory, _, _ in os.walk(base):
            os.chmod(directory, 0o755)
        for directory, subdirs, files in os.walk(base, topdown=False):
            for entry in files:
                os.unlink(os.path.join(directory, entry))
            for entry in subdirs:
                os.rmdir(os.path.join(directory, entry))
        os.rmdir(base)
