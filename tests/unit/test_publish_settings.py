"""`ci.publish` read once and refused clearly; the catalog's shape; prune's choice of versions.

Hostile values (control characters, `../`, option-like names, huge values, unknown keys, a kind
that does not exist) are one line each naming the key, never a traceback.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from ci.config.publish import MAX_PARTS, MIB, ObjectStoreTarget, RegistryTarget, part_size_for, publish_settings
from ci.errors import ConfigError
from ci.publish.catalog import Catalog, CatalogError, Entry, parse
from ci.publish.prune import choose

REGISTRY = {"name": "hub", "kind": "registry", "address": "ghcr.io", "prefix": "org/containers"}
STORE = {"name": "allas", "kind": "object-store", "endpoint": "https://a3s.fi", "bucket": "lumi-containers",
         "prefix": "visualization"}


def _error(raw: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        publish_settings(raw)
    return str(caught.value)


def test_a_lumi_store_and_a_registry_read_with_their_defaults() -> None:
    settings = publish_settings({"targets": [REGISTRY, STORE]})
    registry, store = settings.targets
    assert isinstance(registry, RegistryTarget) and registry.prefix == "org/containers/"
    assert isinstance(store, ObjectStoreTarget) and store.prefix == "visualization/"
    assert store.public_url == "https://a3s.fi/lumi-containers/visualization/"
    assert (store.catalog, store.access_key_env) == ("data.json", "AWS_ACCESS_KEY_ID")
    assert (store.multipart_threshold_mb, store.part_size_mb, store.uploads) == (64, 16, 8)
    assert store.part_checksum == "crc32"
    assert settings.signing.required is True
    assert publish_settings(None).targets == ()
    assert registry.wants("pytorch", "amd64") and not RegistryTarget(**{**REGISTRY, "images": ["py*"],
                                                                         "arches": ["arm64"]}).wants("pytorch", "amd64")


@pytest.mark.parametrize(("target", "words"), [
    ({**REGISTRY, "kind": "ftp"}, ["targets[0]", "'ftp'", "registry, oras, object-store"]),
    ({**STORE, "prefix": "../other/"}, ["prefix", "'..'"]),
    ({**STORE, "bucket": "Bad_Bucket"}, ["bucket", "DNS-style"]),
    ({**STORE, "bucket": "--endpoint-url"}, ["bucket"]),
    ({**REGISTRY, "prefix": "org/\ncontainers"}, ["prefix", "control character"]),
    ({**REGISTRY, "address": "-oProxyCommand=x"}, ["address"]),
    ({**STORE, "endpoint": "file:///etc/passwd"}, ["endpoint", "http(s)://"]),
    ({**STORE, "part_size_mb": 10**12}, ["part_size_mb"]),
    ({**STORE, "part_size_mb": "64"}, ["part_size_mb"]),
    ({**STORE, "part_size_mb": 4}, ["part_size_mb"]),  # S3 refuses parts under 5 MiB (but the last)
    ({**STORE, "multipart_threshold_mb": 6000}, ["multipart_threshold_mb"]),  # one PUT takes at most 5 GiB
    ({**STORE, "multipart_threshold_mb": True}, ["multipart_threshold_mb"]),
    ({**STORE, "uploads": 0}, ["uploads"]),
    ({**STORE, "part_checksum": "md5"}, ["part_checksum", "crc32", "none"]),
    ({**REGISTRY, "username_env": "USER"}, ["username_env and token_env go together"]),
    ({**REGISTRY, "token_env": "$(id)", "username_env": "U"}, ["token_env", "variable name"]),
    ({**REGISTRY, "bucket": "x"}, ["unknown key 'bucket'"]),
    ({**REGISTRY, "name": "a" * 500}, ["name"]),
    ({**REGISTRY, "images": ["../*"]}, ["images", "pattern"]),
    ({**STORE, "latest": True}, ["unknown key 'latest'"]),
])
def test_a_bad_target_is_one_clear_line_naming_its_key(target: dict[str, Any], words: list[str]) -> None:
    message = _error({"targets": [target]})
    assert message.startswith("ci.publish.targets"), message
    for word in words:
        assert word in message, message
    assert "Traceback" not in message and "pydantic" not in message.lower()


def test_two_targets_of_one_name_and_a_missing_target_are_refused() -> None:
    assert "used twice" in _error({"targets": [REGISTRY, {**STORE, "name": "hub"}]})
    with pytest.raises(ConfigError, match="no publish target named 'nope'; known: hub"):
        publish_settings({"targets": [REGISTRY]}).target("nope")
    assert "expected a list" in _error({"targets": "hub"})
    assert "unknown key 'signin'" in _error({"signin": {}})


def _entry(version: str, published: str, digest: str = "d", name: str = "viz") -> Entry:
    return Entry(name=name, md5sum="m", sha256="s", size=1, version=version, digest=digest * 64,
                 published=published, file=f"{name}/{version}-{digest}")


def test_prune_keeps_the_newest_versions_per_image_with_every_digest_of_a_kept_version() -> None:
    entries = [_entry("1.0", "2026-01-01T00:00:00Z", "a"), _entry("1.1", "2026-02-01T00:00:00Z", "b"),
               _entry("1.1", "2026-03-01T00:00:00Z", "c"), _entry("0.9", "2026-04-01T00:00:00Z", "e"),
               _entry("1.0", "2026-01-01T00:00:00Z", "a", name="other")]
    kept, dropped = choose(entries, keep=2)
    assert sorted((e.name, e.version, e.digest[0]) for e in dropped) == [("viz", "1.0", "a")]
    assert len(kept) == 4  # 0.9 was published last: newest means published last, not the highest number
    with pytest.raises(Exception, match="at least 1"):
        choose(entries, keep=0)


@pytest.mark.parametrize("order", [["1.9", "1.10", "1.2"], ["1.10", "1.2", "1.9"], ["1.2", "1.9", "1.10"]])
def test_versions_published_within_one_second_are_ordered_by_their_numbers(order: list[str]) -> None:
    """One run publishes several versions in the same second; which one is newest must not be chance."""
    entries = [_entry(version, "2026-12-07T05:30:38Z", str(index)) for index, version in enumerate(order)]
    kept, dropped = choose(entries, keep=2)
    assert sorted(e.version for e in kept) == ["1.10", "1.9"] and [e.version for e in dropped] == ["1.2"]


def test_the_catalog_keeps_lumis_fields_and_a_foreign_data_json_is_never_overwritten() -> None:
    catalog = Catalog(source_url="https://a3s.fi/b/").with_entry(_entry("1.0", "2026-01-01T00:00:00Z"))
    data = json.loads(catalog.to_bytes())
    assert data["source_url"] == "https://a3s.fi/b/"
    assert {"name", "md5sum", "description", "sha256", "size", "version", "digest", "published"} <= set(
        data["containers"][0])
    again = catalog.with_entry(_entry("1.0", "2026-05-01T00:00:00Z"))
    assert len(again.containers) == 1 and again.containers[0].published.startswith("2026-05")
    with pytest.raises(CatalogError, match="not a readable catalog"):
        parse(b"\x00\xff not json", "s3://b/data.json")
    with pytest.raises(CatalogError, match="repair or remove it"):  # LUMI's own list, without our fields
        parse(json.dumps({"source_url": "x", "containers": [{"name": "viz", "md5sum": "m"}]}).encode(), "data.json")


@pytest.mark.parametrize(("size", "part_mb", "expected_mb"), [
    (1, 16, 16),
    (16 * MIB * 10_000, 16, 16),  # exactly 10,000 parts
    (16 * MIB * 10_000 + 1, 16, 17),  # one byte more: parts grow, in whole MiBs
    (1024 * 1024 * MIB, 16, 105),  # 1 TiB: 9,987 parts of 105 MiB
    (5 * 1024 * 1024 * MIB, 5, 525),  # S3's largest object
])
def test_the_part_size_grows_where_a_file_would_need_more_than_10000_parts(size: int, part_mb: int,
                                                                        expected_mb: int) -> None:
    part = part_size_for(size, part_mb)
    assert part == expected_mb * MIB and -(-size // part) <= MAX_PARTS
