"""GitHub's REST API, as the allocator needs it: demand, runners, just-in-time configs.

Polling is cheap because every GET is conditional: the ETag of each page is kept and sent
back as `If-None-Match`; a `304 Not Modified` costs no rate limit and the cached body is used.
Pages follow the `Link: <...>; rel="next"` header. Every answer's `X-RateLimit-*` headers are
kept (`rate`); a 403/429 carrying `Retry-After` (secondary limits) or `X-RateLimit-Remaining: 0`
(the primary limit) stops all calls until the time GitHub names: a short wait is slept here,
a long one raises `RateLimited` so the caller reports it and carries on. 5xx answers and lost
connections are retried with exponential backoff. The token (or a GitHub App's installation
token) only ever travels in the Authorization header; nothing here logs a header or a body.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from ci.errors import CIError

API_VERSION = "2022-11-28"
PER_PAGE = 100


class GitHubError(CIError):
    """GitHub refused a request, or did not answer after the retries."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


class RateLimited(GitHubError):
    """GitHub asked us to wait until `until` (epoch seconds) before the next call."""

    def __init__(self, message: str, until: float):
        super().__init__(message, 429)
        self.until = until


class Stopping(CIError):
    """A wait was cut short because the allocator is shutting down."""


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
class Answer:
    status: int
    body: Any
    headers: Mapping[str, str]
    next_url: str | None = None
    cached: bool = False


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return None


class GitHubApp:
    """Installation tokens of a GitHub App: a JWT signed with the App's key, exchanged for an hour's token."""

    def __init__(self, app_id: int, installation_id: int, private_key_file: str):
        self.app_id = app_id
        self.installation_id = installation_id
        self.private_key_file = private_key_file
        self._token = ""
        self._expires = 0.0
        self._lock = threading.Lock()

    def jwt(self, now: float | None = None) -> str:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        try:
            with open(self.private_key_file, "rb") as handle:
                key = serialization.load_pem_private_key(handle.read(), password=None)
        except (OSError, ValueError) as exc:
            raise CIError(f"cannot read the GitHub App key {self.private_key_file} "
                          f"(ci.runners.github.app.private_key_file): {type(exc).__name__}; give the .pem file "
                          "GitHub generated for the App, readable by this user only") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise CIError(f"{self.private_key_file} is not an RSA key; GitHub Apps sign with RSA")
        moment = int(now if now is not None else time.time())

        def part(data: Mapping[str, Any]) -> bytes:
            return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).rstrip(b"=")

        signing_input = part({"alg": "RS256", "typ": "JWT"}) + b"." + part(
            {"iat": moment - 60, "exp": moment + 540, "iss": str(self.app_id)})
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()

    def token(self, client: httpx.Client, api_url: str) -> str:
        with self._lock:
            if self._token and time.time() < self._expires - 300:
                return self._token
            response = client.post(f"{api_url}/app/installations/{self.installation_id}/access_tokens",
                                   headers={"Authorization": f"Bearer {self.jwt()}",
                                            "Accept": "application/vnd.github+json"})
            if response.status_code != 201:
                raise GitHubError(f"GitHub refused an installation token for App {self.app_id} "
                                  f"(HTTP {response.status_code}); check app_id, installation_id and that the "
                                  "App may manage self-hosted runners", response.status_code)
            data = response.json()
            self._token = str(data["token"])
            self._expires = _parse_time(str(data.get("expires_at", ""))) or time.time() + 3000
            return self._token


