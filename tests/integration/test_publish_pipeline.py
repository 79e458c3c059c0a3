"""The publish step in the real chain: `inv build-all` with three targets configured builds, tests and
promotes two images, publishes the one that passed everywhere, never the one that failed, and a
second `inv build-all` publishes nothing (the image is up to date and already at every target).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from ci.docker.oci import OCIClient
from tests.support.publish_helpers import (
    REGISTRY,
    bucket_name,
    make_signing_key,
    s3_client,
    s3_endpoint,
    signing_environment,
)
from tests.support.site_helpers import SiteProject, failing, passing, require_site_services

pytestmark = [pytest.mark.docker, pytest.mark.slurm, pytest.mark.registry]


def _publish_data(report: dict[str, Any], name: str) -> list[dict[str, Any]] | None:
    (image,) = [image for image in report["images"] if image["name"] == name]
    steps = [step for step in image["steps"] if step["name"] == "publish"]
    return steps[0]["data"].get("published") if steps else None


def test_build_all_publishes_what_passed_once(tmp_path: Path) -> None:
    require_site_services()
    endpoint = s3_endpoint()
    bucket = bucket_name()
    token = uuid.uuid4().hex[:8]
    project = SiteProject(tmp_path)
    project.add("shiny", [passing()])
    project.add("broken", [failing()])
    config = project.config()
    config["publish"] = {"targets": [
        {"name": "store", "kind": "object-store", "endpoint": endpoint, "bucket": bucket, "create_bucket": True},
        {"name": "images", "kind": "registry", "address": REGISTRY, "insecure": True, "prefix": f"pub{token}/"},
        {"name": "sif", "kind": "oras", "address": REGISTRY, "insecure": True, "prefix": f"sif{token}/"}]}
    path = tmp_path / "invoke-publish.yaml"
    import yaml

    path.write_text(yaml.safe_dump({"ci": config}), encoding="utf-8")
    env = signing_environment(make_signing_key())
    try:
        first = project.inv("build-all", "--json", config=path, env=env, timeout=900)
        report = json.loads(first.stdout)
        assert first.returncode == 1, first.stderr  # `broken` failed its test
        published = _publish_data(report, "shiny")
        assert published is not None, report
        assert sorted((o["target"], o["state"]) for o in published) == [
            ("images", "published"), ("sif", "published"), ("store", "published")], published
        assert _publish_data(report, "broken") in (None, []), "a failed image reached the publish step"
        summary = (project.run_folder(report["run_id"]) / "summary.md").read_text(encoding="utf-8")
        assert f"docker pull {REGISTRY}/pub{token}/shiny:" in summary
        catalog = json.loads(s3_client(endpoint).get_object(Bucket=bucket, Key="data.json")["Body"].read())
        assert [entry["name"] for entry in catalog["containers"]] == ["shiny"]
        with OCIClient(REGISTRY, insecure=True) as client:
            assert client.tags(f"pub{token}/broken") == []

        second = project.inv("build-all", "--json", config=path, env=env, timeout=900)
        again = json.loads(second.stdout)
        assert {o["state"] for o in _publish_data(again, "shiny") or []} == {"already published"}
    finally:
        project.cleanup()
