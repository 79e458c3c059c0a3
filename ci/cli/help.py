"""The help texts flags share across collections."""

from __future__ import annotations

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
