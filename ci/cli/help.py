"""The help texts flags share across collections."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Sequence

COMMON_HELP = {
    "definitions": "Folder of container definitions (default: ci.definitions, i.e. container_definitions/).",
    "profile": "Configuration profile from invoke.yaml: local, lumi, cpouta (default: ci.profile).",
    "only": "Images to select, by name or glob; repeat or separate with commas (default: all).",
    "arch": "Architecture folders to read, e.g. amd64 (default: ci.arch).",
    "json": "Print machine-readable JSON on stdout instead of the table.",
}

EMPTY_HELP = {
    "allow_empty": "Accept a definitions folder that holds no definition (default: that is an error, exit 2, "
                   "as a mistyped --definitions or --arch would otherwise look like success).",
}

SITE_HELP = {
    **COMMON_HELP,
    "site_root": "Root folder of the HPC site (default: ci.site.root; locally ~/.local/share/containers-ci/site).",
    "run": "Run id whose steps to continue (default: a new run).",
    "retry_failed": "Also redo images whose digest is in failed/.",
    "force": "Redo every step of the selected images, even for tested digests.",
}

VM_HELP = {
    "profile": "Configuration profile from invoke.yaml (default: ci.profile); ci.vm of that profile applies.",
    "cloud": "clouds.yaml entry (default: ci.vm.cloud, else $OS_CLOUD, else the OS_* variables).",
    "name": "Server name (default: ci.vm.name = containers-ci-build).",
}

RUNNERS_HELP = {
    "profile": COMMON_HELP["profile"] + " ci.runners and ci.site of that profile apply.",
    "json": COMMON_HELP["json"],
}


HELP_FLAGS = frozenset({"--help", "-h"})


def help_taken_as_value(function_name: str, values: Iterable[object], argv: Sequence[str]) -> str | None:
    """The task name to show help for when Invoke read `inv TASK --help` as TASK's positional argument.

    Invoke hands the next word to a missing positional argument even when it is `--help`, so
    `inv render --help` used to look up an image named "--help". The name is the word of argv that
    names this task (`render`, `publish.verify`, with dashes or underscores), so the help shown is
    Invoke's own `inv --help TASK`.
    """
    if not any(isinstance(value, str) and value in HELP_FLAGS for value in values):
        return None
    for word in argv[1:]:
        last = word.rpartition(".")[2].replace("-", "_")  # `publish.verify` is the function publish_verify
        if last and not word.startswith("-") and (function_name == last or function_name.endswith("_" + last)):
            return word
    return None


def show_task_help(task: str) -> int:
    """Invoke's help text for `task`, printed by a fresh `inv --help TASK`; its exit code."""
    return subprocess.run([sys.argv[0], "--help", task], check=False).returncode
