"""Small parts of the service that need no server: grammars, Spack constraints, the store, redaction, tokens."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pydantic import ValidationError

from ci.config.settings import load_settings
from ci.errors import ConfigError, DefinitionError
from ci.service.core import security
from ci.service.models import DefinitionRequest, Machine, WorkflowRequest
from ci.service.settings import service_settings
from ci.service.store import ImageStore
from ci.service.workflows import constrained, image_name, resolve
from tests.support.paths import PROJECT_DIR


def test_machine_constraints_become_spack_requirements() -> None:
    environment = {"spack": {"specs": ["hdf5"], "packages": {"all": {"require": "%gcc@12"}}}}
    machine = Machine(platform="linux/amd64", architecture="zen2", container_engine="singularity", mpi="mpich@4",
                      gpu="rocm@6.2")
    result = constrained(environment, machine)["spack"]["packages"]
    assert result["all"]["require"] == ["%gcc@12", "target=zen2"]
    assert result["all"]["variants"] == ["+rocm"]
    assert result["mpi"]["require"] == ["mpich@4"] and result["hip"]["require"] == ["@6.2"]
    assert environment["spack"]["packages"]["all"]["require"] == "%gcc@12", "the registry's file is not changed"
    assert image_name("Minimal_Workflow", "word count") == "minimal_workflow-word-count"


def test_workflow_steps_resolve_inside_the_registry_only(tmp_path: Path) -> None:
    (tmp_path / "wf" / "step").mkdir(parents=True)
    (tmp_path / "wf" / "step" / "spack.yaml").write_text("spack:\n  specs: [zlib]\n")
    (tmp_path / "wf" / "link").symlink_to("/etc")
    machine = {"platform": "linux/arm64", "architecture": "a64fx", "container_engine": "apptainer"}
    step = resolve(tmp_path, WorkflowRequest.model_validate({"machine": machine, "workflow": "wf", "step_id": "step"}))
    assert step.arch == "arm64" and step.environment["spack"]["packages"]["all"]["require"] == ["target=a64fx"]
    for step_id, field in (("link", "step_id"), ("none", "step_id")):
        with pytest.raises(DefinitionError) as error:
            resolve(tmp_path, WorkflowRequest.model_validate({"machine": machine, "workflow": "wf",
                                                              "step_id": step_id}))
        assert error.value.problems[0].field == field
    with pytest.raises(DefinitionError):
        resolve(None, WorkflowRequest.model_validate({"machine": machine, "workflow": "wf", "step_id": "step"}))


@pytest.mark.parametrize("body", [{"definition": "a/b"}, {"definition": ".hidden"}, {"definition": "x", "arch": "AMD"},
                                  {"definition": "x", "force": 1}, {"definition": "x" * 200}, {"definition": "é"}])
def test_definition_requests_refuse_anything_outside_the_grammar(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DefinitionRequest.model_validate(body)


def test_the_store_names_files_by_content_and_never_leaves_its_folder(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    source = tmp_path / "image.part"
    source.write_bytes(b"squashfs bytes")
    stored = store.put(source, "base", "12", "sqfs")
    assert stored.filename.startswith("base-12-") and stored.filename.endswith(".sqfs") and not source.exists()
    assert store.path(stored.filename) == (tmp_path / "store" / stored.filename).resolve()
    again = tmp_path / "again.part"
    again.write_bytes(b"squashfs bytes")
    assert store.put(again, "base", "12", "sqfs").filename == stored.filename
    (tmp_path / "secret-0123456789abcdef01234567.sqfs").write_text("outside")
    (tmp_path / "store" / "link-0123456789abcdef01234567.sqfs").symlink_to(
        tmp_path / "secret-0123456789abcdef01234567.sqfs")
    for name in ("../secret-0123456789abcdef01234567.sqfs", "link-0123456789abcdef01234567.sqfs", "..", "",
                 stored.filename + "/.."):
        assert store.path(name) is None, name


def test_redaction_of_secret_values_tokens_urls_and_headers() -> None:
    token = security.new_token()
    redact = security.Redactor.from_environment({"CI_REGISTRY_TOKEN": "s3cr3t-value", "HOME": "/root",
                                                 "CI_SERVICE_DATABASE_URL": "postgresql://u:pa55word@db/x"})
    text = (f"login with s3cr3t-value\nAuthorization: Bearer {token}\npostgresql://u:pa55word@db/x\n"
            f"Authorization: Basic dXNlcjp0b2tlbg==\nhome is /root")
    cleaned = redact(text)
    for secret in ("s3cr3t-value", token, "pa55word", "dXNlcjp0b2tlbg=="):
        assert secret not in cleaned
    assert "home is /root" in cleaned


def test_credentials_from_bearer_and_basic() -> None:
    token = security.new_token()
    assert security.credentials_from(f"Bearer {token}") == (None, token)
    encoded = base64.b64encode(f"alice:{token}".encode()).decode()
    assert security.credentials_from(f"Basic {encoded}") == ("alice", token)
    for header in (None, "", "Basic", "Basic ###", "Token x", "Bearer ", "Basic " + base64.b64encode(b"x").decode()):
        assert security.credentials_from(header) is None
    assert security.TOKEN_PATTERN.match(token) and security.token_hash(token) != token


def test_service_settings_are_checked_and_defaulted(tmp_path: Path) -> None:
    base = {"state_dir": str(tmp_path / "state"), "site": {"root": str(tmp_path / "site")}}
    settings = service_settings(load_settings({**base, "service": {"pool": 3}}, PROJECT_DIR, profile="local"))
    assert settings.pool == 3 and settings.database_url == f"sqlite:///{tmp_path / 'state' / 'service' / 'service.db'}"
    assert settings.slot_root(1) == str(tmp_path / "site" / "service" / "slot-1")
    for bad in ({"pool": -1}, {"pool": "2"}, {"database": "mysql://x"}, {"colour": "red"}, {"host": "a b"}):
        with pytest.raises(ConfigError) as error:
            service_settings(load_settings({**base, "service": bad}, PROJECT_DIR, profile="local"))
        assert "ci.service." in str(error.value)
