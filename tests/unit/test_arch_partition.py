"""ci.site.arch.<arch>.partition: an architecture's conversions and tests go to its nodes' partition."""

from __future__ import annotations

from types import SimpleNamespace

from ci.config.settings import load_settings
from ci.pipeline.steps.chain import SiteServices


def test_an_architecture_partition_wins_over_the_site_partition(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings({"profile": "t", "profiles": {"t": {}}, "site": {
        "root": str(tmp_path), "partition": "small", "arch": {"arm64": {"partition": "grace"}}}}, tmp_path, profile="t")
    partitions = {arch: p for arch in settings.site.arch if (p := settings.site.partition_for(arch))}
    services = SimpleNamespace(arch_partitions=partitions, partition=settings.site.partition)
    assert SiteServices.partition_for(services, "arm64") == "grace"  # type: ignore[arg-type]
    assert SiteServices.partition_for(services, "amd64") == "small"  # type: ignore[arg-type]
