"""`ci.publish`: where tested images are published, checked once, before anything moves.

```yaml
ci:
  publish:
    signing: {key_env: CI_PUBLISH_SIGNING_KEY, key_file: secrets/publish-signing-key.asc}
    targets:
      - {name: ghcr, kind: registry, address: ghcr.io, prefix: my-org/containers/, latest: true,
         username_env: GHCR_USER, token_env: GHCR_TOKEN}
      - {name: ghcr-sif, kind: oras, address: ghcr.io, prefix: my-org/sif/,
         username_env: GHCR_USER, token_env: GHCR_TOKEN}
      - {name: allas, kind: object-store, endpoint: https://a3s.fi, bucket: lumi-containers, prefix: visualization/}
```

Each target names its kind; the kind decides which keys it takes (`RegistryTarget`, `OrasTarget`,
`ObjectStoreTarget`), so a key of another kind is an error naming the target. Credentials are never
values here, only the names of the environment variables that hold them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from ci.config.base import WHERE, ConfigModel
from ci.config.grammars import Address, EnvName, Flag, Text, Word
from ci.errors import ConfigError, Problem
from ci.validation import check_text, invalid, problems_from

KINDS = ("registry", "oras", "object-store")
SIGNING_KEY_ENV = "CI_PUBLISH_SIGNING_KEY"
SIGNING_PASSPHRASE_ENV = "CI_PUBLISH_SIGNING_PASSPHRASE"
SIGNING_KEY_FILE = "secrets/publish-signing-key.asc"

_PREFIX = re.compile(r"\A([a-z0-9][a-z0-9._-]{0,127}/){0,8}\Z")
_KEY_PREFIX = re.compile(r"\A([A-Za-z0-9][A-Za-z0-9._+=@-]{0,254}/){0,16}\Z")
_BUCKET = re.compile(r"\A(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
_URL = re.compile(r"\Ahttps?://[A-Za-z0-9.\-\[\]:]{1,300}(/[A-Za-z0-9._~/%+-]{0,1000})?\Z")
_PATTERN = re.compile(r"\A[a-z0-9*?\[\]][a-z0-9._*?\[\]-]{0,127}\Z")


def _slashed(value: str) -> str:
    return value if not value or value.endswith("/") else value + "/"


def _repository_prefix(value: str) -> str:
    value = _slashed(value)
    if value and ".." in value.split("/"):
        raise invalid(f"prefix {value!r} climbs out of its namespace", "write e.g. my-org/containers/")
    return check_text(value, what="repository prefix", max_length=1024, pattern=_PREFIX,
                      fix="write lower-case path parts ending in '/', e.g. my-org/containers/") if value else value


def _key_prefix(value: str) -> str:
    value = _slashed(value)
    if value and any(part in ("..", ".") for part in value.split("/")[:-1]):
        raise invalid(f"prefix {value!r} has a '.' or '..' part", "write folder names ending in '/', e.g. sif/")
    return check_text(value, what="object key prefix", max_length=1024, pattern=_KEY_PREFIX,
                      fix="write folder names ending in '/', e.g. visualization/") if value else value


def _url(value: str) -> str:
    return check_text(value.rstrip("/"), what="URL", max_length=1300, pattern=_URL,
                      fix="write http(s)://host[:port][/path], e.g. https://a3s.fi")


def _bucket(value: str) -> str:
    return check_text(value, what="bucket name", max_length=63, pattern=_BUCKET,
                      fix="write a DNS-style bucket name: 3-63 lower-case letters, digits, '.' and '-'")


def _pattern(value: str) -> str:
    return check_text(value, what="image name pattern", max_length=128, pattern=_PATTERN,
                      fix="write an image name or a shell pattern such as 'pytorch*'")


RepositoryPrefix = Annotated[str, AfterValidator(_repository_prefix)]
KeyPrefix = Annotated[str, AfterValidator(_key_prefix)]
Url = Annotated[str, AfterValidator(_url)]
Bucket = Annotated[str, AfterValidator(_bucket)]
ImagePattern = Annotated[str, AfterValidator(_pattern)]


class TargetBase(ConfigModel):
    """What every target has: a name (for `inv publish.verify NAME`), a kind, and which images go there."""

    name: Word
    kind: str
    images: tuple[ImagePattern, ...] = ("*",)  # image names or shell patterns; default: every tested image
    arches: tuple[Word, ...] = ()  # empty: every architecture
    descriptions: dict[Word, Text] = Field(default_factory=dict)  # per image name, for the catalog

    def wants(self, name: str, arch: str) -> bool:
        from fnmatch import fnmatchcase

        return any(fnmatchcase(name, pattern) for pattern in self.images) and (not self.arches or arch in self.arches)


class RegistryLike(TargetBase):
    """A registry reached over the OCI distribution API; `insecure` is plain HTTP (loopback only)."""

    address: Address
    prefix: RepositoryPrefix = ""
    latest: Flag = False  # also tag the newest published version `latest`
    insecure: Flag = False
    username_env: EnvName | None = None
    token_env: EnvName | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> RegistryLike:
        if (self.username_env is None) != (self.token_env is None):
            raise invalid("username_env and token_env go together", "set both variable names, or neither "
                          "for a registry that needs no login")
        return self


class RegistryTarget(RegistryLike):
    """The tested OCI image, copied from the site's registry (only blobs the target lacks move)."""

    kind: Literal["registry"]


class OrasTarget(RegistryLike):
    """The HPC image file as an ORAS artifact with Apptainer's media types (`apptainer pull oras://...`)."""

    kind: Literal["oras"]


