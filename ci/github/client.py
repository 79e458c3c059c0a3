"""The one client of GitHub's REST API: no other module of `ci` talks HTTP to GitHub.

The workflow's tasks (`inv gh.last-success`, `inv gh.runners`) and the runner allocator
(`ci.runners`) both call GitHub through `ci.github.actions`, which sits on this client:

- **Auth**: a token (`TokenAuth`), or a GitHub App (`AppAuth`): a JWT signed with the App's key is
  exchanged for an installation token, kept until five minutes before it expires, and fetched
  again once when GitHub answers 401 to it (revoked early).
- **Conditional requests**: with `conditional=True` the ETag of each URL's last answer is kept and
  sent back as `If-None-Match`; a `304 Not Modified` costs no rate limit and the cached (already
  checked) answer is used. An allocator polling every few seconds spends almost nothing.
- **Rate limits**: every answer's `X-RateLimit-*` is kept (`rate`). A 403/429 with `Retry-After`
  (a secondary limit), or `X-RateLimit-Remaining: 0` (the primary limit, until `X-RateLimit-Reset`),
  stops every call until then: a short wait is slept here, a long one raises `RateLimited` so the
  caller reports it and carries on. No answer blocks us for more than an hour (GitHub's window), so
  a wild header cannot stop the allocator for good.
- **Retries**: lost connections, timeouts and 5xx answers are retried with exponential backoff.
- **Pagination**: `Link: <...>; rel="next"`, followed only within the API's own origin (a link to
  another host would carry the token there), at most `max_pages` pages.
- **Answers**: the body is read up to `max_body` bytes and parsed by a model of `ci.github.models`;
  anything else (not JSON, an HTML page, bad bytes, a missing key, a wrong type, a page too big) is
  one `BadAnswer` naming the endpoint and what was wrong, never a traceback; nothing half-read is
  cached or acted on.
- **Secrets**: a token travels only in the Authorization header. Nothing here logs a header or a
  body; messages name the endpoint and status, and text GitHub sends back (its `message`) has any
  credential of ours cut out before it reaches an exception.
"""

from __future__ import annotations

import base64
import email.utils
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import urlencode

import httpx
from pydantic import BaseModel, ValidationError

from ci.errors import CIError, ConfigError, printable
from ci.github.models import PER_PAGE, InstallationToken, Page, RateLimitAnswer

API_VERSION = "2022-11-28"
MAX_PAGES = 100  # 10,000 items: more in one listing means the listing should be narrowed
MAX_BODY = 8 * 1024 * 1024  # a page of 100 runs is about 0.5 MB
MAX_BLOCK = 3600.0  # the longest any rate-limit answer may stop our calls
RENEW_BEFORE = 300.0  # an App's installation token is renewed this long before it expires
_TOKEN = re.compile(r"[\x21-\x7e]{1,4096}\Z")  # printable ASCII, no space: every GitHub token format
_ETAG = re.compile(r'(W/)?"[\x21\x23-\x7e]{0,500}"\Z')

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class GitHubError(CIError):
    """GitHub refused a request, or did not answer after the retries (`status` 0: no answer)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


class BadAnswer(GitHubError):
    """GitHub's answer is not what its API documents: not JSON, the wrong shape or types, too big."""


class RateLimited(GitHubError):
    """GitHub asked us to wait until `until` (epoch seconds) before the next call."""

    def __init__(self, message: str, until: float):
        super().__init__(message, 429)
        self.until = until


class Stopping(CIError):
    """A wait was cut short because the caller is shutting down."""


@dataclass
class RateLimit:
    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None  # epoch seconds
    used: int | None = None
    resource: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"limit": self.limit, "remaining": self.remaining, "reset": self.reset, "used": self.used,
                "resource": self.resource}


@dataclass(frozen=True)
class Reply(Generic[M]):
    """A checked answer: the model, the next page's URL (already checked), and whether it came from the cache."""

    status: int
    data: M
    next_url: str | None = None
    cached: bool = False


@dataclass(frozen=True)
class _Cached:
    etag: str
    data: BaseModel
    next_url: str | None


