"""The build VM's cloud side: one OpenStack connection, idempotent find-or-create, teardown.

Everything here goes through openstacksdk's proxies (`conn.compute`, `conn.network`,
`conn.block_storage`, `conn.image`), so any OpenStack with Keystone v3, Nova, Neutron, Cinder v3
and Glance v2 works; the defaults fit CSC's cPouta. Each step first looks for what it needs and
only creates what is missing, so `start` can run again after any failure and `teardown` is a no-op
when nothing exists. What we create carries our mark (server metadata `managed-by`, floating IP
description), and teardown never deletes anything without it.

Credentials: a `clouds.yaml` entry (ci.vm.cloud or OS_CLOUD; `secrets/clouds.yaml` is read first),
else the standard OS_* variables of an openrc file, application credentials included. They are
read by openstacksdk from the file or the environment only; no secret passes through our code,
a command line or a message.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ci.config.settings import MANAGED_BY, VMConfig
from ci.errors import CloudError, ConfigError

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


# --------------------------------------------------------------------------------------------
# the connection, and errors a person can act on
# --------------------------------------------------------------------------------------------

def connect(config: VMConfig, env: Mapping[str, str] | None = None) -> Any:
    """The one place a connection is made: a clouds.yaml entry, else the OS_* variables."""
    import openstack
    import openstack.config
    from openstack import exceptions as os_exc

    env = os.environ if env is None else env
    files = [str(config.clouds_file)] if config.clouds_file else []
    if config.clouds_file and not config.clouds_file.is_file():
        raise ConfigError(f"ci.vm.clouds_file {config.clouds_file} does not exist")
    secure = [str(config.clouds_file.with_name("secure.yaml"))] if config.clouds_file else []
    if not config.cloud and not env.get("OS_AUTH_URL"):
        raise ConfigError(
            "no OpenStack credentials: name a clouds.yaml entry with ci.vm.cloud (or OS_CLOUD), or "
            "source the project's openrc file (OS_AUTH_URL, OS_APPLICATION_CREDENTIAL_ID/_SECRET ...); "
            "see secrets.example/README.md")
    try:
        from openstack.config import loader

        cloud_config = openstack.config.OpenStackConfig(
            config_files=files + list(loader.CONFIG_FILES), secure_files=secure + list(loader.SECURE_FILES),
            app_name=MANAGED_BY)
        region = cloud_config.get_one(cloud=config.cloud, region_name=config.region or "")
        connection = openstack.connection.Connection(config=region)
        connection.authorize()
    except os_exc.ConfigException as exc:
        raise ConfigError(f"OpenStack configuration: {exc}; see secrets.example/README.md") from None
    except Exception as exc:
        raise _translate(exc, "authenticating with OpenStack", config) from None
    return connection


def _auth_url(config: VMConfig) -> str:
    return os.environ.get("OS_AUTH_URL") or f"cloud '{config.cloud}'"


def _translate(exc: BaseException, action: str, config: VMConfig) -> CloudError:
    """Turn an openstacksdk or keystoneauth exception into one sentence with the fix."""
    from keystoneauth1 import exceptions as ks_exc
    from openstack import exceptions as os_exc

    if isinstance(exc, CloudError):
        return exc
    while isinstance(exc, os_exc.SDKException) and not isinstance(exc, os_exc.HttpException):
        inner = exc.__cause__ or exc.__context__  # authorize() wraps keystoneauth's own errors
        if not isinstance(inner, ks_exc.ClientException):
            break
        exc = inner
    if isinstance(exc, ks_exc.Unauthorized) or getattr(exc, "status_code", None) == 401:
        return CloudError(
            f"{action}: OpenStack refused the credentials (HTTP 401) at {_auth_url(config)}; check the "
            "application credential (OS_APPLICATION_CREDENTIAL_ID/_SECRET, or the clouds.yaml entry): it "
            "may be expired, deleted or for another project")
    if isinstance(exc, ks_exc.ConnectFailure | ks_exc.ConnectTimeout | ks_exc.DiscoveryFailure):
        return CloudError(f"{action}: cannot reach OpenStack at {_auth_url(config)} ({type(exc).__name__}); "
                          "check OS_AUTH_URL / auth_url and the network")
    if isinstance(exc, ks_exc.EndpointNotFound | os_exc.EndpointNotFound):
        return CloudError(f"{action}: the cloud's catalog has no endpoint for a service we need ({exc}); "
                          "check region_name / OS_REGION_NAME")
    if isinstance(exc, os_exc.HttpException):
        message = _http_message(exc)
        status = exc.status_code
        lowered = message.lower()
        if (status == 403 and "quota" in lowered) or status == 413 or "overquota" in lowered \
                or "quota exceeded" in lowered:
            return CloudError(f"{action}: quota exceeded: {message}; free resources in the project "
                              "(`openstack server list`, `openstack floating ip list`, `openstack volume "
                              "list`) or ask for more quota")
        return CloudError(f"{action}: OpenStack answered HTTP {status}: {message}")
    if isinstance(exc, os_exc.SDKException | ks_exc.ClientException):
        return CloudError(f"{action}: {type(exc).__name__}: {exc}")
    return CloudError(f"{action}: {type(exc).__name__}: {exc}")


def _http_message(exc: Any) -> str:
    details = getattr(exc, "details", None)
    text = str(details).strip() if details else ""
    if not text or text.lower() in ("none", "client error", "server error"):
        text = str(getattr(exc, "message", "") or exc)
    return " ".join(text.split())


@contextlib.contextmanager
def _step(action: str, config: VMConfig) -> Iterator[None]:
    try:
        yield
    except (CloudError, ConfigError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise _translate(exc, action, config) from None


def _find(finder: Callable[..., Any], name: str, what: str, listing: str, config: VMConfig,
          **kwargs: Any) -> Any | None:
    """find_* with ignore_missing=False: None when absent, one clear error when the name is ambiguous."""
    from openstack import exceptions as os_exc

    try:
        return finder(name, ignore_missing=False, **kwargs)
    except os_exc.NotFoundException:
        return None
    except os_exc.DuplicateResource:
        raise CloudError(f"more than one {what} is named '{name}'; remove or rename the extra ones "
                         f"(`{listing}`), or configure an id instead of the name") from None
    except Exception as exc:
        raise _translate(exc, f"looking up {what} '{name}'", config) from None


# --------------------------------------------------------------------------------------------
# what the VM is, as far as the cloud knows
# --------------------------------------------------------------------------------------------

@dataclass
class VMInfo:
    name: str
    server_id: str | None = None
    status: str = "absent"
    address: str | None = None
    fixed_address: str | None = None
    volume_id: str | None = None
    volume_status: str | None = None
    volume_device: str | None = None
    created: bool = False
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "server_id": self.server_id, "status": self.status,
                "address": self.address, "fixed_address": self.fixed_address, "volume_id": self.volume_id,
                "volume_status": self.volume_status, "volume_device": self.volume_device}


def _addresses(server: Any) -> tuple[str | None, str | None]:
    fixed = floating = None
    for entries in (server.addresses or {}).values():
        for entry in entries:
            if entry.get("version", 4) != 4:
                continue
            if entry.get("OS-EXT-IPS:type") == "floating":
                floating = floating or entry.get("addr")
            else:
                fixed = fixed or entry.get("addr")
    return fixed, floating


class BuildVMCloud:
    """The operations on one build VM, over one connection."""

    def __init__(self, config: VMConfig, connection: Any, say: Say = _quiet):
        self.config = config
        self.conn = connection
        self.say = say

    # ---- lookups -------------------------------------------------------------------------------
    def find_server(self) -> Any | None:
        return _find(self.conn.compute.find_server, self.config.name, "server", "openstack server list",
                     self.config)

    def _require_ours(self, server: Any) -> None:
        if (server.metadata or {}).get("managed-by") != MANAGED_BY:
            raise CloudError(f"a server named '{server.name}' exists ({server.id}) but was not created by "
                             f"{MANAGED_BY} (no metadata managed-by={MANAGED_BY}); it is left alone: choose "
                             "another ci.vm.name")

    def find_volume(self) -> Any | None:
        return _find(self.conn.block_storage.find_volume, self.config.volume, "volume",
                     "openstack volume list", self.config)

    def _ports(self, server: Any) -> list[Any]:
        with _step("listing the server's ports", self.config):
            return list(self.conn.network.ports(device_id=server.id))

    def _floating_ips_of(self, server: Any) -> list[Any]:
        out = []
        with _step("listing floating IPs", self.config):
            for port in self._ports(server):
                out.extend(self.conn.network.ips(port_id=port.id))
        return out

    # ---- start: find or create, step by step --------------------------------------------------
    def resolve_image(self) -> Any:
        if not self.config.image:
            raise ConfigError("no image for the build VM: set ci.vm.image (or --image), or export "
                              "OS_MY_IMAGE; `openstack image list` shows what the cloud offers")
        image = _find(self.conn.image.find_image, self.config.image, "image", "openstack image list",
                      self.config)
        if image is None:
            raise CloudError(f"unknown image '{self.config.image}': the cloud has no image by that name or "
                             "id; `openstack image list` shows the choices (set ci.vm.image or OS_MY_IMAGE)")
        if getattr(image, "status", "active") not in (None, "active"):
            raise CloudError(f"image '{self.config.image}' is {image.status}, not active; choose another one")
        return image

    def resolve_flavor(self) -> Any:
        flavor = _find(self.conn.compute.find_flavor, self.config.flavor, "flavor", "openstack flavor list",
                       self.config)
        if flavor is None:
            raise CloudError(f"unknown flavor '{self.config.flavor}': `openstack flavor list` shows the "
                             "choices (set ci.vm.flavor or OS_MY_FLAVOUR)")
        return flavor

    def ensure_keypair(self) -> str:
        config = self.config
        try:
            public = config.public_key.read_text(encoding="utf-8").strip()
        except OSError:
            raise ConfigError(
                f"the build VM's public key {config.public_key} is missing; create the key pair with "
                f"`ssh-keygen -t ed25519 -N '' -f {config.ssh_key}` (or set ci.vm.ssh_key / ci.vm.public_key)"
            ) from None
        keypair = _find(self.conn.compute.find_keypair, config.key_name, "key pair", "openstack keypair list",
                        config)
        if keypair is None:
            with _step(f"creating key pair '{config.key_name}'", config):
                self.conn.compute.create_keypair(name=config.key_name, public_key=public)
            return f"key pair {config.key_name}: created from {config.public_key}"
        if (keypair.public_key or "").split()[:2] != public.split()[:2]:
            raise CloudError(f"key pair '{config.key_name}' in the cloud holds another public key than "
                             f"{config.public_key}; delete it (`openstack keypair delete {config.key_name}`) "
                             "or set ci.vm.key_name to a new name")
        return f"key pair {config.key_name}: present"

    def ensure_security_group(self) -> str:
        config = self.config
        group = _find(self.conn.network.find_security_group, config.security_group, "security group",
                      "openstack security group list", config)
        created = group is None
        if group is None:
            with _step(f"creating security group '{config.security_group}'", config):
                group = self.conn.network.create_security_group(
                    name=config.security_group, description=f"SSH to the {MANAGED_BY} build VM")
        ethertype = "IPv6" if ":" in config.ssh_cidr else "IPv4"
        for rule in group.security_group_rules or []:
            if rule.get("direction") == "ingress" and rule.get("protocol") == "tcp" \
                    and rule.get("port_range_min") in (None, 22) \
                    and rule.get("port_range_max") in (None, 22) \
                    and rule.get("remote_ip_prefix") in (config.ssh_cidr, None) \
                    and rule.get("remote_group_id") is None:
                return f"security group {config.security_group}: present, allows SSH"
        from openstack import exceptions as os_exc

        try:
            self.conn.network.create_security_group_rule(
                security_group_id=group.id, direction="ingress", ethertype=ethertype, protocol="tcp",
                port_range_min=22, port_range_max=22, remote_ip_prefix=config.ssh_cidr,
                description=f"SSH for {MANAGED_BY}")
        except os_exc.ConflictException:
            pass  # the rule exists already: someone added it between our read and our write
        except Exception as exc:
            action = f"allowing SSH in security group '{config.security_group}'"
            raise _translate(exc, action, config) from None
        return f"security group {config.security_group}: {'created' if created else 'rule added'}, " \
               f"SSH from {config.ssh_cidr}"

    def ensure_server(self, info: VMInfo) -> Any:
        config = self.config
        server = self.find_server()
        if server is not None:
            self._require_ours(server)
            info.server_id = server.id
            if server.status == "ERROR":
                fault = (getattr(server, "fault", None) or {}).get("message", "no fault message")
                raise CloudError(f"server {config.name} ({server.id}) is in ERROR: {fault}; delete it with "
                                 "`inv vm.teardown`, then `inv vm.start` again")
            flavor = (getattr(server, "flavor", None) or {}).get("original_name")
            if flavor and flavor != config.flavor:
                info.notes.append(f"server {config.name} exists with flavor {flavor}, not {config.flavor}: "
                                  "`inv vm.teardown` first to change it")
            if server.status == "SHUTOFF":
                with _step(f"starting server {config.name}", config):
                    self.conn.compute.start_server(server)
                info.notes.append("server was SHUTOFF: started it")
            return server
        image = self.resolve_image()
        flavor = self.resolve_flavor()
        info.notes.append(self.ensure_keypair())
        info.notes.append(self.ensure_security_group())
        kwargs: dict[str, Any] = {}
        if config.network:
            network = _find(self.conn.network.find_network, config.network, "network",
                            "openstack network list", config)
            if network is None:
                raise CloudError(f"unknown network '{config.network}': `openstack network list` shows the "
                                 "project's networks (set ci.vm.network)")
            kwargs["networks"] = [{"uuid": network.id}]
        self.say(f"creating server {config.name} ({flavor.name}, image {image.name})")
        with _step(f"creating server {config.name}", config):
            server = self.conn.compute.create_server(
                name=config.name, image_id=image.id, flavor_id=flavor.id, key_name=config.key_name,
                security_groups=[{"name": config.security_group}],
                metadata={"managed-by": MANAGED_BY, "volume": config.volume}, **kwargs)
        info.server_id = server.id
        info.created = True
        return server

    def wait_active(self, server: Any) -> Any:
        from openstack import exceptions as os_exc

        config = self.config
        if server.status == "ACTIVE":
            return server
        self.say(f"waiting for server {config.name} to be ACTIVE (at most {config.timeouts.active:.0f}s)")
        try:
            return self.conn.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"],
                                                     interval=config.poll_interval,
                                                     wait=config.timeouts.active)
        except os_exc.ResourceFailure:
            current = self.find_server()
            fault = (getattr(current, "fault", None) or {}).get("message", "no fault message") \
                if current else ""
            raise CloudError(f"server {config.name} went to ERROR: {fault}; the next `inv vm.teardown` "
                             "deletes it (build-all already does); try another flavor or later") from None
        except os_exc.ResourceTimeout:
            current = self.find_server()
            status = current.status if current else "gone"
            raise CloudError(f"server {config.name} was not ACTIVE within {config.timeouts.active:.0f}s "
                             f"(status {status}); raise ci.vm.timeouts.active or check `openstack server "
                             f"show {config.name}`") from None
        except Exception as exc:
            raise _translate(exc, f"waiting for server {config.name}", config) from None

    def ensure_volume(self, server: Any, info: VMInfo) -> None:
        from openstack import exceptions as os_exc

        config = self.config
        volume = self.find_volume()
        if volume is None:
            self.say(f"creating volume {config.volume} ({config.volume_size} GB)")
            with _step(f"creating volume {config.volume}", config):
                kwargs = {"volume_type": config.volume_type} if config.volume_type else {}
                volume = self.conn.block_storage.create_volume(
                    name=config.volume, size=config.volume_size,
                    description=f"Docker data of the {MANAGED_BY} build VM; kept between VMs", **kwargs)
            info.notes.append(f"volume {config.volume}: created ({config.volume_size} GB)")
        attached_to = [a.get("server_id") for a in (volume.attachments or [])]
        if server.id not in attached_to:
            if attached_to:
                raise CloudError(f"volume {config.volume} is attached to server {attached_to[0]}, not to "
                                 f"{config.name}; detach it (`openstack server remove volume "
                                 f"{attached_to[0]} {config.volume}`) and run `inv vm.start` again")
            volume = self._wait_volume(volume, "available")
            self.say(f"attaching volume {config.volume} to {config.name}")
            with _step(f"attaching volume {config.volume}", config):
                self.conn.compute.create_volume_attachment(server, volume=volume)
        try:
            volume = self._wait_volume(volume, "in-use")
        except os_exc.SDKException as exc:
            raise _translate(exc, f"attaching volume {config.volume}", config) from None
        info.volume_id = volume.id
        info.volume_status = volume.status
        for attachment in volume.attachments or []:
            if attachment.get("server_id") == server.id:
                info.volume_device = attachment.get("device")

    def _wait_volume(self, volume: Any, status: str) -> Any:
        from openstack import exceptions as os_exc

        config = self.config
        if volume.status == status:
            return volume
        try:
            return self.conn.block_storage.wait_for_status(
                volume, status=status, failures=["error", "error_attaching", "error_detaching"],
                interval=config.poll_interval, wait=config.timeouts.volume)
        except os_exc.ResourceFailure:
            raise CloudError(f"volume {config.volume} went to an error state instead of {status}; check "
                             f"`openstack volume show {config.volume}`") from None
        except os_exc.ResourceTimeout:
            raise CloudError(f"volume {config.volume} was not {status} within {config.timeouts.volume:.0f}s; "
                             "raise ci.vm.timeouts.volume or check `openstack volume show "
                             f"{config.volume}`") from None
        except Exception as exc:
            raise _translate(exc, f"waiting for volume {config.volume}", config) from None

    def ensure_floating_ip(self, server: Any, info: VMInfo) -> str:
        config = self.config
        ports = self._ports(server)
        if not ports:
            raise CloudError(f"server {config.name} has no network port; check `openstack port list --server "
                             f"{config.name}`")
        port = ports[0]
        info.fixed_address = (port.fixed_ips or [{}])[0].get("ip_address")
        with _step("listing floating IPs", config):
            for port_ in ports:
                for fip in self.conn.network.ips(port_id=port_.id):
                    return str(fip.floating_ip_address)
        if config.floating_ip:
            with _step(f"looking up floating IP {config.floating_ip}", config):
                found = list(self.conn.network.ips(floating_ip_address=config.floating_ip))
            if not found:
                raise CloudError(f"floating IP {config.floating_ip} (ci.vm.floating_ip) is not allocated "
                                 "to this project; allocate it (`openstack floating ip create`) or unset "
                                 "ci.vm.floating_ip")
            if found[0].port_id:
                raise CloudError(f"floating IP {config.floating_ip} is in use by port {found[0].port_id}; "
                                 "free it or choose another address")
            with _step(f"associating floating IP {config.floating_ip}", config):
                self.conn.network.update_ip(found[0], port_id=port.id)
            return config.floating_ip
        with _step("listing floating IPs", config):
            leftovers = [ip for ip in self.conn.network.ips(description=config.description) if not ip.port_id]
        if leftovers:
            with _step("reusing a floating IP", config):
                self.conn.network.update_ip(leftovers[0], port_id=port.id)
            return str(leftovers[0].floating_ip_address)
        pool = _find(self.conn.network.find_network, config.floating_ip_pool, "network",
                     "openstack network list --external", config)
        if pool is None:
            raise CloudError(f"unknown floating IP pool '{config.floating_ip_pool}': `openstack network list "
                             "--external` shows the pools (set ci.vm.floating_ip_pool)")
        self.say(f"allocating a floating IP from {config.floating_ip_pool}")
        with _step(f"allocating a floating IP from {config.floating_ip_pool}", config):
            fip = self.conn.network.create_ip(floating_network_id=pool.id, port_id=port.id,
                                              description=config.description)
        return str(fip.floating_ip_address)

    def start(self, info: VMInfo) -> VMInfo:
        """Find or create everything, in order; `info` is filled in as we go (teardown reads it)."""
        server = self.ensure_server(info)
        server = self.wait_active(server)
        info.status = server.status
        self.ensure_volume(server, info)
        info.address = self.ensure_floating_ip(server, info)
        return info

    # ---- teardown ------------------------------------------------------------------------------
    def teardown(self) -> list[str]:
        """Delete the server (waiting until it is gone) and release our floating IPs; keep the volume."""
        from openstack import exceptions as os_exc

        config = self.config
        done: list[str] = []
        server = self.find_server()
        release: dict[str, Any] = {}
        if server is not None:
            self._require_ours(server)
            for fip in self._floating_ips_of(server):
                if fip.floating_ip_address != config.floating_ip:
                    release[fip.id] = fip
            self.say(f"deleting server {config.name} ({server.id})")
            with _step(f"deleting server {config.name}", config):
                self.conn.compute.delete_server(server, ignore_missing=True)
            try:
                self.conn.compute.wait_for_delete(server, interval=config.poll_interval,
                                                  wait=config.timeouts.delete)
            except os_exc.ResourceTimeout:
                raise CloudError(f"server {config.name} ({server.id}) was not gone "
                                 f"{config.timeouts.delete:.0f}s after the delete request; check `openstack "
                                 f"server show {server.id}` and run `inv vm.teardown` again") from None
            except Exception as exc:
                raise _translate(exc, f"waiting for server {config.name} to be deleted", config) from None
            done.append(f"server {config.name}: deleted")
        else:
            done.append(f"server {config.name}: none")
        with _step("listing floating IPs", config):
            for fip in self.conn.network.ips(description=config.description):
                if fip.floating_ip_address != config.floating_ip:
                    release.setdefault(fip.id, fip)
        for fip in release.values():
            with _step(f"releasing floating IP {fip.floating_ip_address}", config):
                self.conn.network.delete_ip(fip, ignore_missing=True)
            done.append(f"floating IP {fip.floating_ip_address}: released")
        if config.floating_ip:
            done.append(f"floating IP {config.floating_ip}: kept (ci.vm.floating_ip)")
        volume = self.find_volume()
        done.append(f"volume {config.volume}: kept ({volume.status})" if volume is not None
                    else f"volume {config.volume}: none")
        return done

    # ---- status --------------------------------------------------------------------------------
    def status(self) -> VMInfo:
        info = VMInfo(name=self.config.name)
        server = self.find_server()
        if server is not None:
            info.server_id = server.id
            info.status = server.status
            info.fixed_address, info.address = _addresses(server)
            if server.status == "ERROR":
                info.notes.append((getattr(server, "fault", None) or {}).get("message", "no fault message"))
        volume = self.find_volume()
        if volume is not None:
            info.volume_id = volume.id
            info.volume_status = volume.status
            for attachment in volume.attachments or []:
                if server is not None and attachment.get("server_id") == server.id:
                    info.volume_device = attachment.get("device")
        return info


def open_cloud(config: VMConfig, say: Say = _quiet) -> BuildVMCloud:
    return BuildVMCloud(config, connect(config), say)