MIB = 1024 * 1024
DEFAULT_PART_SIZE_MB = 16  # also the part size whose md5s the convert step records (ci/pipeline/steps/convert.py)
MAX_PARTS = 10_000  # S3's limit on the parts of one multipart upload (Ceph RGW and moto keep it)


def parts_in(size: int, part_size: int) -> int:
    """How many parts of `part_size` bytes a file of `size` bytes is cut into (the last may be shorter)."""
    return -(-size // part_size)


def part_size_for(size: int, part_size_mb: int) -> int:
    """The configured part size, grown in whole MiBs where the file would need more than 10,000 parts.

    The same file always gets the same size, so a retry finds the parts an earlier attempt stored."""
    part_size = part_size_mb * MIB
    if size > part_size * MAX_PARTS:
        part_size = parts_in(size, MAX_PARTS * MIB) * MIB
    return part_size


class ObjectStoreTarget(TargetBase):
    """The HPC image file in an S3-compatible store (Allas, S3, Ceph RGW), a `data.json` catalog written last."""

    kind: Literal["object-store"]
    endpoint: Url | None = None  # None: AWS's own endpoint
    bucket: Bucket
    prefix: KeyPrefix = ""
    region: Word | None = None
    access_key_env: EnvName = "AWS_ACCESS_KEY_ID"
    secret_key_env: EnvName = "AWS_SECRET_ACCESS_KEY"
    source_url: Url | None = None  # the public URL of the prefix, for data.json; default endpoint/bucket/prefix
    catalog: Annotated[str, AfterValidator(lambda v: check_text(
        v, what="catalog name", max_length=128, pattern=re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z"),
        fix="write a file name such as data.json"))] = "data.json"
    # Files up to multipart_threshold_mb go up in one PUT (S3 takes up to 5 GiB); larger ones in parts of
    # part_size_mb (S3: at least 5 MiB; grown for files of more than 10,000 parts), `uploads` at a time.
    # Small parts keep the store busy from the first MiBs and end the upload soon after the last read;
    # memory: `uploads` parts.
    multipart_threshold_mb: Annotated[int, Field(strict=True, ge=5, le=5120)] = 64
    part_size_mb: Annotated[int, Field(strict=True, ge=5, le=5120)] = DEFAULT_PART_SIZE_MB
    uploads: Annotated[int, Field(strict=True, ge=1, le=32)] = 8
    # Beside each part's Content-MD5, a CRC32 the store checks and keeps (x-amz-checksum-crc32, a
    # composite checksum of the object), as boto3 sends by default; `none` for a store that refuses
    # the x-amz-checksum headers. Without one, a store may checksum the whole object again at completion.
    part_checksum: Literal["crc32", "none"] = "crc32"
    create_bucket: Flag = False  # create the bucket when it is missing (a local store); production buckets exist

    @property
    def public_url(self) -> str:
        if self.source_url:
            return _slashed(self.source_url)
        base = self.endpoint or f"https://{self.bucket}.s3.amazonaws.com"
        return f"{base}/{self.bucket}/{self.prefix}" if self.endpoint else f"{base}/{self.prefix}"


def _kind_of(value: Any) -> str | None:
    kind = value.get("kind") if isinstance(value, Mapping) else getattr(value, "kind", None)
    return kind if kind in KINDS else None


Target = Annotated[Annotated[RegistryTarget, Tag("registry")] | Annotated[OrasTarget, Tag("oras")]
                   | Annotated[ObjectStoreTarget, Tag("object-store")], Discriminator(_kind_of)]


class SigningSettings(ConfigModel):
    """The OpenPGP key that signs what is published: an armored secret key in an environment variable
    or a file of the secrets folder; its passphrase, if any, in another variable."""

    key_env: EnvName = SIGNING_KEY_ENV
    key_file: Text = SIGNING_KEY_FILE  # relative to the project folder
    passphrase_env: EnvName = SIGNING_PASSPHRASE_ENV
    required: Flag = True  # false: publish unsigned when no key is configured (verify then says so)


class PublishSettings(ConfigModel):
    """`ci.publish`: the targets and the signing key."""

    targets: tuple[Target, ...] = ()
    signing: SigningSettings = Field(default_factory=SigningSettings)

    @field_validator("targets", mode="before")
    @classmethod
    def _known_kinds(cls, value: Any) -> Any:
        """An unknown kind is one clear line (pydantic's union error would list every kind's keys)."""
        if isinstance(value, list | tuple):
            for index, item in enumerate(value):
                if isinstance(item, Mapping) and item.get("kind") not in KINDS:
                    raise invalid(f"targets[{index}] has kind {item.get('kind')!r}",
                                  f"choose one of: {', '.join(KINDS)}")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> PublishSettings:
        names = [target.name for target in self.targets]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise invalid(f"target name(s) {', '.join(twice)} used twice", "give each target its own name")
        return self

    def target(self, name: str) -> RegistryTarget | OrasTarget | ObjectStoreTarget:
        for target in self.targets:
            if target.name == name:
                return target
        known = ", ".join(t.name for t in self.targets) or "none configured (ci.publish.targets)"
        raise ConfigError(f"no publish target named {name[:64]!r}; known: {known}")


def publish_settings(raw: Mapping[str, Any] | None) -> PublishSettings:
    """Read `ci.publish` (as written, profile applied); each wrong value is one line naming its key."""
    try:
        return PublishSettings.model_validate(dict(raw or {}))
    except ValidationError as error:
        problems: list[Problem] = problems_from(error, file=WHERE, prefix="ci.publish", model=PublishSettings)
        raise ConfigError.from_problems(problems) from None
