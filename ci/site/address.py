"""One address of the site's login host for a whole run, however its name resolves.

A name such as lumi.csc.fi is round-robin DNS over several login nodes. A run that reached a
different node in each job would find its registry tunnel's far end (the registry on one node's
loopback), its host keys and its running conversions elsewhere. So the workflow's prepare job
resolves the name once (`inv site.resolve`) and hands the address to every later job as
`CI_SITE_ADDRESS`; `pinned` makes the SSH settings use it.
"""

from __future__ import annotations

import ipaddress
import os
import socket

from ci.config.settings import SSHSettings
from ci.errors import SiteError

ADDRESS_VARIABLE = "CI_SITE_ADDRESS"


def resolve(host: str, port: int = 22) -> str:
    """The first address the name resolves to, IPv4 before IPv6 (what ssh would try first)."""
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise SiteError(f"cannot resolve the site host {host!r}: {exc.strerror}; check ci.site.ssh.host") from None
    addresses = [str(answer[4][0]) for answer in answers]
    if not addresses:
        raise SiteError(f"the site host {host!r} resolves to no address; check ci.site.ssh.host")
    addresses.sort(key=lambda address: ipaddress.ip_address(address).version)
    return addresses[0]


def pinned(ssh: SSHSettings) -> SSHSettings:
    """The SSH settings with the run's pinned address (CI_SITE_ADDRESS) as host, when one is set."""
    address = os.environ.get(ADDRESS_VARIABLE, "").strip()
    if not address:
        return ssh
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise SiteError(f"{ADDRESS_VARIABLE}={address!r} is not an IP address; `inv site.resolve` writes one") from None
    return ssh.model_copy(update={"host": address, "host_key_alias": ssh.host_key_alias or ssh.host})
