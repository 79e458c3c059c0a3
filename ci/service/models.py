"""The service's tables (SQLAlchemy 2) and its request/response schemas (pydantic v2).

Tables: users and their hashed tokens; `builds` (one unit of pipeline work, shared by every
request for the same content key); `requests` (what a user asked for and sees: its id is the
build id of the API); `slots` (the bounded worker pool: one row per slot, a build holds a slot
with a lease); `claims` (every claim of a slot, so "never twice, never more than the pool" can be
checked from the database alone).

Every request field has a strict grammar (`\\Z` anchored, no control characters, bounded length):
nothing a user sends reaches a command line or a path unchecked.
"""

from __future__ import annotations

import re
import time
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, WithJsonSchema
from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ci.service.eflows.grammar import VERSION
from ci.validation import check_text


class Status(StrEnum):
    PENDING = "PENDING"
    STARTED = "STARTED"
    BUILDING = "BUILDING"
    CONVERTING = "CONVERTING"
    TESTING = "TESTING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


ACTIVE = (Status.STARTED, Status.BUILDING, Status.CONVERTING, Status.TESTING)
TERMINAL = (Status.FINISHED, Status.FAILED, Status.CANCELLED)


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="user")  # user | admin
    created: Mapped[float] = mapped_column(Float, default=time.time)


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[float] = mapped_column(Float, default=time.time)
    expires: Mapped[float | None] = mapped_column(Float, nullable=True)  # a login token's end (GET /login)


