"""The build-hosts pool's pure parts: settings (every hostile value one line naming the key), references in
the build registry, what a build needs on its host, BuildKit's cache lines, the classic cache options,
and the names of several build VMs. Builds on real engines: tests/integration/test_build_hosts.py."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from ci.buildhosts import BuildPoolSettings, build_hosts, cache_reference, cached_steps, registry_reference
from ci.config.settings import load_settings
from ci.docker.engine import BuildRequest, classic_cache_options
from ci.errors import ConfigError
from ci.openstack import vm
from ci.pipeline.steps.build import needed_images


def settings(tmp_path: Path, **section: Any) -> Any:
    config = {"profile": "t", "profiles": {"t": {}}, "state_dir": str(tmp_path / "state"), **section}
    return load_settings(config, tmp_path, profile="t")


def test_without_build_hosts_the_one_engine_of_ci_docker_is_the_pool(tmp_path: Path) -> None:
    pool = build_hosts(settings(tmp_path, docker={"host": "ssh://me@vm"}, limits={"build": 3}))
    assert not pool.configured and pool.capacity == 3
    [host] = pool.hosts
    assert (host.name, host.address, host.platforms) == ("default", "ssh://me@vm", ())
    assert build_hosts(settings(tmp_path), jobs=5).capacity == 5
    assert pool.pool.registry is None


def test_a_pool_of_hosts_with_a_registry(tmp_path: Path) -> None:
    pool = build_hosts(settings(tmp_path, build_hosts=[
        {"name": "a", "address": "unix:///run/docker.sock", "builds": 2},
        {"name": "b", "address": "ssh://ubuntu@10.0.0.5:2222", "builds": 3, "platforms": ["linux/arm64"]},
        {"name": "c", "address": "tcp://[fd00::5]:2376"}],
        build_pool={"registry": "10.0.0.4:5000", "placement": "away"}))
    assert pool.configured and pool.capacity == 7
    assert [host.name for host in pool.hosts] == ["a", "b", "c"]
    assert pool.hosts[1].platforms == ("linux/arm64",)
    assert pool.pool.placement == "away" and pool.pool.scheme == "https"
    assert BuildPoolSettings(registry="127.0.0.1:5000").scheme == "http"
    assert BuildPoolSettings(registry="10.0.0.4:5000", insecure=True).scheme == "http"


HOSTILE: list[tuple[dict[str, Any], str]] = [
    ({"build_hosts": "unix:///run/docker.sock"}, "ci.build_hosts"),
    ({"build_hosts": [{"name": "a", "address": "unix:///run/../etc/shadow"}]}, "ci.build_hosts[0].address"),
    ({"build_hosts": [{"name": "a", "address": "ssh://-oProxyCommand=touch /tmp/x"}]}, "ci.build_hosts[0].address"),
    ({"build_hosts": [{"name": "a", "address": "ssh://host\nInjected"}]}, "ci.build_hosts[0].address"),
    ({"build_hosts": [{"name": "a", "address": "tcp://host"}]}, "ci.build_hosts[0].address"),
    ({"build_hosts": [{"name": "a", "address": "/run/docker.sock"}]}, "ci.build_hosts[0].address"),
    ({"build_hosts": [{"name": "-a"}]}, "ci.build_hosts[0].name"),
    ({"build_hosts": [{"name": "a", "builds": 0}]}, "ci.build_hosts[0].builds"),
    ({"build_hosts": [{"name": "a", "builds": "2"}]}, "ci.build_hosts[0].builds"),
    ({"build_hosts": [{"name": "a", "builds": 10**9}]}, "ci.build_hosts[0].builds"),
    ({"build_hosts": [{"name": "a", "platforms": ["amd64"]}]}, "ci.build_hosts[0].platforms"),
    ({"build_hosts": [{"name": "a", "colour": "blue"}]}, "ci.build_hosts[0].colour"),
    ({"build_hosts": [{"name": "a", "address": "unix:///a.sock"}, {"name": "a", "address": "unix:///b.sock"}],
      "build_pool": {"registry": "r:5000"}}, "ci.build_hosts"),
    ({"build_hosts": [{"name": "a", "address": "unix:///a.sock"}, {"name": "b", "address": "unix:///a.sock"}],
      "build_pool": {"registry": "r:5000"}}, "ci.build_hosts"),
    ({"build_hosts": [{"name": "a", "address": "unix:///a.sock"}, {"name": "b", "address": "unix:///b.sock"}]},
     "ci.build_pool.registry"),
    ({"build_pool": {"registry": "http://r:5000"}}, "ci.build_pool.registry"),
    ({"build_pool": {"repository": "../Escape"}}, "ci.build_pool.repository"),
    ({"build_pool": {"placement": "random"}}, "ci.build_pool.placement"),
    ({"build_pool": {"cache": "yes"}}, "ci.build_pool.cache"),
]


@pytest.mark.parametrize(("section", "field"), HOSTILE)
def test_each_bad_value_is_one_line_naming_the_key(tmp_path: Path, section: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_hosts(settings(tmp_path, **section))
    message = str(caught.value)
    assert message.startswith(field), message
    assert "\n" not in message and "Traceback" not in message
    assert "\x1b" not in message


def test_references_in_the_build_registry_hold_only_what_a_reference_may() -> None:
    pool = BuildPoolSettings(registry="127.0.0.1:5000", repository="containers-ci/build")
    built = "127.0.0.1:5000/containers-ci/build/"
    assert registry_reference(pool, "base:1.0-0123456789ab") == built + "base:1.0-0123456789ab"
    weird = "Registry.Example.org:443/Proj/My..Image:2.6-abc"
    assert registry_reference(pool, weird) == built + "registry.example.org-443/proj/my-image:2.6-abc"
    assert registry_reference(pool, "../../etc/passwd:x") == "127.0.0.1:5000/containers-ci/build/etc/passwd:x"
    assert cache_reference(pool, "pfx/mpi:4.1-abc", "linux/arm64") == \
        "127.0.0.1:5000/containers-ci/build/pfx/mpi:cache-linux-arm64"
    assert registry_reference(pool, "name") == "127.0.0.1:5000/containers-ci/build/name:latest"


def test_a_build_needs_its_bases_and_copy_from_images_but_not_its_stages_or_scratch() -> None:
    dockerfile = ("ARG BASE=containers-ci/debian:bookworm\nFROM --platform=linux/amd64 $BASE AS fetch\n"
                  "FROM pfx/mpi:4.1-abc\nCOPY --from=fetch /a /a\nCOPY --from=site-env /opt/cray /opt/cray\n"
                  "COPY --from=0 /b /b\nFROM scratch\nCOPY --from=pfx/mpi:4.1-abc /c /c\n")
    assert needed_images(dockerfile, {}) == ["containers-ci/debian:bookworm", "pfx/mpi:4.1-abc", "site-env"]
    assert needed_images(dockerfile, {"BASE": "other:1"})[0] == "other:1"


def test_cached_steps_counts_dockerfile_steps_not_the_base() -> None:
    output = ("#4 [1/3] FROM docker.io/containers-ci/debian:bookworm\n#4 CACHED\n\n"
              "#5 [2/3] RUN echo one\n#5 CACHED\n\n#6 [3/3] COPY note.txt /note\n#6 CACHED\n"
              "#7 [stage-1 2/2] RUN make\n#7 DONE 3.0s\n#8 [internal] load metadata\n")
    assert cached_steps(output) == 2
    assert cached_steps("") == 0


def test_the_classic_client_takes_the_registry_cache_inline(tmp_path: Path) -> None:
    request = BuildRequest(name="a", tag="a:1", context=tmp_path, dockerfile=tmp_path / "Dockerfile", build_args={},
                           labels={}, platform="linux/amd64",
                           cache_from=("type=registry,ref=r:5000/b/a:cache-linux-amd64", "type=local,src=/x"),
                           cache_to=("type=registry,ref=r:5000/b/a:cache-linux-amd64,mode=max",))
    log = io.StringIO()
    assert classic_cache_options(request, log) == ["--cache-from", "r:5000/b/a:cache-linux-amd64",
                                                   "--build-arg", "BUILDKIT_INLINE_CACHE=1"]
    assert "inline (mode=min)" in log.getvalue()
    plain = BuildRequest(name="a", tag="a:1", context=tmp_path, dockerfile=tmp_path / "Dockerfile", build_args={},
                         labels={}, platform="linux/amd64")
    assert classic_cache_options(plain, io.StringIO()) == []


def test_several_build_vms_have_indexed_names_and_volumes(tmp_path: Path) -> None:
    base = settings(tmp_path, vm={"name": "ci-build", "volume": "ci-docker", "count": 3})
    configs = vm.fleet(vm.config_from(base))
    assert [(c.name, c.volume) for c in configs] == [("ci-build-1", "ci-docker-1"), ("ci-build-2", "ci-docker-2"),
                                                     ("ci-build-3", "ci-docker-3")]
    assert vm.fleet(vm.config_from(settings(tmp_path, vm={"name": "ci-build"})))[0].name == "ci-build"
    assert vm.names(base, count=2) == ["ci-build-1", "ci-build-2"]
    with pytest.raises(ConfigError, match=r"ci\.vm\.floating_ip"):
        vm.fleet(vm.config_from(settings(tmp_path, vm={"count": 2, "floating_ip": "192.0.2.7"})))
    with pytest.raises(ConfigError, match="longer than 64"):
        vm.fleet(vm.config_from(settings(tmp_path, vm={"count": 10, "name": "x" * 63})))
    with pytest.raises(ConfigError, match=r"ci\.vm\.count"):
        vm.config_from(settings(tmp_path, vm={"count": 0}))


def test_several_build_vms_need_a_build_registry_before_any_server_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ci\.build_pool\.registry"), \
            vm.build_fleet(settings(tmp_path, vm={"count": 2, "enabled": True})):
        pytest.fail("the fleet started without a build registry")
