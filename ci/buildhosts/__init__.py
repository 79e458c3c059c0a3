"""Builds across several build hosts: a pool of engines sharing one build registry and BuildKit cache.

`settings` checks `ci.build_hosts` and `ci.build_pool`; `host` is what the pipeline may ask of a
build host (and the Docker engine that answers); `pool` places builds on hosts with free slots,
moves images between hosts through the registry by digest, and fails over when a host is lost;
`local_engines` starts extra `dockerd`s on this machine (`inv local.up`). Where this package sits
among the others: docs/architecture.md.
"""

from __future__ import annotations

from ci.buildhosts.compose import host_engine, open_pool
from ci.buildhosts.host import BuildHost, DockerBuildHost, HostError, cached_steps
from ci.buildhosts.pool import BuildPool, NoBuildHost, Placement, cache_reference, registry_reference
from ci.config.build_hosts import BuildHostSettings, BuildPoolSettings
from ci.config.pool import BuildHosts, build_hosts

__all__ = ["BuildHost", "BuildHostSettings", "BuildHosts", "BuildPool", "BuildPoolSettings", "DockerBuildHost",
           "HostError", "NoBuildHost", "Placement", "build_hosts", "cache_reference", "cached_steps",
           "host_engine", "open_pool", "registry_reference"]