def _parse_time(text: str) -> float | None:
    import datetime

    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class GitHubClient:
    """A small REST client: conditional GETs, pagination, rate limits and retries."""

    def __init__(self, api_url: str, *, token: str | None = None, app: GitHubApp | None = None,
                 timeout: float = 30.0, retries: int = 5, backoff: float = 1.0, max_inline_wait: float = 10.0,
                 cache_entries: int = 4096, stop: threading.Event | None = None,
                 sleep: Callable[[float], None] | None = None, transport: httpx.BaseTransport | None = None):
        if not token and app is None:
            raise CIError("a GitHub token or App is needed")
        self.api_url = api_url.rstrip("/")
        self._token = token
        self._app = app
        self.retries = retries
        self.backoff = backoff
        self.max_inline_wait = max_inline_wait
        self.cache_entries = cache_entries
        self._stop = stop or threading.Event()
        self._sleep = sleep
        self._http = httpx.Client(timeout=timeout, transport=transport, follow_redirects=False,
                                  headers={"Accept": "application/vnd.github+json",
                                           "X-GitHub-Api-Version": API_VERSION,
                                           "User-Agent": "containers-ci-runners"})
        self._cache: OrderedDict[str, Answer] = OrderedDict()
        self._touched: set[str] = set()
        self._cache_lock = threading.Lock()
        self._lock = threading.Lock()
        self.rate = RateLimit()
        self.blocked_until = 0.0
        self.calls = 0
        self.not_modified = 0
        self.errors = 0

    def close(self) -> None:
        self._http.close()

    # -- waiting ------------------------------------------------------------------------------

    def _wait(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self._sleep is not None:
            self._sleep(seconds)
        elif self._stop.wait(seconds):
            raise Stopping("stopping")

    def _authorization(self) -> str:
        if self._app is not None:
            return f"Bearer {self._app.token(self._http, self.api_url)}"
        return f"Bearer {self._token}"

    # -- one request --------------------------------------------------------------------------

    def _url(self, path: str, params: Mapping[str, Any] | None) -> str:
        url = path if path.startswith("http") else f"{self.api_url}{path}"
        if params:
            url += ("&" if "?" in url else "?") + urlencode(dict(params))
        return url

    def _note_rate(self, headers: Mapping[str, str]) -> None:
        remaining = _header_int(headers, "x-ratelimit-remaining")
        if remaining is None:
            return
        reset = _header_int(headers, "x-ratelimit-reset")
        with self._lock:
            self.rate = RateLimit(limit=_header_int(headers, "x-ratelimit-limit"), remaining=remaining,
                                  reset=float(reset) if reset is not None else None,
                                  used=_header_int(headers, "x-ratelimit-used"),
                                  resource=headers.get("x-ratelimit-resource", ""))

    def _limited_until(self, response: httpx.Response) -> float | None:
        """When a 403/429 is a rate limit: the epoch second GitHub allows the next call."""
        if response.status_code not in (403, 429):
            return None
        retry_after = response.headers.get("retry-after")
        if retry_after is not None:
            try:
                return time.time() + max(0.0, float(retry_after))
            except ValueError:
                return time.time() + 60.0
        if response.headers.get("x-ratelimit-remaining") == "0":
            reset = _header_int(response.headers, "x-ratelimit-reset")
            return float(reset) + 1 if reset is not None else time.time() + 60.0
        if response.status_code == 429:
            return time.time() + 60.0  # GitHub's advice for a secondary limit without Retry-After
        return None

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                body: Mapping[str, Any] | None = None, conditional: bool = False,
                ok: tuple[int, ...] = (200, 201, 204)) -> Answer:
        """One call with retries. `conditional` GETs use and refresh the ETag cache."""
        url = self._url(path, params)
        cached = None
        if conditional:
            with self._cache_lock:  # a poll fetches several listings at once
                cached = self._cache.get(url)
                self._touched.add(url)
        delay = self.backoff
        attempt = 0
        while True:
            now = time.time()
            if self.blocked_until > now:
                if self.blocked_until - now > self.max_inline_wait:
                    resume = time.strftime("%H:%M:%S", time.localtime(self.blocked_until))
                    raise RateLimited(f"GitHub's rate limit: no calls until {resume}", self.blocked_until)
                self._wait(self.blocked_until - now)
            headers = {"Authorization": self._authorization()}
            etag = cached.headers.get("etag") if cached is not None else None
            if etag:
                headers["If-None-Match"] = etag
            try:
                self._count("calls")
                response = self._http.request(method, url, headers=headers, json=body)
            except httpx.HTTPError as exc:
                self._count("errors")
                attempt += 1
                if attempt > self.retries:
                    raise GitHubError(f"GitHub did not answer {method} {path}: {type(exc).__name__}; check "
                                      f"ci.runners.github.api_url ({self.api_url}) and the network") from None
                self._wait(delay)
                delay = min(delay * 2, 60.0)
                continue
            self._note_rate(response.headers)
            if response.status_code == 304 and cached is not None:
                self._count("not_modified")
                with self._cache_lock:
                    if url in self._cache:
                        self._cache.move_to_end(url)
                return Answer(200, cached.body, cached.headers, cached.next_url, cached=True)
            until = self._limited_until(response)
            if until is not None:
                self._count("errors")
                self.blocked_until = max(self.blocked_until, until)
                attempt += 1
                if attempt > self.retries:
                    raise RateLimited("GitHub kept answering with its rate limit", self.blocked_until)
                continue
            if response.status_code >= 500:
                self._count("errors")
                attempt += 1
                if attempt > self.retries:
                    raise GitHubError(f"GitHub answered {method} {path} with HTTP {response.status_code} "
                                      f"{attempt} times; see https://www.githubstatus.com", response.status_code)
                self._wait(delay)
                delay = min(delay * 2, 60.0)
                continue
            if response.status_code not in ok:
                raise GitHubError(_refusal(method, path, response), response.status_code)
            data = response.json() if response.content else None
            next_link = response.links.get("next", {}).get("url")
            answer = Answer(response.status_code, data, {k.lower(): v for k, v in response.headers.items()
                                                        if k.lower() in ("etag", "link")}, next_link)
            if conditional and "etag" in answer.headers:
                with self._cache_lock:
                    self._cache[url] = answer
                    self._cache.move_to_end(url)
                    while len(self._cache) > self.cache_entries:
                        self._cache.popitem(last=False)
            return answer

    def pages(self, path: str, key: str, params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every item of a paginated listing (`key` names the list in each page's body)."""
        url: str | None = self._url(path, {**(params or {}), "per_page": PER_PAGE})
        seen = 0
        while url is not None:
            answer = self.request("GET", url, conditional=True)
            items = (answer.body or {}).get(key) or []
            yield from items
            seen += 1
            url = answer.next_url
            if seen > 1000:
                raise GitHubError(f"{path} has more than 1000 pages; narrow the listing")

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

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    @property
    def cache_size(self) -> int:
        return len(self._cache)


def _refusal(method: str, path: str, response: httpx.Response) -> str:
    try:
        message = str(response.json().get("message", ""))
    except ValueError:
        message = ""
    hint = {401: "the token is invalid or expired: renew CI_GITHUB_TOKEN",
            403: "the token lacks a permission: it needs Administration read/write (runners) and Actions read",
            404: "check ci.runners.github.repository / organisation and that the token can see it",
            422: "GitHub rejected the request body"}.get(response.status_code, "see GitHub's message")
    return f"GitHub refused {method} {path}: HTTP {response.status_code} {message[:200]}; {hint}"


class Scope:
    """Where runners are registered: the repository, or (optionally) its organisation."""

    def __init__(self, repository: str, organisation: str | None = None):
        self.repository = repository
        self.organisation = organisation

    @property
    def runners_path(self) -> str:
        if self.organisation:
            return f"/orgs/{self.organisation}/actions/runners"
        return f"/repos/{self.repository}/actions/runners"


class GitHubActions:
    """The few Actions endpoints the allocator calls."""

    def __init__(self, client: GitHubClient, scope: Scope):
        self.client = client
        self.scope = scope

    def runs(self, status: str) -> list[dict[str, Any]]:
        return list(self.client.pages(f"/repos/{self.scope.repository}/actions/runs", "workflow_runs",
                                      {"status": status}))

    def jobs(self, run_id: int) -> list[dict[str, Any]]:
        return list(self.client.pages(f"/repos/{self.scope.repository}/actions/runs/{run_id}/jobs", "jobs",
                                      {"filter": "latest"}))

    def runners(self) -> list[dict[str, Any]]:
        return list(self.client.pages(self.scope.runners_path, "runners"))

    def delete_runner(self, runner_id: int) -> bool:
        """True when deleted now, False when GitHub no longer had it."""
        try:
            self.client.request("DELETE", f"{self.scope.runners_path}/{runner_id}", ok=(204,))
        except GitHubError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def generate_jitconfig(self, name: str, labels: list[str], runner_group_id: int,
                           work_folder: str) -> tuple[int, str]:
        """(runner id, encoded JIT config). The config is a secret: keep it off argv, logs and reports."""
        answer = self.client.request("POST", f"{self.scope.runners_path}/generate-jitconfig", ok=(201,),
                                     body={"name": name, "runner_group_id": runner_group_id, "labels": labels,
                                           "work_folder": work_folder})
        body = answer.body or {}
        try:
            return int(body["runner"]["id"]), str(body["encoded_jit_config"])
        except (KeyError, TypeError, ValueError):
            raise GitHubError("GitHub's generate-jitconfig answer has no runner id or encoded_jit_config") from None

    def rate_limit(self) -> RateLimit:
        """GET /rate_limit (does not count against the limit)."""
        answer = self.client.request("GET", "/rate_limit")
        core = ((answer.body or {}).get("resources") or {}).get("core") or {}
        if core:
            self.client.rate = RateLimit(core.get("limit"), core.get("remaining"), core.get("reset"),
                                         core.get("used"), "core")
        return self.client.rate
