"""Shared helpers of the service tests: an isolated service (its own state, site, database), tokens,
a real uvicorn replica as a subprocess (`inv service.serve`), and waiting on a build's status.

Every project has its own state folder (SQLite database, image store, run records), site root,
Slurm job prefix, and, for PostgreSQL, a database of its own that is dropped afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from ci.config.settings import load_settings
from ci.service import crud
from ci.service.db import Database
from ci.service.settings import ServiceSettings, service_settings
from tests.support.paths import PROJECT_DIR
from tests.support.services import (
    free_port,
    require_chromium,  # noqa: F401 - tests of other branches import it from here
    require_postgresql,
    require_site_services,
)
from tests.support.site_helpers import SiteProject

TERMINAL = ("FINISHED", "FAILED", "CANCELLED")


class ServiceProject:
    """A SiteProject (definitions, site, state) plus the service's own settings and database."""

    def __init__(self, site: SiteProject, **service: Any):
        self.site = site
        self.service_config: dict[str, Any] = {"pool": 2, "lease_seconds": 3, "poll_interval": 0.2, **service}
        self.servers: list[Server] = []

    @property
    def root(self) -> Path:
        return self.site.root

    def config(self) -> dict[str, Any]:
        return {**self.site.config(), "service": dict(self.service_config)}

    def settings(self) -> ServiceSettings:
        return service_settings(load_settings(self.config(), PROJECT_DIR, profile="local"))

    def database(self) -> Database:
        db = Database.open(self.settings().database_url)
        db.migrate()
        return db

    def token(self, user: str, admin: bool = False) -> str:
        db = self.database()
        try:
            return crud.issue_token(db, user, admin=admin)
        finally:
            db.close()

    def config_file(self, name: str = "invoke-service.yaml") -> Path:
        import yaml

        path = self.root / name
        path.write_text(yaml.safe_dump({"ci": self.config()}, sort_keys=False), encoding="utf-8")
        return path

    def serve(self, *, port: int | None = None, workers: bool = True, env: dict[str, str] | None = None) -> Server:
        server = Server(self, port or free_port(), workers, env or {})
        server.start()
        self.servers.append(server)
        return server

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


class Server:
    """One replica: `python -m invoke -f CONFIG service.serve --port P` in its own process group."""

    def __init__(self, project: ServiceProject, port: int, workers: bool, env: dict[str, str]):
        self.project, self.port, self.workers, self.env = project, port, workers, env
        self.url = f"http://127.0.0.1:{port}"
        self.log = project.root / f"server-{port}-{uuid.uuid4().hex[:4]}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        argv = self.project.site.inv_command("service.serve", "--port", str(self.port),
                                             *([] if self.workers else ["--no-workers"]),
                                             config=self.project.config_file())
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, cwd=PROJECT_DIR,
                                            env={**os.environ, **self.env}, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server ended at start: {self.log.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the server did not answer within {timeout}s: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """kill -9 of the server process itself (its build children are meant to follow it)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def wait_status(get: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool], timeout: float,
                what: str) -> tuple[dict[str, Any], list[str]]:
    """Poll a status until `done`; (the last status, every status seen in order)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = get()
        if not seen or seen[-1] != status["status"]:
            seen.append(status["status"])
        if done(status):
            return status, seen
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last status {status} (seen {seen})")


def service_project(root: Path, *, site_services: bool = True, **kwargs: Any) -> Iterator[ServiceProject]:
    """The body of a service fixture: check the services, clean up (servers, jobs, images) afterwards."""
    if site_services:
        require_site_services()
    definitions = kwargs.pop("definitions", None)
    site = SiteProject(root, definitions=definitions, shared_images=kwargs.pop("shared_images", False))
    project = ServiceProject(site, **kwargs)
    try:
        yield project
    finally:
        project.stop()
        if site_services:
            site.cleanup()


def postgresql_database(name: str) -> Iterator[str]:
    """A fresh database on the local PostgreSQL (peer authentication as root); dropped afterwards."""
    require_postgresql()
    subprocess.run(["createdb", name], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://root@/{name}?host=/var/run/postgresql"
    finally:
        subprocess.run(["dropdb", "--if-exists", "--force", name], check=False, capture_output=True)

