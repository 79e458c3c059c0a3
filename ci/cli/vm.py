"""`inv vm.*` and `inv openstack.*`: the OpenStack build VM, step by step (`vm.start`, `vm.prepare`,
`vm.status`, `vm.teardown`; build-all chains them on a profile with ci.vm.enabled), and the helper image.
"""

from __future__ import annotations

from typing import Any

from invoke.collection import Collection
from invoke.exceptions import Exit
from invoke.tasks import task

from ci.cli.common import emit_json, explained, say, settings_from, stdout
from ci.cli.help import COMMON_HELP, VM_HELP
from ci.cli.shared import vm_overrides

VM_COUNT_HELP = "How many build VMs (default: ci.vm.count = 1); N > 1 names them <name>-1 .. <name>-N."


@task(help={**VM_HELP, "json": COMMON_HELP["json"], "count": VM_COUNT_HELP,
            "image": "Image (name or id) for a new server (default: ci.vm.image, else $OS_MY_IMAGE).",
            "flavor": "Flavor for a new server (default: ci.vm.flavor, else $OS_MY_FLAVOUR, else hpc.5.64core)."})
@explained
def vm_start(c, profile=None, cloud=None, name=None, image=None, flavor=None, json=False,  # type: ignore[no-untyped-def]
             count=None):
    """Create the build VM, or find it again: server, key pair, security group, volume, floating IP.

    Idempotent: whatever exists is reused and only what is missing is created (a server in
    ERROR is reported, not replaced: `inv vm.teardown` first). Waits until the server is
    ACTIVE and then until SSH accepts ci.vm.ssh_key, each with a deadline (ci.vm.timeouts).
    Credentials: a clouds.yaml entry or the OS_* variables (see secrets.example/README.md).
    By hand: `openstack server show <name>`, `openstack console log show <name>`.
    Next step: `inv vm.prepare`.
    """
    from ci.openstack import vm
    settings = settings_from(c, profile=profile)
    overrides = vm_overrides(cloud, name, image=image, flavor=flavor, count=_count(count))
    if vm.config_from(settings, **overrides).count > 1:
        _fleet_start(settings, overrides, json)
        return
    info = vm.start(settings, say, **overrides)
    if json:
        emit_json(info.as_dict())
        return
    for line in vm.describe(settings, info, **overrides):
        stdout.print(line, highlight=False, markup=False)


@task(help={**VM_HELP,
            "address": "SSH to this address instead of asking the cloud (e.g. 127.0.0.1 for a loopback VM).",
            "device": "The volume's block device on the VM, when /dev/disk/by-id cannot tell (default: ci.vm.device)."})
@explained
def vm_prepare(c, profile=None, cloud=None, name=None, address=None, device=None):  # type: ignore[no-untyped-def]
    """Run ci/openstack/prepare-vm on the build VM over SSH, then check its Docker answers from here.

    prepare-vm (copied to ~/.containers-ci/prepare-vm, run as root through sudo) mounts the
    volume at ci.vm.mount_point (formatting it only when it has no file system), points
    /var/lib/docker to it, restarts Docker and waits until it answers. Idempotent: a second
    run only checks. By hand on the VM: `sudo sh ~/.containers-ci/prepare-vm --help`.
    Then the VM's engine is DOCKER_HOST=ssh://<user>@<address> (see `inv vm.status`).
    """
    from ci.openstack import vm
    settings = settings_from(c, profile=profile)
    for line in vm.prepare(settings, say, address=address, device=device, **vm_overrides(cloud, name)):
        stdout.print(line, highlight=False, markup=False)


@task(help={**VM_HELP, "json": COMMON_HELP["json"], "count": VM_COUNT_HELP})
@explained
def vm_status(c, profile=None, cloud=None, name=None, json=False, count=None):  # type: ignore[no-untyped-def]
    """Show the build VM as the cloud sees it: server, address, volume, and how to reach it."""
    from ci.openstack import vm
    settings = settings_from(c, profile=profile)
    overrides = vm_overrides(cloud, name, count=_count(count))
    if vm.config_from(settings, **overrides).count > 1:
        _fleet_status(settings, overrides, json)
        return
    info = vm.status(settings, **overrides)
    if json:
        emit_json(info.as_dict())
        return
    for line in vm.describe(settings, info, **overrides):
        stdout.print(line, highlight=False, markup=False)


