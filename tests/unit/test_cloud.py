"""ci/openstack/cloud.py against the emulated cloud: openstacksdk's real HTTP stack, no mocks of our code.

Every test talks HTTP to tests/cloud_emulator on 127.0.0.1: Keystone v3 token exchange and
catalog, version discovery, Nova/Neutron/Cinder/Glance calls and their real error bodies.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci.config.settings import vm_config
from ci.errors import CloudError, ConfigError
from ci.openstack import vm
from ci.openstack.cloud import BuildVMCloud, VMInfo, connect, open_cloud
from tests.cloud_emulator import Cloud, Emulator
from tests.cloud_emulator.testing import vm_settings
from tests.support.paths import PROJECT_DIR


@pytest.fixture(autouse=True)
def _no_openstack_environment(no_openstack_environment: None) -> None:
    """Tests see only the configuration they write."""


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(Cloud(build_seconds=0.1, delete_seconds=0.1, volume_seconds=0.05)) as emu:
        yield emu


def cloud_for(emulator: Emulator, tmp_path: Path, **vm_keys: object) -> BuildVMCloud:
    return open_cloud(vm.config_from(vm_settings(emulator, tmp_path, vm=vm_keys)))


def posts(emulator: Emulator, pattern: str) -> int:
    return len(emulator.calls("POST", pattern))


# ---- configuration -------------------------------------------------------------------------------

def test_defaults_come_from_the_environment_when_the_config_leaves_them_open(tmp_path: Path) -> None:
    env = {"OS_MY_IMAGE": "Ubuntu-24.04", "OS_MY_FLAVOUR": "io.700GB", "OS_CLOUD": "cpouta"}
    config = vm_config({}, tmp_path, env=env)
    assert (config.image, config.flavor, config.cloud) == ("Ubuntu-24.04", "io.700GB", "cpouta")
    assert vm_config({}, tmp_path, env={}).flavor == "hpc.5.64core"
    assert vm_config({}, tmp_path, env={}).image is None
    assert vm_config({"image": "AlmaLinux-9"}, tmp_path, env=env).image == "AlmaLinux-9"
    assert vm_config({}, tmp_path, env=env, flavor="standard.small").flavor == "standard.small"


def test_paths_resolve_against_the_project_and_the_public_key_follows_the_private_one(tmp_path: Path) -> None:
    config = vm_config({"ssh_key": "secrets/k"}, tmp_path, env={})
    assert config.ssh_key == tmp_path / "secrets" / "k"
    assert config.public_key == tmp_path / "secrets" / "k.pub"


def test_secrets_clouds_yaml_is_used_when_present(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "clouds.yaml").write_text("clouds: {}\n")
    assert vm_config({}, tmp_path, env={}).clouds_file == tmp_path / "secrets" / "clouds.yaml"


@pytest.mark.parametrize(("section", "message"), [
    ({"colour": "blue"}, "ci.vm.colour: unknown key 'colour'; remove it or fix the name (did you mean 'cloud'?)"),
    ({"timeouts": {"boot": 3}}, "ci.vm.timeouts.boot: unknown key 'boot'; remove it or fix the name (allowed keys: "
                                "active, ssh, volume, delete, prepare)"),
    ({"timeouts": {"ssh": -1}}, "ci.vm.timeouts.ssh: -1 is below the minimum 0.01; use a number >= 0.01"),
    ({"volume_size": "big"}, "ci.vm.volume_size: expected a whole number, got a string; write a whole number"),
    ({"enabled": "yes"}, "ci.vm.enabled: expected true or false, got a string; write true or false"),
    ({"prepare_args": "--fstab none"}, "ci.vm.prepare_args: expected a list, got a string; write a YAML list"),
    ({"ssh_user": "ubuntu\nProxyCommand x"}, "ci.vm.ssh_user: 'ubuntu\\nProxyCommand x' contains a control character"),
])
def test_bad_configuration_is_one_sentence_naming_the_key(tmp_path: Path, section: dict[str, object],
                                                           message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        vm_config(section, tmp_path, env={})
    assert str(caught.value).startswith(message)


def test_invoke_yaml_defaults_are_valid_and_cpouta_enables_the_vm() -> None:
    from ci.config.settings import load_settings
    from tests.support.config import project_config

    raw = project_config()
    local = vm.config_from(load_settings(raw, PROJECT_DIR, profile="local"))
    cpouta = vm.config_from(load_settings(raw, PROJECT_DIR, profile="cpouta"))
    assert not local.enabled and cpouta.enabled
    assert cpouta.floating_ip_pool == "public" and cpouta.volume == "containers-ci-docker"


# ---- connecting ----------------------------------------------------------------------------------

def test_connects_with_an_application_credential_from_clouds_yaml(emulator: Emulator, tmp_path: Path) -> None:
    cloud = cloud_for(emulator, tmp_path)
    assert cloud.find_server() is None
    token_requests = emulator.calls("POST", r"/auth/tokens$")
    assert len(token_requests) == 1
    assert '"application_credential"' in token_requests[0].body


def test_connects_with_os_variables_and_a_password(emulator: Emulator, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in emulator.environment(auth="password").items():
        monkeypatch.setenv(name, value)
    config = vm_config({"image": "Ubuntu-22.04"}, tmp_path)
    connection = connect(config)
    assert connection.compute.find_flavor("hpc.5.64core", ignore_missing=False).vcpus == 64
    assert '"password"' in emulator.calls("POST", r"/auth/tokens$")[0].body


def test_connects_with_os_variables_and_an_application_credential(emulator: Emulator, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in emulator.environment().items():
        monkeypatch.setenv(name, value)
    info = BuildVMCloud(vm_config({}, tmp_path), connect(vm_config({}, tmp_path))).status()
    assert info.status == "absent"


def test_no_credentials_at_all_says_where_they_come_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no OpenStack credentials.*secrets.example/README.md"):
        connect(vm_config({}, tmp_path, env={}), env={})


def test_wrong_secret_is_a_401_with_the_fix(emulator: Emulator, tmp_path: Path) -> None:
    config = vm.config_from(vm_settings(emulator, tmp_path))
    emulator.cloud.application_credential_secret = "rotated"  # the secret in clouds.yaml is now stale
    with pytest.raises(CloudError, match=r"refused the credentials \(HTTP 401\).*application credential"):
        open_cloud(config)


def test_unknown_cloud_name_is_a_configuration_error(emulator: Emulator, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="OpenStack configuration"):
        cloud_for(emulator, tmp_path, cloud="nowhere")


def test_unreachable_keystone_names_the_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Emulator() as gone:
        environment = gone.environment()
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(CloudError, match=r"cannot reach OpenStack at http://127\.0\.0\.1"):
        connect(vm_config({}, tmp_path))


# ---- start: find or create -----------------------------------------------------------------------

def test_start_creates_everything_then_finds_it_again(emulator: Emulator, tmp_path: Path) -> None:
    cloud = cloud_for(emulator, tmp_path)
    info = cloud.start(VMInfo(name=cloud.config.name))
    assert info.created and info.status == "ACTIVE"
    assert info.address and info.address.startswith("192.0.2.")
    assert info.volume_device == "/dev/vdb" and info.volume_status == "in-use"
    [server] = emulator.servers()
    assert server["metadata"]["managed-by"] == "containers-ci"
    assert server["key_name"] == "containers-ci" and server["security_groups"] == [{"name": "containers-ci-ssh"}]
    state = {"keypairs": posts(emulator, "/os-keypairs$"), "servers": posts(emulator, "/servers$"),
             "groups": posts(emulator, "/security-groups$"), "rules": posts(emulator, "/security-group-rules$"),
             "volumes": posts(emulator, "/volumes$"), "ips": posts(emulator, "/floatingips$"),
             "attachments": posts(emulator, "/os-volume_attachments$")}
    assert state == {"keypairs": 1, "servers": 1, "groups": 1, "rules": 1, "volumes": 1, "ips": 1, "attachments": 1}

    again = cloud_for(emulator, tmp_path).start(VMInfo(name=cloud.config.name))
    assert not again.created and again.address == info.address and again.volume_id == info.volume_id
    assert {k: posts(emulator, p) for k, p in [("servers", "/servers$"), ("ips", "/floatingips$"),
                                                 ("volumes", "/volumes$"), ("keypairs", "/os-keypairs$"),
                                                 ("attachments", "/os-volume_attachments$")]} == \
        {"servers": 1, "ips": 1, "volumes": 1, "keypairs": 1, "attachments": 1}


def test_ssh_rule_is_added_to_an_existing_group_only_once(emulator: Emulator, tmp_path: Path) -> None:
    cloud = cloud_for(emulator, tmp_path, security_group="default")
    assert "rule added" in cloud.ensure_security_group()
    assert "present, allows SSH" in cloud.ensure_security_group()
    assert posts(emulator, "/security-group-rules$") == 1


def test_configured_network_is_passed_to_nova(emulator: Emulator, tmp_path: Path) -> None:
    cloud = cloud_for(emulator, tmp_path, network="project_2001234")
    cloud.start(VMInfo(name=cloud.config.name))
    body = emulator.calls("POST", "/servers$")[0].body
    network_id = next(n["id"] for n in emulator.cloud.networks.values() if n["name"] == "project_2001234")
    assert network_id in body


def test_a_preallocated_floating_ip_is_used_and_kept(emulator: Emulator, tmp_path: Path) -> None:
    public = next(n for n in emulator.cloud.networks.values() if n["name"] == "public")
    reserved = emulator.cloud.next_floating_address()
    emulator.cloud.floating_ips["reserved"] = {
        "id": "reserved", "floating_ip_address": reserved, "floating_network_id": public["id"], "port_id": None,
        "fixed_ip_address": None, "status": "DOWN", "description": "our DNS name points here",
        "router_id": None, "tenant_id": "p", "project_id": "p", "tags": []}
    cloud = cloud_for(emulator, tmp_path, floating_ip=reserved)
    assert cloud.start(VMInfo(name=cloud.config.name)).address == reserved
    assert posts(emulator, "/floatingips$") == 0
    lines = cloud.teardown()
    assert f"floating IP {reserved}: kept (ci.vm.floating_ip)" in lines
    assert [ip["id"] for ip in emulator.floating_ips()] == ["reserved"]


def test_a_floating_ip_left_by_an_interrupted_teardown_is_reused(emulator: Emulator, tmp_path: Path) -> None:
    cloud = cloud_for(emulator, tmp_path)
    first = cloud.start(VMInfo(name=cloud.config.name))
    server_id = first.server_id
    assert server_id is not None
    cloud.conn.compute.delete_server(server_id)  # as if teardown died before releasing the address
    cloud.conn.compute.wait_for_delete(cloud.conn.compute.get_server(server_id), interval=0.05, wait=5)
    second = cloud.start(VMInfo(name=cloud.config.name))
    assert second.address == first.address and posts(emulator, "/floatingips$") == 1


# ---- errors a person can act on --------------------------------------------------------------------

@pytest.mark.parametrize(("keys", "message"), [
    ({"image": "Windows-95"}, r"unknown image 'Windows-95'.*openstack image list.*OS_MY_IMAGE"),
    ({"flavor": "huge.1024core"}, r"unknown flavor 'huge.1024core'.*OS_MY_FLAVOUR"),
    ({"network": "elsewhere"}, r"unknown network 'elsewhere'"),
    ({"floating_ip_pool": "nopool"}, r"unknown floating IP pool 'nopool'"),
])
def test_unknown_names_are_reported_with_the_listing_command(emulator: Emulator, tmp_path: Path,
                                                             keys: dict[str, str], message: str) -> None:
    cloud = cloud_for(emulator, tmp_path, **keys)
    with pytest.raises(CloudError, match=message):
        cloud.start(VMInfo(name=cloud.config.name))


def test_no_image_configured_names_both_places(emulator: Emulator, tmp_path: Path) -> None:
    cloud = cloud_for(emulator, tmp_path, image="")
    with pytest.raises(ConfigError, match=r"set ci.vm.image.*OS_MY_IMAGE"):
        cloud.start(VMInfo(name=cloud.config.name))


@pytest.mark.parametrize(("fault", "message"), [
    ("server_quota", r"creating server containers-ci-build: quota exceeded: Quota exceeded for cores"),
    ("floating_ip_quota", r"allocating a floating IP from public: quota exceeded.*floatingip"),
    ("volume_quota", r"creating volume containers-ci-docker: quota exceeded: VolumeSizeExceedsAvailableQuota"),
])
def test_quota_exceeded_says_so_and_what_to_free(emulator: Emulator, tmp_path: Path, fault: str,
                                                 message: str) -> None:
    emulator.faults[fault] = True
    cloud = cloud_for(emulator, tmp_path)
    with pytest.raises(CloudError, match=message) as caught:
        cloud.start(VMInfo(name=cloud.config.name))
    assert "openstack server list" in str(caught.value)


def test_a_server_going_to_error_reports_nova_s_fault(emulator: Emulator, tmp_path: Path) -> None:
    emulator.faults["server_error"] = True
    cloud = cloud_for(emulator, tmp_path)
    info = VMInfo(name=cloud.config.name)
    with pytest.raises(CloudError, match=r"went to ERROR: No valid host was found"):
        cloud.start(info)
    assert info.server_id  # known, so teardown can delete it
    with pytest.raises(CloudError, match=r"is in ERROR: No valid host.*inv vm.teardown"):
        cloud_for(emulator, tmp_path).start(VMInfo(name=cloud.config.name))


def test_a_server_that_never_becomes_active_times_out(emulator: Emulator, tmp_path: Path) -> None:
    emulator.faults["server_never_active"] = True
    cloud = cloud_for(emulator, tmp_path, timeouts={"active": 0.5})
    with pytest.raises(CloudError, match=r"not ACTIVE within 0s \(status BUILD\).*ci.vm.timeouts.active"):
        cloud.start(VMInfo(name=cloud.config.name))


def test_a_key_pair_with_another_key_is_not_overwritten(emulator: Emulator, tmp_path: Path) -> None:
    cloud = cloud_for(emulator, tmp_path)
    cloud.conn.compute.create_keypair(name="containers-ci", public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther x")
    with pytest.raises(CloudError, match=r"holds another public key.*openstack keypair delete containers-ci"):
        cloud.start(VMInfo(name=cloud.config.name))


def test_a_missing_public_key_file_says_how_to_make_one(emulator: Emulator, tmp_path: Path) -> None:
    cloud = cloud_for(emulator, tmp_path, public_key=str(tmp_path / "nope.pub"))
    with pytest.raises(ConfigError, match="ssh-keygen -t ed25519"):
        cloud.start(VMInfo(name=cloud.config.name))


def test_servers_we_did_not_create_are_never_touched(emulator: Emulator, tmp_path: Path) -> None:
    cloud = cloud_for(emulator, tmp_path)
    image = cloud.resolve_image()
    flavor = cloud.resolve_flavor()
    cloud.conn.compute.create_server(name="containers-ci-build", image_id=image.id, flavor_id=flavor.id)
    for action in (lambda: cloud.start(VMInfo(name="containers-ci-build")), cloud.teardown):
        with pytest.raises(CloudError, match="was not created by containers-ci"):
            action()
    assert len(emulator.servers()) == 1 and not emulator.calls("DELETE", "/servers/")


def test_a_volume_attached_to_another_server_is_not_stolen(emulator: Emulator, tmp_path: Path) -> None:
    other = cloud_for(emulator, tmp_path, name="someone-else")
    other.start(VMInfo(name="someone-else"))
    cloud = cloud_for(emulator, tmp_path)
    with pytest.raises(CloudError, match=r"attached to server .*openstack server remove volume"):
        cloud.start(VMInfo(name=cloud.config.name))


def test_a_service_outage_is_reported_with_the_status(emulator: Emulator, tmp_path: Path) -> None:
    cloud = cloud_for(emulator, tmp_path)
    emulator.faults["unavailable"] = True
    with pytest.raises(CloudError, match=r"looking up server 'containers-ci-build'.*503"):
        cloud.start(VMInfo(name=cloud.config.name))


# ---- teardown and status -------------------------------------------------------------------------

def test_teardown_deletes_the_server_waits_and_releases_the_ip_but_keeps_the_volume(emulator: Emulator,
                                                                                   tmp_path: Path) -> None:
    cloud = cloud_for(emulator, tmp_path)
    info = cloud.start(VMInfo(name=cloud.config.name))
    lines = cloud.teardown()
    assert lines == ["server containers-ci-build: deleted", f"floating IP {info.address}: released",
                     "volume containers-ci-docker: kept (available)"]
    assert emulator.servers() == [] and emulator.floating_ips() == []
    [volume] = emulator.volumes()
    assert volume["status"] == "available" and volume["attachments"] == []
    delete = emulator.calls("DELETE", "/servers/")
    later_gets = [r for r in emulator.requests[emulator.requests.index(delete[0]):]
                  if r.method == "GET" and r.path.endswith(info.server_id or "?")]
    assert later_gets[-1].status == 404  # waited until Nova no longer knew the server


def test_teardown_with_nothing_there_is_a_quiet_success(emulator: Emulator, tmp_path: Path) -> None:
    cloud = cloud_for(emulator, tmp_path)
    assert cloud.teardown() == ["server containers-ci-build: none", "volume containers-ci-docker: none"]
    assert not emulator.calls("DELETE")


def test_teardown_times_out_when_the_server_does_not_go_away(emulator: Emulator, tmp_path: Path) -> None:
    cloud = cloud_for(emulator, tmp_path, timeouts={"delete": 0.3})
    cloud.start(VMInfo(name=cloud.config.name))
    emulator.faults["delete_stuck"] = True
    with pytest.raises(CloudError, match=r"was not gone 0s after the delete request.*inv vm.teardown"):
        cloud.teardown()


def test_status_reports_what_the_cloud_knows(emulator: Emulator, tmp_path: Path) -> None:
    cloud = cloud_for(emulator, tmp_path)
    assert cloud.status().as_dict()["status"] == "absent"
    started = cloud.start(VMInfo(name=cloud.config.name))
    status = cloud.status()
    assert (status.status, status.address, status.volume_device) == ("ACTIVE", started.address, "/dev/vdb")


# ---- the SDK's next major version ----------------------------------------------------------------

def test_the_volume_is_attached_by_the_form_the_next_sdk_keeps(emulator: Emulator, tmp_path: Path) -> None:
    """`create_volume_attachment(server, volume=...)`: the same request as the `volume_id=` form SDK 5 drops."""
    cloud = cloud_for(emulator, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = cloud.start(VMInfo(name=cloud.config.name))
    [attach] = emulator.calls("POST", "/os-volume_attachments$")
    assert json.loads(attach.body) == {"volumeAttachment": {"volumeId": info.volume_id}}
    assert attach.path == f"/compute/v2.1/servers/{info.server_id}/os-volume_attachments"
    assert [str(w.message) for w in caught if "volume_id" in str(w.message)] == []


def test_a_missing_resource_is_none_without_the_deprecated_ignore_missing(emulator: Emulator,
                                                                         tmp_path: Path) -> None:
    """Our lookups pass ignore_missing=False and catch ResourceNotFound; SDK 6 makes that the only way."""
    cloud = cloud_for(emulator, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert (cloud.find_server(), cloud.find_volume()) == (None, None)
    assert emulator.calls("GET", "/servers") and emulator.calls("GET", "/volumes")
    assert [str(w.message) for w in caught if "ignore_missing" in str(w.message)] == []
