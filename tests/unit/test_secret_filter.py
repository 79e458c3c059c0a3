"""The commands of a site never inherit a secret: by explicit name and by the shape of the name."""

from __future__ import annotations

import pytest

from ci.hosts import SECRET_VARIABLES, LocalHost, is_secret_name, without_secrets


@pytest.mark.parametrize("name", [
    "CI_REGISTRY_TOKEN", "CI_SSH_KEY_PASSPHRASE", "OS_PASSWORD", "OS_APPLICATION_CREDENTIAL_SECRET", "GITHUB_TOKEN",
    "SSH_AUTH_SOCK", "SPACK_SIGNING_KEY", "MY_DEPLOY_KEY", "API_KEY", "AWS_ACCESS_KEY_ID", "GPG_PRIVATE_KEY",
    "ACTIONS_RUNNER_INPUT_JITCONFIG", "DOCKER_AUTH_CONFIG", "db_password", "HTTP_AUTH",
    "SESSION_COOKIE", "KEY", "ACTIONS_ID_TOKEN_REQUEST_URL", "NETRC",
])
def test_secret_variables_are_recognised(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["HOME", "PATH", "USER", "LANG", "SLURM_JOB_ID", "KEYBOARD", "MONKEY_PATCH",
                                  "AUTHOR", "DOCKER_HOST", "DOCKER_CONFIG", "XDG_STATE_HOME", "CI_PROFILE", "TZ"])
def test_ordinary_variables_pass(name: str) -> None:
    assert not is_secret_name(name)


def test_every_listed_name_is_filtered_and_a_site_command_does_not_see_them(monkeypatch: pytest.MonkeyPatch) -> None:
    canaries = {name: f"canary-{index}" for index, name in enumerate(sorted(SECRET_VARIABLES))}
    canaries["MY_SERVICE_KEY"] = "canary-pattern"
    for name, value in canaries.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ORDINARY", "kept")
    assert not set(without_secrets(canaries)) and without_secrets({"ORDINARY": "kept"}) == {"ORDINARY": "kept"}
    seen = LocalHost().run(["env"]).stdout
    assert "ORDINARY=kept" in seen
    assert not [value for value in canaries.values() if value in seen]