def check_api_url(url: str, what: str = "the GitHub API address") -> str:
    """`url` without its trailing slash, or a ConfigError: http(s), a host, no credentials or query."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        parsed = None
    if (parsed is None or parsed.scheme not in ("http", "https") or not parsed.host or parsed.userinfo
            or parsed.query or parsed.fragment or not url.isprintable() or " " in url):
        raise ConfigError(f"{what} {printable(url[:200])!r} is not an http(s) URL of an API; write it like "
                          "https://api.github.com or https://ghe.example.org/api/v3")
    return url.rstrip("/")


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    try:
        value = int(headers[name])
    except (KeyError, ValueError):
        return None
    return value if 0 <= value < 10**12 else None


# ---- auth -----------------------------------------------------------------------------------------


class Auth(Protocol):
    """Where the Authorization header comes from."""

    source: str  # what a person renews when GitHub answers 401 ("CI_GITHUB_TOKEN", "the GitHub App ...")

    def authorization(self, client: GitHubClient) -> str: ...

    def renew(self) -> bool:
        """Forget a cached credential; True when a second try may now succeed."""
        ...

    def secrets(self) -> tuple[str, ...]:
        """Every credential in use, to cut out of text GitHub echoes back."""
        ...


class TokenAuth:
    """A personal, fine-grained or workflow token (from the environment, never a flag)."""

    def __init__(self, token: str, source: str = "the token"):
        token = token.strip()
        if not token:
            raise ConfigError(f"{source} is empty; export a GitHub token in it")
        if not _TOKEN.match(token):
            raise ConfigError(f"{source} holds characters no GitHub token has (spaces, line breaks, non-ASCII); "
                              "export the token alone")
        self._token = token
        self.source = source

    @classmethod
    def from_environment(cls, name: str, environ: Mapping[str, str], fix: str) -> TokenAuth:
        value = environ.get(name, "").strip()
        if not value:
            raise ConfigError(f"{name} is not set; {fix}")
        return cls(value, source=name)

    def authorization(self, client: GitHubClient) -> str:
        return f"Bearer {self._token}"

    def renew(self) -> bool:
        return False

    def secrets(self) -> tuple[str, ...]:
        return (self._token,)

    def __repr__(self) -> str:
        return f"TokenAuth(source={self.source!r})"


class AppAuth:
    """A GitHub App installation: a JWT signed with the App's key, exchanged for an hour's token."""

    def __init__(self, app_id: int, installation_id: int, private_key_file: str):
        self.app_id = app_id
        self.installation_id = installation_id
        self.private_key_file = private_key_file
        self.source = f"the GitHub App {app_id}'s installation token"
        self._token = ""
        self._expires = 0.0
        self._lock = threading.Lock()
        self.fetched = 0  # installation tokens fetched (for tests and the metrics)

    def __repr__(self) -> str:
        return f"AppAuth(app_id={self.app_id}, installation_id={self.installation_id})"

    def jwt(self, now: float | None = None) -> str:
        """The App's JWT (RS256, valid nine minutes, issued a minute back against clock drift)."""
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        try:
            with open(self.private_key_file, "rb") as handle:
                key = serialization.load_pem_private_key(handle.read(1 << 20), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"cannot read the GitHub App key {printable(self.private_key_file)} "
                              f"(ci.runners.github.app.private_key_file): {type(exc).__name__}; give the .pem file "
                              "GitHub generated for the App, readable by this user only") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError(f"{printable(self.private_key_file)} is not an RSA key; GitHub Apps sign with RSA")
        moment = int(now if now is not None else time.time())

        def part(data: Mapping[str, Any]) -> bytes:
            return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).rstrip(b"=")

        signing_input = part({"alg": "RS256", "typ": "JWT"}) + b"." + part(
            {"iat": moment - 60, "exp": moment + 540, "iss": str(self.app_id)})
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()

    def authorization(self, client: GitHubClient) -> str:
        with self._lock:
            now = time.time()
            if self._token and now < self._expires - RENEW_BEFORE:
                return f"Bearer {self._token}"
            path = f"/app/installations/{self.installation_id}/access_tokens"
            try:
                reply = client.request("POST", path, InstallationToken, ok=(201,),
                                       authorization=f"Bearer {self.jwt()}")
            except (RateLimited, BadAnswer):
                raise
            except GitHubError as exc:
                if not exc.status:
                    raise
                raise GitHubError(f"GitHub refused an installation token for App {self.app_id} "
                                  f"(HTTP {exc.status}); check ci.runners.github.app (app_id, installation_id, the "
                                  "key) and that the App is installed and may manage self-hosted runners",
                                  exc.status) from None
            self._token = reply.data.token.get_secret_value()
            # A skewed clock (ours or GitHub's) must neither refetch on every call nor keep a dead token.
            self._expires = min(max(reply.data.expires_at.timestamp(), now + RENEW_BEFORE + 60), now + 3600)
            self.fetched += 1
            return f"Bearer {self._token}"

    def renew(self) -> bool:
        with self._lock:
            had = bool(self._token)
            self._token, self._expires = "", 0.0
            return had

    def secrets(self) -> tuple[str, ...]:
        return (self._token,) if self._token else ()


