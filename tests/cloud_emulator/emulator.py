"""A small OpenStack cloud on 127.0.0.1: Keystone v3, Nova, Neutron, Cinder v3 and Glance v2.

It speaks HTTP on a real socket, so openstacksdk runs its whole stack against it: keystoneauth's
version discovery and token exchange (password or application credential), the service catalog,
microversion negotiation, the proxies, resource (de)serialisation and error parsing. Only the calls
the containers CI makes are implemented, with the response bodies and error formats of the real
services (Nova's `{"itemNotFound": ...}`, Neutron's `{"NeutronError": ...}`, Glance's plain text).

State lives in memory and changes with time, like a cloud: a server is BUILD for `build_seconds`,
then ACTIVE (or ERROR when a fault asks for it); a deleted server disappears after `delete_seconds`
and takes its port, floating IP association and volume attachment with it.

Faults (`Emulator.faults`, or POST /_emulator/faults) make the failure responses appear:
  server_quota       POST /servers answers 403 "Quota exceeded for cores ..."
  server_error       new servers go to ERROR with a "No valid host was found" fault
  server_never_active  new servers stay in BUILD
  floating_ip_quota  POST /floatingips answers 409 OverQuota
  volume_quota       POST /volumes answers 413 VolumeSizeExceedsAvailableQuota
  delete_stuck       deleted servers never disappear
  unavailable        every request but Keystone's answers 503
Every request is recorded (`Emulator.requests`, or GET /_emulator/requests), bodies included, so a
test can assert what crossed the wire.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import itertools
import json
import re
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.http_emulator import Answer, HTTPEmulator

PROJECT_ID = "5b2a9c1f0e3d4c8b9a7f6e5d4c3b2a10"
USER_ID = "c0ffee00c0ffee00c0ffee00c0ffee00"
USERNAME = "ci-robot"
PASSWORD = "emulator-password"
APP_CRED_ID = "a9f1e2d3c4b5a6978877665544332211"
APP_CRED_NAME = "containers-ci"
APP_CRED_SECRET = "emulator-application-credential-secret"
REGION = "regionOne"
COMPUTE_MAX_MICROVERSION = "2.96"
VOLUME_MAX_MICROVERSION = "3.70"


class HttpError(Exception):
    def __init__(self, status: int, body: Any, content_type: str = "application/json"):
        super().__init__(status)
        self.status = status
        self.body = body
        self.content_type = content_type


def nova_error(status: int, message: str) -> HttpError:
    kind = {400: "badRequest", 403: "forbidden", 404: "itemNotFound", 409: "conflictingRequest"}.get(
        status, "computeFault")
    return HttpError(status, {kind: {"code": status, "message": message}})


def neutron_error(status: int, kind: str, message: str) -> HttpError:
    return HttpError(status, {"NeutronError": {"type": kind, "message": message, "detail": ""}})


def cinder_error(status: int, message: str) -> HttpError:
    kind = {400: "badRequest", 404: "itemNotFound", 413: "overLimit"}.get(status, "computeFault")
    return HttpError(status, {kind: {"code": status, "message": message}})


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: str
    status: int = 0


@dataclass
class Cloud:
    """The state of the emulated project."""

    floating_ip_address: str | None = None  # every floating IP gets this address (127.0.0.1: loopback VM)
    application_credential_secret: str = APP_CRED_SECRET
    password: str = PASSWORD
    build_seconds: float = 0.3
    delete_seconds: float = 0.3
    volume_seconds: float = 0.1
    faults: dict[str, Any] = field(default_factory=dict)
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    flavors: dict[str, dict[str, Any]] = field(default_factory=dict)
    keypairs: dict[str, dict[str, Any]] = field(default_factory=dict)
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    subnets: dict[str, dict[str, Any]] = field(default_factory=dict)
    ports: dict[str, dict[str, Any]] = field(default_factory=dict)
    floating_ips: dict[str, dict[str, Any]] = field(default_factory=dict)
    security_groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    volumes: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)
    _timers: dict[str, float] = field(default_factory=dict)
    _addresses: Iterator[int] = field(default_factory=lambda: itertools.count(10))

    def __post_init__(self) -> None:
        for name in ("Ubuntu-22.04", "Ubuntu-24.04", "AlmaLinux-9"):
            image_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "image/" + name))
            self.images[image_id] = {
                "id": image_id, "name": name, "status": "active", "visibility": "public", "protected": False,
                "container_format": "bare", "disk_format": "qcow2", "min_disk": 0, "min_ram": 0,
                "size": 2361393152, "checksum": hashlib.md5(name.encode()).hexdigest(), "owner": "cloud-admin",
                "created_at": "2024-05-01T10:00:00Z", "updated_at": "2024-05-01T10:00:00Z", "tags": [],
                "self": f"/v2/images/{image_id}", "file": f"/v2/images/{image_id}/file", "schema": "/v2/schemas/image",
                "os_hidden": False,
            }
        for number, (name, vcpus, ram, disk) in enumerate(
                [("standard.small", 2, 1953, 80), ("hpc.5.64core", 64, 238281, 80), ("io.700GB", 40, 160000, 80)]):
            flavor_id = str(number + 1)
            self.flavors[flavor_id] = {
                "id": flavor_id, "name": name, "vcpus": vcpus, "ram": ram, "disk": disk,
                "OS-FLV-EXT-DATA:ephemeral": 0, "swap": 0, "rxtx_factor": 1.0, "os-flavor-access:is_public": True,
                "OS-FLV-DISABLED:disabled": False, "description": None, "extra_specs": {},
            }
        project_net = self._add_network("project_2001234", external=False, cidr="192.168.1.0/24")
        self._add_network("public", external=True, cidr="192.0.2.0/24")
        self.default_network_id = project_net
        self._add_security_group("default", "Default security group")

    # ---- helpers -------------------------------------------------------------------------------
    def _add_network(self, name: str, external: bool, cidr: str) -> str:
        network_id = str(uuid.uuid4())
        subnet_id = str(uuid.uuid4())
        self.networks[network_id] = {
            "id": network_id, "name": name, "status": "ACTIVE", "admin_state_up": True, "shared": False,
            "router:external": external, "subnets": [subnet_id], "tenant_id": PROJECT_ID, "project_id": PROJECT_ID,
            "mtu": 1500, "description": "", "tags": [], "availability_zones": ["nova"], "port_security_enabled": True,
            "created_at": now_iso(), "updated_at": now_iso(), "revision_number": 1,
        }
        self.subnets[subnet_id] = {"id": subnet_id, "name": f"{name}-subnet", "network_id": network_id,
                                   "cidr": cidr, "ip_version": 4, "enable_dhcp": True}
        return network_id

    def _add_security_group(self, name: str, description: str) -> dict[str, Any]:
        group_id = str(uuid.uuid4())
        group: dict[str, Any] = {"id": group_id, "name": name, "description": description, "tenant_id": PROJECT_ID,
                                 "project_id": PROJECT_ID, "stateful": True, "tags": [], "created_at": now_iso(),
                                 "updated_at": now_iso(), "revision_number": 1, "security_group_rules": []}
        for ethertype in ("IPv4", "IPv6"):
            group["security_group_rules"].append(self._rule(group_id, {"direction": "egress", "ethertype": ethertype}))
        self.security_groups[group_id] = group
        return group

    @staticmethod
    def _rule(group_id: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"id": str(uuid.uuid4()), "security_group_id": group_id, "direction": spec.get("direction", "ingress"),
                "ethertype": spec.get("ethertype", "IPv4"), "protocol": spec.get("protocol"),
                "port_range_min": spec.get("port_range_min"), "port_range_max": spec.get("port_range_max"),
                "remote_ip_prefix": spec.get("remote_ip_prefix"), "remote_group_id": spec.get("remote_group_id"),
                "description": spec.get("description", ""), "tenant_id": PROJECT_ID, "project_id": PROJECT_ID}

    def next_floating_address(self) -> str:
        return self.floating_ip_address or f"192.0.2.{next(self._addresses)}"

    def tick(self) -> None:
        """Advance every timed transition whose time has come."""
        moment = time.monotonic()
        for server_id, server in list(self.servers.items()):
            if server["status"] == "BUILD" and moment >= self._timers.get(server_id, 0):
                if self.faults.get("server_error"):
                    server["status"] = "ERROR"
                    server["OS-EXT-STS:vm_state"] = "error"
                    server["fault"] = {"code": 500, "created": now_iso(),
                                       "message": "No valid host was found. There are not enough hosts available."}
                elif not self.faults.get("server_never_active"):
                    server["status"] = "ACTIVE"
                    server["OS-EXT-STS:vm_state"] = "active"
                    server["OS-EXT-STS:power_state"] = 1
                server["OS-EXT-STS:task_state"] = None
            if server.get("_deleting") and moment >= self._timers.get(server_id, 0) \
                    and not self.faults.get("delete_stuck"):
                self._remove_server(server_id)
        for volume_id, volume in self.volumes.items():
            if volume["status"] in ("creating", "attaching", "detaching") \
                    and moment >= self._timers.get(volume_id, 0):
                volume["status"] = "in-use" if volume["attachments"] else "available"

    def _remove_server(self, server_id: str) -> None:
        self.servers.pop(server_id, None)
        for port_id, port in list(self.ports.items()):
            if port["device_id"] == server_id:
                for fip in self.floating_ips.values():
                    if fip["port_id"] == port_id:
                        fip.update(port_id=None, fixed_ip_address=None, status="DOWN")
                del self.ports[port_id]
        for volume in self.volumes.values():
            volume["attachments"] = [a for a in volume["attachments"] if a["server_id"] != server_id]
            if not volume["attachments"] and volume["status"] == "in-use":
                volume["status"] = "available"

    def server_view(self, server: dict[str, Any]) -> dict[str, Any]:
        view = {k: v for k, v in copy.deepcopy(server).items() if not k.startswith("_")}
        addresses: dict[str, list[dict[str, Any]]] = {}
        for port in self.ports.values():
            if port["device_id"] != server["id"]:
                continue
            network = self.networks[port["network_id"]]
            entries = addresses.setdefault(network["name"], [])
            for fixed in port["fixed_ips"]:
                entries.append({"version": 4, "addr": fixed["ip_address"], "OS-EXT-IPS:type": "fixed",
                                "OS-EXT-IPS-MAC:mac_addr": port["mac_address"]})
                for fip in self.floating_ips.values():
                    if fip["port_id"] == port["id"]:
                        entries.append({"version": 4, "addr": fip["floating_ip_address"],
                                        "OS-EXT-IPS:type": "floating",
                                        "OS-EXT-IPS-MAC:mac_addr": port["mac_address"]})
        view["addresses"] = addresses
        view["os-extended-volumes:volumes_attached"] = [
            {"id": volume["id"], "delete_on_termination": False}
            for volume in self.volumes.values() if any(a["server_id"] == server["id"] for a in volume["attachments"])]
        return view


Route = Callable[..., tuple[int, Any, dict[str, str]]]


class Emulator(HTTPEmulator[Request]):
    """The HTTP front of a `Cloud`: start() serves it from a thread on 127.0.0.1."""

    thread_name = "cloud-emulator"

    def __init__(self, cloud: Cloud | None = None, port: int = 0, host: str = "127.0.0.1", verbose: bool = False):
        super().__init__(port=port, host=host, verbose=verbose)
        self.cloud = cloud or Cloud()

    @property
    def auth_url(self) -> str:
        return f"{self.url}/identity/v3"

    @property
    def faults(self) -> dict[str, Any]:
        return self.cloud.faults

    def answer(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Answer:
        """Record the request, let the cloud's clock advance, route it; an emulator bug answers 500."""
        parts = urlsplit(target)
        raw = body.decode()
        record = Request(method, parts.path, parse_qs(parts.query, keep_blank_values=True), headers, raw)
        with self.lock:
            self.requests.append(record)
            self.cloud.tick()
            try:
                status, payload, extra = self.route(method, parts.path, record.query,
                                                    json.loads(raw) if raw else {}, record.headers)
                content_type = "application/json"
            except HttpError as error:
                status, payload, extra, content_type = error.status, error.body, {}, error.content_type
            except Exception as exc:  # a bug in the emulator: answer 500 like a broken service would
                traceback.print_exc()
                status, payload, extra, content_type = 500, {"error": f"{type(exc).__name__}: {exc}"}, {}, \
                    "application/json"
            record.status = status
        data = b"" if payload is None else (
            payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
        headers_out = {"Content-Type": content_type} if data else {}
        headers_out["X-Openstack-Request-Id"] = "req-" + str(uuid.uuid4())
        return Answer(status, data, {**headers_out, **extra})

    # ---- configuration for clients ---------------------------------------------------------------
    def _secret(self, auth: str) -> str:
        return self.cloud.application_credential_secret if auth == "application_credential" else self.cloud.password

    def clouds_yaml(self, cloud: str = "emulated", auth: str = "application_credential") -> dict[str, Any]:
        """A clouds.yaml document for this emulator (the secret included: write it 0600)."""
        secret = self._secret(auth)
        entry: dict[str, Any] = {"region_name": REGION, "interface": "public", "identity_api_version": 3}
        if auth == "application_credential":
            entry["auth_type"] = "v3applicationcredential"
            entry["auth"] = {"auth_url": self.auth_url, "application_credential_id": APP_CRED_ID,
                             "application_credential_secret": secret}
        else:
            entry["auth"] = {"auth_url": self.auth_url, "username": USERNAME, "password": secret,
                             "project_id": PROJECT_ID, "user_domain_name": "Default"}
        return {"clouds": {cloud: entry}}

    def environment(self, auth: str = "application_credential") -> dict[str, str]:
        """The OS_* variables an openrc file for this emulator would export."""
        secret = self._secret(auth)
        env = {"OS_AUTH_URL": self.auth_url, "OS_REGION_NAME": REGION, "OS_INTERFACE": "public",
               "OS_IDENTITY_API_VERSION": "3"}
        if auth == "application_credential":
            env.update(OS_AUTH_TYPE="v3applicationcredential", OS_APPLICATION_CREDENTIAL_ID=APP_CRED_ID,
                       OS_APPLICATION_CREDENTIAL_SECRET=secret)
        else:
            env.update(OS_USERNAME=USERNAME, OS_PASSWORD=secret, OS_PROJECT_ID=PROJECT_ID,
                       OS_USER_DOMAIN_NAME="Default")
        return env

    def write_clouds_yaml(self, path: Path, **kwargs: Any) -> Path:
        import yaml

        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(self.clouds_yaml(**kwargs), sort_keys=False), encoding="utf-8")
        return path

    # ---- inspection for tests ------------------------------------------------------------------
    def calls(self, method: str | None = None, path_pattern: str = "") -> list[Request]:
        with self.lock:
            return [r for r in self.requests
                    if (method is None or r.method == method) and re.search(path_pattern, r.path)]

    def servers(self) -> list[dict[str, Any]]:
        with self.lock:
            self.cloud.tick()
            return [self.cloud.server_view(s) for s in self.cloud.servers.values()]

    def floating_ips(self) -> list[dict[str, Any]]:
        with self.lock:
            self.cloud.tick()
            return copy.deepcopy(list(self.cloud.floating_ips.values()))

    def volumes(self) -> list[dict[str, Any]]:
        with self.lock:
            self.cloud.tick()
            return copy.deepcopy(list(self.cloud.volumes.values()))

    # ---- routing -------------------------------------------------------------------------------
    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any,
              headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        path = path.rstrip("/") or "/"
        if path.startswith("/_emulator"):
            return self._control(method, path, body)
        if path.startswith("/identity"):
            return self._identity(method, path[len("/identity"):] or "/", body, headers)
        service, _, rest = path.lstrip("/").partition("/")
        if service not in ("compute", "network", "volume", "image"):
            raise HttpError(404, "404 Not Found", "text/plain")
        if rest in ("", "v2.1", "v2.0", "v2", "v3") or re.fullmatch(r"v3/[0-9a-f]+", rest):
            return self._discovery(service, rest)
        token = headers.get("X-Auth-Token") or headers.get("x-auth-token")
        if not token or token not in self.cloud.tokens:
            raise HttpError(401, {"error": {"code": 401, "title": "Unauthorized",
                                            "message": "The request you have made requires authentication."}})
        if self.cloud.faults.get("unavailable"):
            raise HttpError(503, "503 Service Unavailable\n\nThe server is currently unavailable.", "text/plain")
        flat = {k: v[-1] for k, v in query.items()}
        if service == "compute":
            return self._compute(method, rest.removeprefix("v2.1"), flat, body)
        if service == "network":
            return self._network(method, rest.removeprefix("v2.0"), query, body)
        if service == "volume":
            prefix = f"v3/{PROJECT_ID}"
            if not rest.startswith(prefix):
                raise cinder_error(404, "project mismatch")
            return self._volume(method, rest[len(prefix):], flat, body)
        return self._image(method, rest.removeprefix("v2"), flat)

    def _control(self, method: str, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        if path == "/_emulator/faults":
            if method == "POST":
                self.cloud.faults.clear()
                self.cloud.faults.update(body or {})
            return 200, self.cloud.faults, {}
        if path == "/_emulator/requests":
            return 200, [{"method": r.method, "path": r.path, "status": r.status} for r in self.requests], {}
        if path == "/_emulator/state":
            return 200, {"servers": [self.cloud.server_view(s) for s in self.cloud.servers.values()],
                         "floating_ips": list(self.cloud.floating_ips.values()),
                         "volumes": list(self.cloud.volumes.values()),
                         "keypairs": list(self.cloud.keypairs.values()),
                         "security_groups": list(self.cloud.security_groups.values())}, {}
        raise HttpError(404, {"error": "unknown control path"})

    # ---- Keystone ------------------------------------------------------------------------------
    def _version_v3(self) -> dict[str, Any]:
        return {"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
                "links": [{"rel": "self", "href": f"{self.url}/identity/v3/"}],
                "media-types": [{"base": "application/json",
                                 "type": "application/vnd.openstack.identity-v3+json"}]}

    def _identity(self, method: str, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        path = path.rstrip("/") or "/"
        if method == "GET" and path == "/":
            return 300, {"versions": {"values": [self._version_v3()]}}, {}
        if method == "GET" and path == "/v3":
            return 200, {"version": self._version_v3()}, {}
        if method == "POST" and path == "/v3/auth/tokens":
            return self._issue_token(body)
        raise HttpError(404, {"error": {"code": 404, "title": "Not Found", "message": f"no route {path}"}})

    def _issue_token(self, body: Any) -> tuple[int, Any, dict[str, str]]:
        identity = (body.get("auth") or {}).get("identity") or {}
        methods = identity.get("methods") or []
        unauthorized = HttpError(401, {"error": {"code": 401, "title": "Unauthorized",
                                                 "message": "The request you have made requires authentication."}})
        if methods == ["application_credential"]:
            credential = identity.get("application_credential") or {}
            known = credential.get("id") == APP_CRED_ID or (
                credential.get("name") == APP_CRED_NAME and (credential.get("user") or {}).get("name") == USERNAME)
            if not known or credential.get("secret") != self.cloud.application_credential_secret:
                raise unauthorized
            method = "application_credential"
        elif methods == ["password"]:
            user = (identity.get("password") or {}).get("user") or {}
            known_user = user.get("name", user.get("id")) in (USERNAME, USER_ID)
            if not known_user or user.get("password") != self.cloud.password:
                raise unauthorized
            method = "password"
        else:
            raise HttpError(400, {"error": {"code": 400, "title": "Bad Request",
                                            "message": f"unsupported auth methods {methods}"}})
        issued = datetime.datetime.now(datetime.UTC)
        catalog = []
        base = self.url
        for service_type, name, url in (
                ("identity", "keystone", f"{base}/identity"),
                ("compute", "nova", f"{base}/compute/v2.1"),
                ("network", "neutron", f"{base}/network"),
                ("volumev3", "cinderv3", f"{base}/volume/v3/{PROJECT_ID}"),
                ("block-storage", "cinder", f"{base}/volume/v3/{PROJECT_ID}"),
                ("image", "glance", f"{base}/image")):
            catalog.append({"type": service_type, "name": name, "id": uuid.uuid5(uuid.NAMESPACE_URL, name).hex,
                            "endpoints": [{"id": uuid.uuid5(uuid.NAMESPACE_URL, name + interface).hex,
                                           "interface": interface, "region": REGION, "region_id": REGION,
                                           "url": url} for interface in ("public", "internal", "admin")]})
        token: dict[str, Any] = {
            "methods": [method], "catalog": catalog, "audit_ids": [uuid.uuid4().hex],
            "issued_at": issued.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
            "expires_at": (issued + datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
            "user": {"id": USER_ID, "name": USERNAME, "domain": {"id": "default", "name": "Default"},
                     "password_expires_at": None},
            "project": {"id": PROJECT_ID, "name": "project_2001234", "domain": {"id": "default", "name": "Default"}},
            "roles": [{"id": uuid.uuid5(uuid.NAMESPACE_URL, "member").hex, "name": "member"}],
            "is_domain": False,
        }
        if method == "application_credential":
            token["application_credential"] = {"id": APP_CRED_ID, "name": APP_CRED_NAME, "restricted": True}
        token_id = uuid.uuid4().hex
        self.cloud.tokens[token_id] = time.time()
        return 201, {"token": token}, {"X-Subject-Token": token_id}

    # ---- version documents -----------------------------------------------------------------------
    def _discovery(self, service: str, rest: str) -> tuple[int, Any, dict[str, str]]:
        base = self.url
        if service == "compute":
            v21 = {"id": "v2.1", "status": "CURRENT", "version": COMPUTE_MAX_MICROVERSION, "min_version": "2.1",
                   "updated": "2013-07-23T11:33:21Z", "links": [{"rel": "self", "href": f"{base}/compute/v2.1/"}]}
            return (200, {"version": v21}, {}) if rest else (300, {"versions": [v21]}, {})
        if service == "network":
            v20 = {"id": "v2.0", "status": "CURRENT", "links": [{"rel": "self", "href": f"{base}/network/v2.0/"}]}
            return (200, {"version": v20}, {}) if rest else (300, {"versions": [v20]}, {})
        if service == "volume":
            v3 = {"id": "v3.0", "status": "CURRENT", "version": VOLUME_MAX_MICROVERSION, "min_version": "3.0",
                  "updated": "2023-08-31T00:00:00Z", "links": [{"rel": "self", "href": f"{base}/volume/v3/"}]}
            return (200, {"version": v3}, {}) if rest else (300, {"versions": [v3]}, {})
        v2 = {"id": "v2.15", "status": "CURRENT", "links": [{"rel": "self", "href": f"{base}/image/v2/"}]}
        return (200, {"version": v2}, {}) if rest else (300, {"versions": [v2]}, {})

    # ---- Glance v2 -----------------------------------------------------------------------------
    def _image(self, method: str, path: str, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        images = self.cloud.images
        if method == "GET" and path == "/images":
            found = [i for i in images.values() if all(
                str(i.get(k)) == v for k, v in query.items() if k in ("name", "id", "status", "visibility"))]
            return 200, {"images": found, "schema": "/v2/schemas/images", "first": "/v2/images"}, {}
        match = re.fullmatch(r"/images/([^/]+)", path)
        if method == "GET" and match:
            if match.group(1) in images:
                return 200, images[match.group(1)], {}
            raise HttpError(404, f"404 Not Found\n\nNo image found with ID {match.group(1)}\n\n   ", "text/plain")
        raise HttpError(404, "404 Not Found", "text/plain")

    # ---- Nova ----------------------------------------------------------------------------------
    def _compute(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        cloud = self.cloud
        headers = {"OpenStack-API-Version": f"compute {COMPUTE_MAX_MICROVERSION}",
                   "X-OpenStack-Nova-API-Version": COMPUTE_MAX_MICROVERSION, "Vary": "OpenStack-API-Version"}
        if method == "GET" and path in ("/flavors", "/flavors/detail"):
            flavors = [f for f in cloud.flavors.values()
                       if not query.get("name") or f["name"] == query["name"]]
            return 200, {"flavors": flavors}, headers
        match = re.fullmatch(r"/flavors/([^/]+)", path)
        if method == "GET" and match:
            if match.group(1) not in cloud.flavors:
                raise nova_error(404, f"Flavor {match.group(1)} could not be found.")
            return 200, {"flavor": cloud.flavors[match.group(1)]}, headers
        if path == "/os-keypairs":
            if method == "GET":
                return 200, {"keypairs": [{"keypair": k} for k in cloud.keypairs.values()]}, headers
            if method == "POST":
                return (*self._create_keypair(body.get("keypair") or {}), headers)
        match = re.fullmatch(r"/os-keypairs/([^/]+)", path)
        if match:
            name = match.group(1)
            if name not in cloud.keypairs:
                raise nova_error(404, f"Keypair {name} not found for user {USER_ID}")
            if method == "GET":
                return 200, {"keypair": cloud.keypairs[name]}, headers
            if method == "DELETE":
                del cloud.keypairs[name]
                return 202, None, headers
        if path in ("/servers", "/servers/detail") and method == "GET":
            found = []
            for server in cloud.servers.values():
                if query.get("name") and not re.search(query["name"], server["name"]):
                    continue  # Nova treats the name filter as a regular expression
                if query.get("status") and server["status"] != query["status"].upper():
                    continue
                found.append(cloud.server_view(server))
            if path == "/servers":
                found = [{"id": s["id"], "name": s["name"], "links": s["links"]} for s in found]
            return 200, {"servers": found}, headers
        if path == "/servers" and method == "POST":
            return (*self._create_server(body.get("server") or {}), headers)
        match = re.fullmatch(r"/servers/([^/]+)(/.*)?", path)
        if match:
            server_id, sub = match.group(1), match.group(2) or ""
            the_server = cloud.servers.get(server_id)
            if the_server is None:
                raise nova_error(404, f"Instance {server_id} could not be found.")
            server = the_server
            if sub == "" and method == "GET":
                return 200, {"server": cloud.server_view(server)}, headers
            if sub == "" and method == "DELETE":
                if not server.get("_deleting"):
                    server["_deleting"] = True
                    server["OS-EXT-STS:task_state"] = "deleting"
                    cloud._timers[server_id] = time.monotonic() + cloud.delete_seconds
                return 204, None, headers
            if sub == "/os-volume_attachments":
                if method == "GET":
                    return 200, {"volumeAttachments": self._attachments(server_id)}, headers
                if method == "POST":
                    return (*self._attach(server, body.get("volumeAttachment") or {}), headers)
            if sub == "/os-interface" and method == "GET":
                return 200, {"interfaceAttachments": [
                    {"port_id": p["id"], "net_id": p["network_id"], "mac_addr": p["mac_address"],
                     "port_state": p["status"], "fixed_ips": p["fixed_ips"]}
                    for p in cloud.ports.values() if p["device_id"] == server_id]}, headers
        raise nova_error(404, f"The resource could not be found: {method} {path}")

    def _create_keypair(self, spec: dict[str, Any]) -> tuple[int, Any]:
        name = spec.get("name")
        if not name or not re.fullmatch(r"[A-Za-z0-9 _.@-]+", name):
            raise nova_error(400, "Keypair data is invalid: Keypair name contains unsafe characters")
        if name in self.cloud.keypairs:
            raise nova_error(409, f"Key pair '{name}' already exists.")
        public_key = spec.get("public_key")
        if not public_key or not re.match(r"(ssh-(ed25519|rsa)|ecdsa-sha2-\S+) [A-Za-z0-9+/=]+", public_key):
            raise nova_error(400, "Keypair data is invalid: failed to generate fingerprint")
        blob = public_key.split()[1].encode()
        fingerprint = ":".join(re.findall("..", hashlib.md5(blob).hexdigest()))
        keypair = {"name": name, "public_key": public_key.strip(), "fingerprint": fingerprint, "type": "ssh",
                   "user_id": USER_ID, "created_at": now_iso(), "deleted": False, "id": len(self.cloud.keypairs) + 1}
        self.cloud.keypairs[name] = keypair
        return 200, {"keypair": keypair}

    def _create_server(self, spec: dict[str, Any]) -> tuple[int, Any]:
        cloud = self.cloud
        if cloud.faults.get("server_quota"):
            flavor = cloud.flavors.get(str(spec.get("flavorRef")), {"vcpus": 1})
            raise nova_error(403, f"Quota exceeded for cores: Requested {flavor['vcpus']}, but already used 0 of "
                                  "20 cores")
        for key in ("name", "imageRef", "flavorRef"):
            if not spec.get(key):
                raise nova_error(400, f"Invalid input for field/attribute server. Missing '{key}'")
        if spec["imageRef"] not in cloud.images:
            raise nova_error(400, f"Image {spec['imageRef']} could not be found.")
        if str(spec["flavorRef"]) not in cloud.flavors:
            raise nova_error(400, f"Flavor {spec['flavorRef']} could not be found.")
        if spec.get("key_name") and spec["key_name"] not in cloud.keypairs:
            raise nova_error(400, f"Invalid key_name provided: {spec['key_name']}")
        groups = []
        for group in spec.get("security_groups") or [{"name": "default"}]:
            matches = [g for g in cloud.security_groups.values() if group.get("name") in (g["name"], g["id"])]
            if not matches:
                raise nova_error(400, f"Security group {group.get('name')} not found for project {PROJECT_ID}.")
            groups.append(matches[0])
        networks = spec.get("networks")
        if networks in (None, "auto"):
            candidates = [n for n in cloud.networks.values() if not n["router:external"]]
            if len(candidates) != 1:
                raise nova_error(409, "Multiple possible networks found, use a Network ID to be more specific.")
            network_ids = [candidates[0]["id"]]
        else:
            network_ids = []
            for entry in networks:
                if entry.get("uuid") not in cloud.networks:
                    raise nova_error(400, f"Network {entry.get('uuid')} could not be found.")
                network_ids.append(entry["uuid"])
        server_id = str(uuid.uuid4())
        flavor = cloud.flavors[str(spec["flavorRef"])]
        server = {
            "id": server_id, "name": spec["name"], "status": "BUILD", "tenant_id": PROJECT_ID,
            "user_id": USER_ID, "metadata": spec.get("metadata") or {}, "key_name": spec.get("key_name"),
            "image": {"id": spec["imageRef"], "links": []},
            "flavor": {"original_name": flavor["name"], "vcpus": flavor["vcpus"], "ram": flavor["ram"],
                       "disk": flavor["disk"], "ephemeral": 0, "swap": 0, "extra_specs": {}},
            "created": now_iso(), "updated": now_iso(), "hostId": "", "accessIPv4": "", "accessIPv6": "",
            "progress": 0, "OS-DCF:diskConfig": "MANUAL", "OS-EXT-AZ:availability_zone": "nova",
            "OS-EXT-STS:power_state": 0, "OS-EXT-STS:task_state": "scheduling", "OS-EXT-STS:vm_state": "building",
            "config_drive": "", "locked": False, "tags": [], "description": None,
            "security_groups": [{"name": g["name"]} for g in groups],
            "links": [{"rel": "self", "href": f"{self.url}/compute/v2.1/servers/{server_id}"}],
        }
        cloud.servers[server_id] = server
        cloud._timers[server_id] = time.monotonic() + cloud.build_seconds
        for network_id in network_ids:
            port_id = str(uuid.uuid4())
            subnet = cloud.subnets[cloud.networks[network_id]["subnets"][0]]
            prefix = subnet["cidr"].rsplit(".", 1)[0]
            cloud.ports[port_id] = {
                "id": port_id, "name": "", "network_id": network_id, "device_id": server_id,
                "device_owner": "compute:nova", "status": "ACTIVE", "admin_state_up": True,
                "mac_address": "fa:16:3e:" + ":".join(f"{b:02x}" for b in uuid.uuid4().bytes[:3]),
                "fixed_ips": [{"subnet_id": subnet["id"], "ip_address": f"{prefix}.{10 + len(cloud.ports)}"}],
                "security_groups": [g["id"] for g in groups], "tenant_id": PROJECT_ID, "project_id": PROJECT_ID,
                "tags": [], "description": "", "binding:vnic_type": "normal"}
        view = {"id": server_id, "links": server["links"], "OS-DCF:diskConfig": "MANUAL",
                "security_groups": server["security_groups"], "adminPass": uuid.uuid4().hex[:12]}
        return 202, {"server": view}

    def _attachments(self, server_id: str) -> list[dict[str, Any]]:
        out = []
        for volume in self.cloud.volumes.values():
            for attachment in volume["attachments"]:
                if attachment["server_id"] == server_id:
                    out.append({"id": volume["id"], "volumeId": volume["id"], "serverId": server_id,
                                "device": attachment["device"], "tag": None, "delete_on_termination": False,
                                "attachment_id": attachment["attachment_id"]})
        return out

    def _attach(self, server: dict[str, Any], spec: dict[str, Any]) -> tuple[int, Any]:
        volume = self.cloud.volumes.get(spec.get("volumeId", ""))
        if volume is None:
            raise nova_error(404, f"Volume {spec.get('volumeId')} could not be found.")
        if server["status"] != "ACTIVE":
            raise nova_error(409, f"Cannot 'attach_volume' instance {server['id']} while it is in vm_state "
                                  f"{server['OS-EXT-STS:vm_state']}")
        if volume["status"] != "available":
            raise nova_error(400, f"Invalid volume: volume {volume['id']} status must be 'available'. "
                                  f"Currently in '{volume['status']}'")
        used = {a["device"] for v in self.cloud.volumes.values() for a in v["attachments"]
                if a["server_id"] == server["id"]}
        device = next(f"/dev/vd{letter}" for letter in "bcdefgh" if f"/dev/vd{letter}" not in used)
        attachment = {"server_id": server["id"], "attachment_id": str(uuid.uuid4()), "volume_id": volume["id"],
                      "device": device, "host_name": "compute-1", "id": volume["id"],
                      "attached_at": now_iso()}
        volume["attachments"].append(attachment)
        volume["status"] = "attaching"
        self.cloud._timers[volume["id"]] = time.monotonic() + self.cloud.volume_seconds
        return 200, {"volumeAttachment": {"id": volume["id"], "volumeId": volume["id"], "serverId": server["id"],
                                          "device": device, "tag": None, "delete_on_termination": False}}

    # ---- Neutron -------------------------------------------------------------------------------
    @staticmethod
    def _filter(items: list[dict[str, Any]], query: dict[str, list[str]]) -> list[dict[str, Any]]:
        def matches(item: dict[str, Any]) -> bool:
            for key, values in query.items():
                if key in ("fields", "limit", "marker", "sort_key", "sort_dir"):
                    continue
                value = item.get(key)
                rendered = {str(value), str(value).lower()} if not isinstance(value, bool) else {str(value).lower()}
                if not any(v in rendered or (v == "" and value is None) for v in values):
                    return False
            return True

        return [copy.deepcopy(i) for i in items if matches(i)]

    def _network(self, method: str, path: str, query: dict[str, list[str]],
                 body: Any) -> tuple[int, Any, dict[str, str]]:
        cloud = self.cloud
        collections = {"networks": cloud.networks, "ports": cloud.ports, "floatingips": cloud.floating_ips,
                       "security-groups": cloud.security_groups, "subnets": cloud.subnets}
        singular = {"networks": "network", "ports": "port", "floatingips": "floatingip",
                    "security-groups": "security_group", "subnets": "subnet"}
        match = re.fullmatch(r"/([a-z-]+)(?:/([^/]+))?", path)
        if not match:
            raise neutron_error(404, "HTTPNotFound", "The resource could not be found.")
        kind, item_id = match.group(1), match.group(2)
        if kind == "security-group-rules":
            return self._security_group_rule(method, item_id, body)
        if kind not in collections:
            raise neutron_error(404, "HTTPNotFound", "The resource could not be found.")
        store, key = collections[kind], singular[kind]
        title = {"floatingips": "FloatingIPNotFound", "security-groups": "SecurityGroupNotFound"}.get(
            kind, key.capitalize() + "NotFound")
        if item_id is None and method == "GET":
            plural = kind.replace("-", "_")
            return 200, {plural: self._filter(list(store.values()), query)}, {}
        if item_id is None and method == "POST":
            spec = body.get(key) or {}
            if kind == "floatingips":
                return 201, {key: self._create_floating_ip(spec)}, {}
            if kind == "security-groups":
                if not spec.get("name"):
                    raise neutron_error(400, "HTTPBadRequest", "Invalid input: name is required")
                return 201, {key: cloud._add_security_group(spec["name"], spec.get("description", ""))}, {}
            raise neutron_error(405, "HTTPMethodNotAllowed", f"creating {kind} is not emulated")
        if item_id not in store:
            raise neutron_error(404, title, f"{key.replace('_', ' ').title()} {item_id} could not be found.")
        item = store[item_id]
        if method == "GET":
            return 200, {key: copy.deepcopy(item)}, {}
        if method == "DELETE":
            if kind == "security-groups" and any(item_id in p["security_groups"] for p in cloud.ports.values()):
                raise neutron_error(409, "SecurityGroupInUse", f"Security Group {item_id} in use.")
            del store[item_id]
            return 204, None, {}
        if method == "PUT" and kind == "floatingips":
            spec = body.get(key) or {}
            if "port_id" in spec:
                self._associate(item, spec["port_id"])
            if "description" in spec:
                item["description"] = spec["description"]
            return 200, {key: copy.deepcopy(item)}, {}
        raise neutron_error(405, "HTTPMethodNotAllowed", f"{method} {kind} is not emulated")

    def _associate(self, fip: dict[str, Any], port_id: str | None) -> None:
        if port_id is None:
            fip.update(port_id=None, fixed_ip_address=None, status="DOWN")
            return
        port = self.cloud.ports.get(port_id)
        if port is None:
            raise neutron_error(404, "PortNotFound", f"Port {port_id} could not be found.")
        for other in self.cloud.floating_ips.values():
            if other["port_id"] == port_id and other["id"] != fip["id"]:
                raise neutron_error(409, "FloatingIPPortAlreadyAssociated",
                                    f"Cannot associate floating IP {fip['floating_ip_address']} with port "
                                    f"{port_id}: it already has floating IP {other['floating_ip_address']}.")
        fip.update(port_id=port_id, fixed_ip_address=port["fixed_ips"][0]["ip_address"], status="ACTIVE")

    def _create_floating_ip(self, spec: dict[str, Any]) -> dict[str, Any]:
        cloud = self.cloud
        if cloud.faults.get("floating_ip_quota"):
            raise neutron_error(409, "OverQuota", "Quota exceeded for resources: ['floatingip'].")
        network = cloud.networks.get(spec.get("floating_network_id", ""))
        if network is None or not network["router:external"]:
            raise neutron_error(404, "ExternalGatewayForFloatingIPNotFound",
                                f"External network {spec.get('floating_network_id')} is not reachable.")
        fip_id = str(uuid.uuid4())
        fip = {"id": fip_id, "floating_ip_address": cloud.next_floating_address(),
               "floating_network_id": network["id"], "port_id": None, "fixed_ip_address": None, "status": "DOWN",
               "router_id": str(uuid.uuid5(uuid.NAMESPACE_URL, "router")), "description": spec.get("description", ""),
               "tenant_id": PROJECT_ID, "project_id": PROJECT_ID, "tags": [], "dns_domain": "", "dns_name": "",
               "port_details": None, "created_at": now_iso(), "updated_at": now_iso(), "revision_number": 0}
        cloud.floating_ips[fip_id] = fip
        if spec.get("port_id"):
            try:
                self._associate(fip, spec["port_id"])
            except HttpError:
                del cloud.floating_ips[fip_id]
                raise
        return copy.deepcopy(fip)

    def _security_group_rule(self, method: str, rule_id: str | None, body: Any) -> tuple[int, Any, dict[str, str]]:
        if method == "POST" and rule_id is None:
            spec = body.get("security_group_rule") or {}
            group = self.cloud.security_groups.get(spec.get("security_group_id", ""))
            if group is None:
                raise neutron_error(404, "SecurityGroupNotFound",
                                    f"Security group {spec.get('security_group_id')} does not exist")
            rule = self.cloud._rule(group["id"], spec)
            compare = ("direction", "ethertype", "protocol", "port_range_min", "port_range_max", "remote_ip_prefix")
            for existing in group["security_group_rules"]:
                if all(str(existing.get(k)) == str(rule.get(k)) for k in compare):
                    raise neutron_error(409, "SecurityGroupRuleExists",
                                        f"Security group rule already exists. Rule id is {existing['id']}.")
            group["security_group_rules"].append(rule)
            return 201, {"security_group_rule": rule}, {}
        raise neutron_error(405, "HTTPMethodNotAllowed", "only creating rules is emulated")

    # ---- Cinder v3 -----------------------------------------------------------------------------
    def _volume(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        cloud = self.cloud
        headers = {"OpenStack-API-Version": f"volume {VOLUME_MAX_MICROVERSION}"}
        if path in ("/volumes", "/volumes/detail") and method == "GET":
            found = [copy.deepcopy(v) for v in cloud.volumes.values()
                     if (not query.get("name") or v["name"] == query["name"])
                     and (not query.get("status") or v["status"] == query["status"])]
            if path == "/volumes":
                found = [{"id": v["id"], "name": v["name"], "links": []} for v in found]
            return 200, {"volumes": found}, headers
        if path == "/volumes" and method == "POST":
            spec = body.get("volume") or {}
            size = spec.get("size")
            if not isinstance(size, int) or size < 1:
                raise cinder_error(400, f"Invalid input received: size {size!r} must be an integer and > 0")
            if cloud.faults.get("volume_quota"):
                raise cinder_error(413, f"VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds "
                                        f"allowed gigabytes quota. Requested {size}G, quota is 100G and 0G has "
                                        "been consumed.")
            volume_id = str(uuid.uuid4())
            volume: dict[str, Any] = {"id": volume_id, "name": spec.get("name"), "description": spec.get("description"),
                      "size": size, "status": "creating", "attachments": [], "bootable": "false",
                      "volume_type": spec.get("volume_type") or "standard", "availability_zone": "nova",
                      "metadata": spec.get("metadata") or {}, "multiattach": False, "encrypted": False,
                      "created_at": now_iso(), "updated_at": None, "user_id": USER_ID,
                      "os-vol-tenant-attr:tenant_id": PROJECT_ID, "links": [], "snapshot_id": None,
                      "source_volid": None, "consistencygroup_id": None, "replication_status": None}
            cloud.volumes[volume_id] = volume
            cloud._timers[volume_id] = time.monotonic() + cloud.volume_seconds
            return 202, {"volume": copy.deepcopy(volume)}, headers
        match = re.fullmatch(r"/volumes/([^/]+)", path)
        if match:
            the_volume = cloud.volumes.get(match.group(1))
            if the_volume is None:
                raise cinder_error(404, f"Volume {match.group(1)} could not be found.")
            if method == "GET":
                return 200, {"volume": copy.deepcopy(the_volume)}, headers
            if method == "DELETE":
                if the_volume["attachments"]:
                    raise cinder_error(400, "Invalid volume: Volume status must be available or error or "
                                            "error_restoring or error_extending or error_managing and must not be "
                                            "migrating, attached, belong to a group, have snapshots or be "
                                            "disassociated from snapshots after volume transfer.")
                del cloud.volumes[the_volume["id"]]
                return 202, None, headers
        raise cinder_error(404, f"The resource could not be found: {method} {path}")
