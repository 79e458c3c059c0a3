"""`inv vm.*` and `inv openstack.*`: the OpenStack build VM, step by step (`vm.start`, `vm.prepare`,
`vm.status`, `vm.teardown`; build-all chains them on a profile with ci.vm.enabled), and the helper image.
"""

from __future__ import annotations

from invoke.collection import Collection
from invoke.tasks import task

from ci.cli.common import emit_json, explained, say, settings_from, stdout
from ci.cli.help import COMMON_HELP, VM_HELP
from ci.cli.shared import vm_overrides


@task(help={**VM_HELP, "json": COMMON_HELP["json"],
            "image": "Image (name or id) for a new server (default: ci.vm.image, else $OS_MY_IMAGE).",
            "flavor": "Flavor for a new server (default: ci.vm.flavor, else $OS_MY_FLAVOUR, else hpc.5.64core)."})
@explained
def vm_start(c, profile=None, cloud=None, name=None, image=None, flavor=None, json=False):  # type: ignore[no-untyped-def]
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
    overrides = vm_overrides(cloud, name, image=image, flavor=flavor)
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


@task(help={**VM_HELP, "json": COMMON_HELP["json"]})
@explained
def vm_status(c, profile=None, cloud=None, name=None, json=False):  # type: ignore[no-untyped-def]
    """Show the build VM as the cloud sees it: server, address, volume, and how to reach it."""
    from ci.openstack import vm
    settings = settings_from(c, profile=profile)
    overrides = vm_overrides(cloud, name)
    info = vm.status(settings, **overrides)
    if json:
        emit_json(info.as_dict())
        return
    for line in vm.describe(settings, info, **overrides):
        stdout.print(line, highlight=False, markup=False)


@task(help=VM_HELP)
@explained
def vm_teardown(c, profile=None, cloud=None, name=None):  # type: ignore[no-untyped-def]
    """Delete the build VM and wait until it is gone; release its floating IP; keep the volume.

    Idempotent: with nothing to delete it says so and succeeds. Only a server carrying our
    mark (metadata managed-by=containers-ci) is ever deleted. build-all runs this on every
    way out of a run on a VM profile: success, failure, exception, Ctrl-C and SIGTERM.
    """
    from ci.openstack import vm
    settings = settings_from(c, profile=profile)
    for line in vm.teardown(settings, say, **vm_overrides(cloud, name)):
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
openstack = Collection("openstack")
openstack.add_task(openstack_image_task, name="image")
