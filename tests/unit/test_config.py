"""Settings: one model per section in ci.config, importable without the heavy backends, and every bad
value is one line naming the key as written in invoke.yaml, what is wrong and the fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ci.config.settings import RegistrySettings, load_settings
from ci.errors import ConfigError
from ci.resources import Resources
from tests.support.config import project_config
from tests.support.paths import PROJECT_DIR

PROJECT_CONFIG = project_config()

# Run in a fresh interpreter: a finder first on sys.meta_path refuses the backends' libraries, so the
# import fails if ci.config (or anything it imports) needs them, even lazily during load_settings.
BLOCKED_IMPORT = """
import json, sys
BLOCKED = {"python_on_whales", "fabric", "openstack", "paramiko", "keystoneauth1"}

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, Blocker())
import ci.config.settings
from pathlib import Path
raw = json.loads(sys.argv[1])
profiles = {name: ci.config.settings.load_settings(raw, Path(sys.argv[2]), profile=name).site.root
            for name in ("local", "lumi", "cpouta")}
loaded = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
print(json.dumps({"profiles": profiles, "loaded": loaded}))
"""


def test_import_ci_config_works_without_docker_fabric_and_openstack_libraries() -> None:
    result = subprocess.run([sys.executable, "-c", BLOCKED_IMPORT, json.dumps(PROJECT_CONFIG), str(PROJECT_DIR)],
                            capture_output=True, text=True, timeout=120, check=False, cwd=PROJECT_DIR)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["loaded"] == []
    assert answer["profiles"]["lumi"] == "/scratch/project_462000000/containers-ci"


def test_the_blocker_really_blocks() -> None:
    """The import test above cannot pass by accident: the same blocker stops a backend module."""
    script = (BLOCKED_IMPORT.split("import ci.config")[0]
              + "import ci.hosts\nfrom ci.docker import whales\nwhales.DockerClient\n")  # whales imports on first use
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            check=False, cwd=PROJECT_DIR)
    assert result.returncode != 0 and "python_on_whales is blocked" in result.stderr


def test_every_profile_of_invoke_yaml_is_valid() -> None:
    for profile in ("local", "lumi", "cpouta"):
        settings = load_settings(PROJECT_CONFIG, PROJECT_DIR, profile=profile)
        assert settings.profile == profile
    lumi = load_settings(PROJECT_CONFIG, PROJECT_DIR, profile="lumi")
    assert lumi.site.ssh is not None and lumi.site.ssh.host == "lumi.csc.fi"
    assert lumi.site.convert_job == Resources(time="01:00:00", extra=("--cpus-per-task=8", "--mem=32G"))
    assert lumi.site.ssh.known_hosts is None and not lumi.site.ssh.trust_on_first_use  # strict by default
    assert load_settings(PROJECT_CONFIG, PROJECT_DIR, profile="cpouta").vm.enabled


def test_new_site_keys_binds_arch_partition_lease_and_known_hosts(tmp_path: Path) -> None:
    settings = load_settings({"site": {
        "binds": ["/scratch", "/appl/local:/opt/local"], "partition": "small",
        "arch": {"arm64": {"partition": "ga"}}, "lock_lease": 120, "known_hosts": "~/kh",
        "trust_on_first_use": True, "ssh": {"host": "login.example.org"}, "root": "/site"}}, tmp_path)
    site = settings.site
    assert site.binds == ("/scratch", "/appl/local:/opt/local")
    assert site.partition_for("arm64") == "ga" and site.partition_for("amd64") == "small"
    assert site.lock_lease == 120.0
    assert site.ssh is not None and site.ssh.trust_on_first_use
    assert site.ssh.known_hosts_path == Path("~/kh").expanduser()
    defaults = load_settings({}, tmp_path).site
    assert defaults.binds == () and defaults.lock_lease == 600.0 and defaults.arch == {}


@pytest.mark.parametrize(("ci", "message"), [
    ({"site": {"registry": {"address": "x y"}}},
     "ci.site.registry.address: 'x y' is not a valid registry address; write host:port as the site's engine "
     "reaches the registry, e.g. 127.0.0.1:5000"),
    ({"site": {"registry": {"adress": "h:1"}}},
     "ci.site.registry.adress: unknown key 'adress'; remove it or fix the name (did you mean 'address'?)"),
    ({"site": {"binds": ["relative/path"]}}, "ci.site.binds[0]: 'relative/path' is not a valid bind; write an "
                                              "absolute path, or source:target"),
    ({"site": {"binds": ["/a,/b"]}}, "ci.site.binds[0]: '/a,/b' is not a valid bind"),
    ({"site": {"binds": ["/a:/b:ro"]}}, "ci.site.binds[0]: '/a:/b:ro' is not a valid bind"),
    ({"site": {"arch": {"arm64": {"partiton": "ga"}}}}, "ci.site.arch.arm64.partiton: unknown key 'partiton'"),
    ({"site": {"arch": {"arm64": {"partition": "ga\nrm -rf"}}}},
     "ci.site.arch.arm64.partition: 'ga\\nrm -rf' contains a control character"),
    ({"site": {"lock_lease": 1}}, "ci.site.lock_lease: 1 is below the minimum 30"),
    ({"site": {"partition": "small\n#SBATCH --output=/x"}}, "ci.site.partition: 'small\\n#SBATCH --output=/x' "
                                                             "contains a control character"),
    ({"site": {"ssh": {"host": "-oProxyCommand=x"}, "root": "/r"}}, "ci.site.ssh.host: '-oProxyCommand=x' is "
                                                                     "not a valid host name"),
    ({"site": {"ssh": {"host": "h", "port": 0}, "root": "/r"}}, "ci.site.ssh.port: 0 is below the minimum 1"),
    ({"site": {"ssh": {"host": "h"}}}, "ci.site.root: must be set for a remote site"),
    ({"site": {"convert_job": {"extra": ["--output=/etc/x"]}}},
     "ci.site.convert_job.extra[0]: --output is not allowed in slurm.extra"),
    ({"site": {"convert_on": "gpu"}}, "ci.site.convert_on: 'gpu' is not one of 'login' or 'compute'"),
    ({"site": {"compression": "brotli"}}, "ci.site.compression: 'brotli' is not a SquashFS compressor"),
    ({"site": {"job_prefix": "CCI PREFIX"}}, "ci.site.job_prefix: 'CCI PREFIX' is not a valid job prefix"),
    ({"limits": {"build": 0}}, "ci.limits.build: 0 is below the minimum 1; use a number >= 1"),
    ({"limits": {"bulid": 2}}, "ci.limits.bulid: unknown key 'bulid'; remove it or fix the name (did you mean "
                               "'build'?)"),
    ({"limts": {}}, "ci.limts: unknown key 'limts'; remove it or fix the name (did you mean 'limits'?)"),
    ({"docker": {"buildkit": "yes"}}, "ci.docker.buildkit: expected true or false, got a string"),
    ({"base_image": {"include": ["python3", "x;y"]}}, "ci.base_image.include[1]: 'x;y' is not a valid Debian "
                                                      "package name"),
    ({"openstack_image": {"push": "sometimes"}}, "ci.openstack_image.push: expected true or false"),
    ({"site": 3}, "ci.site: expected a mapping, got a number"),
])
def test_a_bad_setting_is_one_line_naming_the_key_and_the_fix(ci: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(ci, PROJECT_DIR)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)
    assert [problem.field for problem in caught.value.problems] == [message.split(":")[0]]


def test_all_problems_of_the_settings_come_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"site": {"registry": {"address": "x y", "local_port": -1}, "binds": ["a"]}}, PROJECT_DIR)
    fields = [problem.field for problem in caught.value.problems]
    assert fields == ["ci.site.registry.address", "ci.site.registry.local_port", "ci.site.binds[0]"]


def test_values_from_invoke_variables_arrive_as_text_and_still_read() -> None:
    """INVOKE_CI_* variables without a typed default come as strings: '' means unset, '2222' a port."""
    settings = load_settings({"registry_prefix": "", "state_dir": "", "arch": "amd64, arm64",
                              "site": {"account": "", "ssh": {"host": "h", "port": "2222"}, "root": "/r"}},
                             PROJECT_DIR)
    assert settings.registry_prefix == "" and settings.arches == ("amd64", "arm64")
    assert settings.site.account is None and settings.site.ssh is not None and settings.site.ssh.port == 2222


def test_settings_are_frozen_and_the_registry_port_is_read_from_the_address() -> None:
    settings = load_settings({}, PROJECT_DIR)
    with pytest.raises(ValueError):
        settings.site.root = "/elsewhere"  # type: ignore[misc]
    assert RegistrySettings(address="reg.example.org:5443").remote_port == 5443
    assert RegistrySettings(address="reg.example.org").remote_port == 443
    assert RegistrySettings(address="[::1]:5000").remote_port == 5000