class Build(Base):
    """One unit of pipeline work. `current_key` is the content key while the build is in flight or
    FINISHED (unique: two builds of one key can never coexist); NULL once it failed, was cancelled
    or was superseded by a forced rebuild."""

    __tablename__ = "builds"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), index=True)
    current_key: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    kind: Mapped[str] = mapped_column(String(16))  # definition | workflow
    image: Mapped[str] = mapped_column(String(128))  # the image name the pipeline builds
    arch: Mapped[str] = mapped_column(String(16))
    engine: Mapped[str] = mapped_column(String(32))  # the requested container engine
    machine: Mapped[str] = mapped_column(Text)  # the machine as JSON (part of the key)
    workflow: Mapped[str | None] = mapped_column(String(64), nullable=True)
    step_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    definitions: Mapped[str] = mapped_column(Text)  # the definitions tree the image is read from
    digest: Mapped[str] = mapped_column(String(64))
    image_id: Mapped[str] = mapped_column(String(255))  # the Docker tag <name>:<version>-<digest12>
    force: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), index=True, default=Status.PENDING.value)
    message: Mapped[str] = mapped_column(Text, default="")
    filename: Mapped[str | None] = mapped_column(String(255), index=True, nullable=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    slot: Mapped[int | None] = mapped_column(Integer, nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created: Mapped[float] = mapped_column(Float, default=time.time, index=True)
    started: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated: Mapped[float] = mapped_column(Float, default=time.time)
    source: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON: registry, commit, catalog commit, push


class Request(Base):
    """What one user asked for; several requests share a build when their content key is the same."""

    __tablename__ = "requests"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created: Mapped[float] = mapped_column(Float, default=time.time, index=True)
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    attached: Mapped[bool] = mapped_column(Boolean, default=False)  # joined a build that existed already


class Slot(Base):
    """One place in the pool. `build_id` is unique: a build is never held by two slots."""

    __tablename__ = "slots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    build_id: Mapped[str | None] = mapped_column(ForeignKey("builds.id"), unique=True, nullable=True)
    owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires: Mapped[float | None] = mapped_column(Float, nullable=True)


class Claim(Base):
    __tablename__ = "claims"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id"), index=True)
    slot: Mapped[int] = mapped_column(Integer)
    owner: Mapped[str] = mapped_column(String(128))
    started: Mapped[float] = mapped_column(Float)
    ended: Mapped[float | None] = mapped_column(Float, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)


# ------------------------------------------------------------------------------------------------
# Request bodies (eFlows4HPC's, and ours naming a definition)
# ------------------------------------------------------------------------------------------------

_NAME = r"^[a-z0-9][a-z0-9._-]{0,127}\Z"  # a definition or image name, as the definitions tree allows
_WORD = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z"  # workflow and step: never a path, never "..": no leading dot
_SPEC = r"^[a-z][a-z0-9_-]{0,63}(@[0-9][0-9A-Za-z._:-]{0,63})?\Z"  # a Spack spec name[@version]
_GPU = r"^(cuda|rocm)(@[0-9][0-9A-Za-z._-]{0,63})?\Z"
_TARGET = r"^[a-z0-9_]{1,64}\Z"  # a Spack target / microarchitecture: rome, zen2, skylake_avx512, x86_64
_ARCH = r"^[a-z0-9_]{1,16}\Z"
ENGINES = ("singularity", "apptainer", "charliecloud", "docker")
ARCH_OF_PLATFORM = {"linux/amd64": "amd64", "linux/arm64": "arm64"}


def _check(pattern: str, what: str, max_length: int, fix: str) -> AfterValidator:
    """ci.validation's grammar check (our wording, control characters refused)."""
    compiled = re.compile(pattern)
    return AfterValidator(lambda value: check_text(value, what=what, max_length=max_length, pattern=compiled,
                                                   fix=fix))


def _schema(pattern: str, max_length: int) -> WithJsonSchema:
    """The same grammar in the OpenAPI document (JSON Schema's `$` for Python's `\\Z`)."""
    return WithJsonSchema({"type": "string", "pattern": pattern.replace("\\Z", "$"), "maxLength": max_length})


Name = Annotated[str, _check(_NAME, "definition name", 128, "use a definition of the tree ([a-z0-9][a-z0-9._-]*)"),
                 _schema(_NAME, 128)]
Word = Annotated[str, _check(_WORD, "name", 64, "use letters, digits, '_', '.', '-', starting with a letter or digit"),
                 _schema(_WORD, 64)]
Version = Annotated[str, _check(VERSION.pattern, "branch or tag name", 64,
                               "name a branch or tag of the workflow registry, e.g. main, 1.0 or release/2.0"),
                    _schema(VERSION.pattern, 64)]
Arch = Annotated[str, _check(_ARCH, "architecture", 16, "use e.g. amd64 or arm64"), _schema(_ARCH, 16)]
Target = Annotated[str, _check(_TARGET, "Spack target", 64, "use a Spack target: x86_64, zen2, skylake_avx512, ..."),
                   _schema(_TARGET, 64)]
Spec = Annotated[str, _check(_SPEC, "Spack spec", 128, "use name[@version], e.g. openmpi@4"), _schema(_SPEC, 128)]
ServerPath = Annotated[str, _check(r"^/[A-Za-z0-9_.+@/-]{0,1023}\Z", "server path", 1024,
                                  "give an absolute folder path (letters, digits, '_', '.', '+', '@', '-', '/')"),
                      _schema(r"^/[A-Za-z0-9_.+@/-]{0,1023}\Z", 1024)]
Gpu = Annotated[str, _check(_GPU, "GPU runtime", 128, "use cuda[@version] or rocm[@version]"), _schema(_GPU, 128)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, regex_engine="python-re")


class Machine(_Strict):
    """The target machine of an eFlows4HPC request."""

    platform: Literal["linux/amd64", "linux/arm64"]
    architecture: Target
    container_engine: Literal["singularity", "apptainer", "charliecloud", "docker"]
    mpi: Spec | None = None
    gpu: Gpu | None = None


class WorkflowRequest(_Strict):
    """eFlows4HPC's body: a workflow step of the workflow registry, for a machine."""

    machine: Machine
    workflow: Word
    step_id: Word
    version: Version | None = None
    force: bool = False
    push: bool | None = None  # push the image to ci.service.images_prefix (default: when that is configured)
    path: ServerPath | None = None  # a step folder on the server (admin tokens, ci.service.eflows_allowed_paths)


class DefinitionRequest(_Strict):
    """A definition of the configured definitions tree, by image name (a variant is `<name>-<suffix>`)."""

    definition: Name
    arch: Arch = "amd64"
    force: bool = False
    container_engine: Literal["singularity", "apptainer", "charliecloud", "docker"] | None = None


BuildBody = WorkflowRequest | DefinitionRequest


# ------------------------------------------------------------------------------------------------
# Responses
# ------------------------------------------------------------------------------------------------


class ProblemItem(BaseModel):
    file: str
    field: str
    message: str
    fix: str


class ProblemResponse(BaseModel):
    """Why a request was refused: one line per problem (file, field, message, fix)."""

    detail: str
    problems: list[ProblemItem] = []


class Created(BaseModel):
    id: str
    status: Status
    attached: bool
    url: str


class BuildView(BaseModel):
    """eFlows4HPC's status fields (status, message, image_id, filename) and more."""

    id: str
    status: Status
    message: str
    image_id: str
    filename: str | None
    kind: Literal["definition", "workflow"]
    definition: str
    arch: str
    machine: dict[str, Any]
    workflow: str | None
    step_id: str | None
    version: str | None
    digest: str
    key: str
    sha256: str | None
    size: int | None
    attempts: int
    shared: bool
    created: str
    started: str | None
    finished: str | None
    updated: str
    log_url: str
    download_url: str | None
    source: dict[str, Any] | None = None  # eFlows4HPC steps: registry, version, commit, catalog commit, push target


class BuildList(BaseModel):
    builds: list[BuildView]


class Health(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]
