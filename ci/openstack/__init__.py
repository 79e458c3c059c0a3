"""The OpenStack backend: the build VM's cloud side, its lifecycle, the helper image, prepare-vm.

    cloud.py          one openstacksdk connection; idempotent find-or-create; teardown
    vm.py             start -> prepare over SSH -> remote Docker -> teardown on every way out
    helper_image.py   the helper container (Dockerfile here) with the OpenStack client and this project
    prepare-vm        the script the VM runs as root: volume mounted, /var/lib/docker on it, Docker up

Its settings (`ci.vm`, `ci.openstack_image`) are models in `ci.config`; openstacksdk is imported
only when a connection is made. Where this package sits among the others: docs/architecture.md.
"""