@task(help={**VM_HELP, "count": VM_COUNT_HELP})
@explained
def vm_teardown(c, profile=None, cloud=None, name=None, count=None):  # type: ignore[no-untyped-def]
    """Delete the build VM and wait until it is gone; release its floating IP; keep the volume.

    Idempotent: with nothing to delete it says so and succeeds. Only a server carrying our
    mark (metadata managed-by=containers-ci) is ever deleted. build-all runs this on every
    way out of a run on a VM profile: success, failure, exception, Ctrl-C and SIGTERM.
    """
    from ci.openstack import vm
    settings = settings_from(c, profile=profile)
    overrides = vm_overrides(cloud, name, count=_count(count))
    teardown = vm.teardown_fleet if vm.config_from(settings, **overrides).count > 1 else vm.teardown
    for line in teardown(settings, say, **overrides):
        stdout.print(line, highlight=False, markup=False)


@task(help={"profile": COMMON_HELP["profile"], "count": VM_COUNT_HELP,
            "output": "Also write the names as a JSON list to this GitHub step output (e.g. vms)."})
@explained
def vm_names(c, profile=None, count=None, output=None):  # type: ignore[no-untyped-def]
    """The build VMs' server names, one per line: the label each VM's runners carry besides the common ones.

    The generated workflow prepares each VM on a runner with its own label (a matrix over these names).
    """
    import json as json_module

    from ci.github import outputs
    from ci.openstack import vm
    settings = settings_from(c, profile=profile)
    found = vm.names(settings, count=_count(count))
    if output:
        outputs.write_outputs({output: json_module.dumps(found)})
    for name in found:
        stdout.print(name, highlight=False, markup=False)


def _count(count: Any) -> int | None:
    """--count as a number (None: ci.vm.count); a bad value is one sentence, exit 2."""
    if count is None:
        return None
    try:
        value = int(str(count), 10)
    except ValueError:
        raise Exit(f"--count: {str(count)[:40]!r} is not a whole number; write e.g. --count 2", code=2) from None
    if not 1 <= value <= 64:
        raise Exit(f"--count: {value} is out of range; write a number from 1 to 64", code=2)
    return value


def _fleet_start(settings: Any, overrides: dict[str, Any], json: bool) -> None:
    from ci.openstack import vm
    infos = vm.start_fleet(settings, say, **overrides)
    if json:
        emit_json([info.as_dict() for info in infos])
        return
    for info, name in zip(infos, vm.names(settings, **overrides), strict=True):
        for line in vm.describe(settings, info, **{**overrides, "name": name, "count": 1}):
            stdout.print(line, highlight=False, markup=False)


def _fleet_status(settings: Any, overrides: dict[str, Any], json: bool) -> None:
    from ci.openstack import vm
    found = vm.status_fleet(settings, **overrides)
    if json:
        emit_json([info.as_dict() for _, info in found])
        return
    for config, info in found:
        for line in vm.describe(settings, info, **{**overrides, "name": config.name, "count": 1}):
            stdout.print(line, highlight=False, markup=False)


@task(help={"profile": COMMON_HELP["profile"], "force": "Build even if an image with the same digest exists.",
            "push": "Push after building (default: when ci.registry_prefix names a registry).",
            "no_push": "Never push, even with a registry configured."})
@explained
def openstack_image_task(c, profile=None, force=False, push=False, no_push=False):  # type: ignore[no-untyped-def]
    """Build the OpenStack helper image (ci/openstack/Dockerfile) when its inputs changed.

    The image holds the OpenStack client and this project, for CI jobs that run `inv vm.*`.
    Its tag and label carry the digest of the staged context (Dockerfile, the package, extra
    CA certificates) and the build arguments, so an unchanged image is not rebuilt. Builds
    FROM the local base image by default (ci.openstack_image.base_image), so no registry is
    needed. Usage: docker run --rm -it --env-file secrets/openrc.env <tag> openstack server list
    """
    from ci import api
    from ci.openstack import helper_image
    settings = settings_from(c, profile=profile)
    result = helper_image.ensure_helper_image(api.docker_engine(settings), settings, force=force,
                                                 push=False if no_push else (True if push else None), say=say)
    stdout.print(result.describe(), highlight=False, markup=False)


ns = Collection("vm")
ns.add_task(vm_start, name="start")
ns.add_task(vm_prepare, name="prepare")
ns.add_task(vm_status, name="status", default=True)
ns.add_task(vm_teardown, name="teardown")
ns.add_task(vm_names, name="names")
openstack = Collection("openstack")
openstack.add_task(openstack_image_task, name="image")