# ---- the client -----------------------------------------------------------------------------------


class GitHubClient:
    """Conditional GETs, pagination, rate limits, retries, and checked answers (see the module's docstring)."""

    def __init__(self, api_url: str, auth: Auth, *, timeout: float = 30.0, retries: int = 5, backoff: float = 1.0,
                 max_inline_wait: float = 10.0, cache_entries: int = 4096, max_pages: int = MAX_PAGES,
                 max_body: int = MAX_BODY, stop: threading.Event | None = None,
                 sleep: Callable[[float], None] | None = None, transport: httpx.BaseTransport | None = None,
                 user_agent: str = "containers-ci"):
        self.api_url = check_api_url(api_url)
        self._base = httpx.URL(self.api_url + "/")
        self.auth = auth
        self.retries = retries
        self.backoff = backoff
        self.max_inline_wait = max_inline_wait
        self.cache_entries = cache_entries
        self.max_pages = max_pages
        self.max_body = max_body
        self._stop = stop or threading.Event()
        self._sleep = sleep
        self._http = httpx.Client(timeout=timeout, transport=transport, follow_redirects=False,
                                  headers={"Accept": "application/vnd.github+json",
                                           "X-GitHub-Api-Version": API_VERSION, "User-Agent": user_agent})
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._touched: set[str] = set()
        self._cache_lock = threading.Lock()
        self._lock = threading.Lock()
        self.rate = RateLimit()
        self.blocked_until = 0.0
        self.calls = 0
        self.not_modified = 0
        self.errors = 0

    def __repr__(self) -> str:
        return f"GitHubClient({self.api_url!r}, {self.auth!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GitHubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls --------------------------------------------------------------------------------------

    def request(self, method: str, path: str, model: type[M], *, params: Mapping[str, Any] | None = None,
                body: Mapping[str, Any] | None = None, conditional: bool = False, ok: tuple[int, ...] = (200,),
                authorization: str | None = None) -> Reply[M]:
        """One call whose answer `model` reads; `conditional` GETs use and refresh the ETag cache."""
        url = self._url(path, params)
        what = f"{method} {self._shown(url)}"
        cached = self._cached(url) if conditional else None
        status, response, content = self._exchange(method, url, what, body, cached, authorization)
        if status == 304:
            if cached is None:
                raise BadAnswer(f"GitHub answered {what} with 304 Not Modified, but nothing was asked conditionally",
                                304)
            self._count("not_modified")
            with self._cache_lock:
                if url in self._cache:
                    self._cache.move_to_end(url)
            if not isinstance(cached.data, model):  # pragma: no cover - one URL is always read by one model
                raise BadAnswer(f"the cached answer to {what} is not a {model.__name__}")
            return Reply(200, cached.data, cached.next_url, cached=True)
        if status not in ok:
            raise GitHubError(self._refusal(what, status, content), status)
        data = self._parse(model, what, response, content)
        next_url = self._next(response, what)
        etag = response.headers.get("etag", "")
        if conditional and method == "GET" and _ETAG.match(etag):
            with self._cache_lock:
                self._cache[url] = _Cached(etag, data, next_url)
                self._cache.move_to_end(url)
                while len(self._cache) > self.cache_entries:
                    self._cache.popitem(last=False)
        return Reply(status, data, next_url)

    def delete(self, path: str, *, ok: tuple[int, ...] = (204,)) -> int:
        """A DELETE (no answer body to read); a GitHubError for any status not in `ok`."""
        url = self._url(path, None)
        what = f"DELETE {self._shown(url)}"
        status, _, content = self._exchange("DELETE", url, what, None, None, None)
        if status not in ok:
            raise GitHubError(self._refusal(what, status, content), status)
        return status

    def pages(self, path: str, model: type[Page[T]], params: Mapping[str, Any] | None = None) -> Iterator[T]:
        """Every item of a paginated listing, every page conditional, at most `max_pages` pages."""
        url = self._url(path, {**(params or {}), "per_page": PER_PAGE})
        read: set[str] = set()
        while True:
            if len(read) >= self.max_pages:
                raise GitHubError(f"GET {self._shown(path)} has more than {self.max_pages} pages of {PER_PAGE}; "
                                  "narrow the listing")
            read.add(url)
            reply = self.request("GET", url, model, conditional=True)
            yield from reply.data.items
            if reply.next_url is None:
                return
            if reply.next_url in read:
                raise BadAnswer(f"GitHub's answer to GET {self._shown(url)} links back to a page already read; "
                                "the listing was not finished")
            url = reply.next_url

    def rate_limit(self) -> RateLimit:
        """GET /rate_limit (it does not count against the limit): the core limit, also kept in `rate`."""
        core = self.request("GET", "/rate_limit", RateLimitAnswer).data.resources.core
        with self._lock:
            self.rate = RateLimit(core.limit, core.remaining, float(core.reset), core.used, "core")
            return self.rate

    def forget_untouched(self, keep_prefix: str = "") -> int:
        """Drop cached pages not asked for since the last call (finished runs' job listings), so the
        cache stays as large as the current demand; pages under `keep_prefix` stay. Returns how many."""
        with self._cache_lock:
            stale = [url for url in self._cache if url not in self._touched
                     and not (keep_prefix and url.startswith(keep_prefix))]
            for url in stale:
                del self._cache[url]
            self._touched = set()
        return len(stale)

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    # -- one exchange, with retries ---------------------------------------------------------------------

    def _exchange(self, method: str, url: str, what: str, body: Mapping[str, Any] | None, cached: _Cached | None,
                  authorization: str | None) -> tuple[int, httpx.Response, bytes]:
        """Send until GitHub answers something that is not a rate limit, a 5xx or a lost connection;
        a 401 to an App's cached token fetches a new one once."""
        delay = self.backoff
        attempt = 0
        renewed = False
        while True:
            self._respect_block(what)
            headers = {"Authorization": authorization or self.auth.authorization(self)}
            if cached is not None:
                headers["If-None-Match"] = cached.etag
            try:
                self._count("calls")
                response, content = self._send(method, url, what, headers, body)
            except httpx.HTTPError as exc:
                self._count("errors")
                attempt += 1
                if attempt > self.retries:
                    raise GitHubError(f"GitHub did not answer {what}: {type(exc).__name__}; check the API address "
                                      f"({self.api_url}) and the network") from None
                self._wait(delay)
                delay = min(delay * 2, 60.0)
                continue
            self._note_rate(response.headers)
            status = response.status_code
            until = self._limited_until(status, response.headers)
            if until is not None:
                self._count("errors")
                self._block(until)
                attempt += 1
                if attempt > self.retries:
                    raise RateLimited(f"GitHub kept answering {what} with its rate limit", self.blocked_until)
                continue
            if status >= 500:
                self._count("errors")
                attempt += 1
                if attempt > self.retries:
                    raise GitHubError(f"GitHub kept failing {what}: HTTP {status} after {attempt} attempts; see "
                                      "https://www.githubstatus.com", status)
                self._wait(delay)
                delay = min(delay * 2, 60.0)
                continue
            if status == 401 and authorization is None and not renewed and self.auth.renew():
                renewed = True
                continue
            return status, response, content

    def _send(self, method: str, url: str, what: str, headers: Mapping[str, str],
              body: Mapping[str, Any] | None) -> tuple[httpx.Response, bytes]:
        """One request; the body read in chunks and refused past `max_body` (also after decompression)."""
        request = self._http.build_request(method, url, headers=dict(headers), json=body)
        response = self._http.send(request, stream=True)
        try:
            declared = _header_int(response.headers, "content-length")
            if declared is not None and declared > self.max_body:
                raise self._too_big(what)
            chunks: list[bytes] = []
            size = 0
            try:
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self.max_body:
                        raise self._too_big(what)
                    chunks.append(chunk)
            except httpx.DecodingError:
                raise BadAnswer(f"GitHub's answer to {what} could not be decompressed "
                                f"(Content-Encoding {printable(response.headers.get('content-encoding', '?')[:40])})",
                                response.status_code) from None
        finally:
            response.close()
        return response, b"".join(chunks)

    def _too_big(self, what: str) -> BadAnswer:
        return BadAnswer(f"GitHub's answer to {what} is larger than {self.max_body // (1024 * 1024)} MiB; "
                         "not read (a page of 100 items is far smaller)")

    # -- rate limits -----------------------------------------------------------------------------------

    def _respect_block(self, what: str) -> None:
        wait = self.blocked_until - time.time()
        if wait <= 0:
            return
        if wait > self.max_inline_wait:
            resume = time.strftime("%H:%M:%S", time.localtime(self.blocked_until))
            raise RateLimited(f"GitHub's rate limit: no calls until {resume} ({what} not sent)", self.blocked_until)
        self._wait(wait)

    def _block(self, until: float) -> None:
        with self._lock:
            self.blocked_until = max(self.blocked_until, min(until, time.time() + MAX_BLOCK))

    def _note_rate(self, headers: Mapping[str, str]) -> None:
        remaining = _header_int(headers, "x-ratelimit-remaining")
        if remaining is None:
            return
        reset = _header_int(headers, "x-ratelimit-reset")
        with self._lock:
            self.rate = RateLimit(limit=_header_int(headers, "x-ratelimit-limit"), remaining=remaining,
                                  reset=float(min(reset, time.time() + MAX_BLOCK)) if reset is not None else None,
                                  used=_header_int(headers, "x-ratelimit-used"),
                                  resource=printable(headers.get("x-ratelimit-resource", "")[:40]))
        if remaining == 0 and reset is not None:
            self._block(reset + 1.0)  # the next call would only be refused

    @staticmethod
    def _limited_until(status: int, headers: Mapping[str, str]) -> float | None:
        """When a 403/429 is a rate limit: the epoch second GitHub allows the next call."""
        if status not in (403, 429):
            return None
        retry_after = headers.get("retry-after")
        if retry_after is not None:
            try:
                return time.time() + min(max(0.0, float(retry_after)), MAX_BLOCK)
            except ValueError:
                pass
            try:
                return email.utils.parsedate_to_datetime(retry_after).timestamp()
            except (TypeError, ValueError, IndexError, OverflowError):
                return time.time() + 60.0
        if headers.get("x-ratelimit-remaining") == "0":
            reset = _header_int(headers, "x-ratelimit-reset")
            return float(reset) + 1 if reset is not None else time.time() + 60.0
        if status == 429:
            return time.time() + 60.0  # GitHub's advice for a secondary limit without Retry-After
        return None

    # -- reading answers -----------------------------------------------------------------------------

    def _parse(self, model: type[M], what: str, response: httpx.Response, content: bytes) -> M:
        try:
            return model.model_validate_json(content)
        except ValidationError as error:
            raise BadAnswer(self._malformed(what, error, response, content), response.status_code) from None
        except (ValueError, RecursionError):  # pragma: no cover - pydantic reports bad JSON as a ValidationError
            raise BadAnswer(f"GitHub's answer to {what} is not JSON", response.status_code) from None

    def _malformed(self, what: str, error: ValidationError, response: httpx.Response, content: bytes) -> str:
        problems = error.errors(include_url=False, include_input=False, include_context=False)
        if any(problem["type"] == "json_invalid" for problem in problems):
            kind = printable(response.headers.get("content-type", "")[:60]) or "no Content-Type"
            head = content.lstrip()[:15].lower()
            if not content.strip():
                shape = "an empty body"
            elif "html" in kind or head.startswith((b"<!doctype", b"<html", b"<")):
                shape = f"an HTML page ({kind}, {len(content)} bytes)"
            else:
                shape = f"not JSON ({kind}, {len(content)} bytes: {printable(problems[0]['msg'][:80])})"
            return (f"GitHub's answer to {what} is {shape}; is {self.api_url} GitHub's REST API "
                    "(https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise), with no proxy or "
                    "login page in between?")
        lines = []
        for problem in problems[:3]:
            where = ".".join(str(part) for part in problem["loc"]) or "the answer"
            lines.append(f"{printable(where[:80])}: {printable(problem['msg'][:120])}")
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        return (f"GitHub's answer to {what} is not what its API documents: {'; '.join(lines)}{more}; "
                "nothing was done with it")

    def _next(self, response: httpx.Response, what: str) -> str | None:
        if "link" not in response.headers:
            return None
        try:
            target = response.links.get("next", {}).get("url")
        except (ValueError, KeyError, IndexError):
            target = None
        if not target:
            return None
        if not self._within_api(target):
            raise BadAnswer(f"GitHub's answer to {what} links its next page outside {self.api_url}; not followed "
                            "(the token would travel with it)")
        return target

    def _refusal(self, what: str, status: int, content: bytes) -> str:
        message = ""
        try:
            data = json.loads(content)
            if isinstance(data, dict) and isinstance(data.get("message"), str):
                message = " " + printable(self._redact(data["message"])[:200])
        except (ValueError, RecursionError):
            pass
        hint = {401: f"the credentials are invalid or expired: renew {self.auth.source}",
                403: "the credentials lack a permission: runners need Administration (read; read/write to register "
                     "and delete them), workflow runs and jobs need Actions read",
                404: "check the repository / organisation name and that the credentials can see it",
                409: "it exists already",
                422: "GitHub rejected the request"}.get(status, "see GitHub's message")
        return f"GitHub refused {what}: HTTP {status}{message}; {hint}"

    # -- small helpers -------------------------------------------------------------------------------

    def _url(self, path: str, params: Mapping[str, Any] | None) -> str:
        if path.startswith(("http://", "https://")):
            if not self._within_api(path):
                raise GitHubError(f"{self._shown(path)} is not under {self.api_url}; not asked")
            url = path
        else:
            url = f"{self.api_url}/{path.lstrip('/')}"
        if params:
            url += ("&" if "?" in url else "?") + urlencode(dict(params))
        return url

    def _within_api(self, url: str) -> bool:
        """Same scheme, host and port as the API, under its path, no credentials in it."""
        if len(url) > 4096 or not url.isprintable() or " " in url:
            return False
        try:
            target = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            return False
        base = self._base
        return ((target.scheme, target.host, target.port) == (base.scheme, base.host, base.port)
                and not target.userinfo and target.path.startswith(base.path) and "/../" not in target.path + "/")

    def _shown(self, url: str) -> str:
        """A URL as messages show it: relative to the API, printable, not too long."""
        text = url[len(self.api_url):] if url.startswith(self.api_url) else url
        return printable(text[:200])

    def _redact(self, text: str) -> str:
        for secret in self.auth.secrets():
            if secret:
                text = text.replace(secret, "***")
        return text

    def _cached(self, url: str) -> _Cached | None:
        with self._cache_lock:  # a poll fetches several listings at once
            self._touched.add(url)
            return self._cache.get(url)

    def _wait(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self._sleep is not None:
            self._sleep(seconds)
        elif self._stop.wait(seconds):
            raise Stopping("stopping")

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

