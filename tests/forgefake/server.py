"""The fake forge's HTTP server, its pull-request store and its fault injection.

One `FakeForge` is one forge of one flavour (github, gitea or gitlab) holding one repository,
OWNER/NAME, as a real bare repository under ROOT. What it serves:

- git over HTTP at `/OWNER/NAME.git` through `git http-backend`, only with the token as the
  Basic-auth password (git is challenged with 401 first, as real forges do);
- the REST subset Ferry calls, under `/api/v3` (GitHub Enterprise Server's layout), `/api/v1`
  (Gitea) or `/api/v4` (GitLab), with each vendor's status codes, error bodies, pagination headers
  and rate-limit headers, as their API documentation describes them.

Merges are real: `git merge-tree --write-tree` then `git commit-tree`, and main is moved by a
compare-and-swap `update-ref`, so a merge never loses a concurrent push.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import threading
import time
from base64 import b64decode
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

# How long after answering 429 a request may still arrive that was sent before the answer was read
# (on a busy machine a process can stall that long between asking the budget and sending)
LIMIT_GRACE_S = 1.0
API_PREFIX = {"github": "/api/v3", "gitea": "/api/v1", "gitlab": "/api/v4"}
# Documented page sizes: (default, maximum)
PAGE_SIZE = {"github": (30, 100), "gitea": (30, 50), "gitlab": (20, 100)}


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _iso(at: datetime | None) -> str | None:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ") if at else None


@dataclass
class Fault:
    """An answer the fake gives instead of (or, with AFTER, after) doing what was asked.

    METHOD and PATH (a regex searched in the path after the API prefix) choose the requests; TIMES
    is how many of them it hits. DELAY sleeps first (a timeout, when longer than the client's)."""

    status: int
    method: str | None = None
    path: str | None = None
    times: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    after: bool = False
    delay: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or re.search(self.path, path) is not None
        )


@dataclass
class FakePR:
    number: int
    title: str
    body: str
    head: str
    base: str
    author: str
    created_at: datetime
    updated_at: datetime
    state: str = "open"  # open | closed
    merged: bool = False
    merge_commit: str | None = None
    merged_head: str | None = None
    merged_at: datetime | None = None
    closed_at: datetime | None = None
    labels: list[str] = field(default_factory=list)
    comments: list[dict[str, Any]] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    # GitHub computes mergeability in the background: the first read after a change says null.
    mergeable_known: bool = False


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["git", f"--git-dir={repo}", *args],
        capture_output=True,
        text=True,
        env={
            "GIT_AUTHOR_NAME": "Fake Forge",
            "GIT_AUTHOR_EMAIL": "forge@localhost",
            "GIT_COMMITTER_NAME": "Fake Forge",
            "GIT_COMMITTER_EMAIL": "forge@localhost",
            "PATH": "/usr/bin:/bin:/usr/local/bin",
        },
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {proc.stderr}")
    return proc


class FakeForge:
    """A forge of FLAVOUR holding OWNER/NAME; `start()` serves it on 127.0.0.1."""

    def __init__(
        self,
        root: Path,
        flavour: str,
        *,
        token: str = "fake-token-0123456789",
        owner: str = "acme",
        name: str = "gitops",
        user: str = "ferry-bot",
    ) -> None:
        if flavour not in API_PREFIX:
            raise ValueError(f"flavour must be one of {', '.join(API_PREFIX)}")
        self.root = Path(root)
        self.flavour = flavour
        self.token = token
        self.owner = owner
        self.name = name
        self.user = user
        self.repos = self.root / "repos"
        self.repo = self.repos / owner / f"{name}.git"
        self.repo.parent.mkdir(parents=True, exist_ok=True)
        if not self.repo.exists():
            subprocess.run(
                ["git", "init", "-q", "--bare", "-b", "main", str(self.repo)], check=True
            )
            _git(self.repo, "config", "http.receivepack", "true")
        self.pulls: dict[int, FakePR] = {}
        self.statuses: dict[str, list[dict[str, Any]]] = {}
        self.label_ids: dict[str, int] = {}
        self.protected: dict[str, str] = {}  # branch -> the refusal message of a merge into it
        self.read_only = False
        self.faults: list[Fault] = []
        self.transient_rate = 0.0
        # what a random transient failure may be ("after": the write is done, the answer is a 502)
        self.transient_kinds = ["500", "502", "503", "429", "secondary", "after"]
        self.rng = random.Random(8)
        # Seconds every request waits before it is handled (outside the lock), as a forge across
        # a network answers later than one on this machine (bench.forges --latency-ms).
        self.latency = 0.0
        self.before_merge: list[Any] = []  # callables run once each, before the next merge
        # What happened, for the tests to check.
        self.requests: list[dict[str, Any]] = []
        self.violations: list[str] = []  # requests sent before a Retry-After allowed them
        self.blocked_until = 0.0
        self.limited_at = 0.0
        self.rate_limit = 5000
        self.max_page: int | None = None  # a smaller page cap than the vendor's, to test paging
        self.lock = threading.RLock()
        self._next_id = 1000
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle and URLs

    def start(self) -> FakeForge:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.forge = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeForge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake forge first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def api_url(self) -> str:
        return self.base_url + API_PREFIX[self.flavour]

    @property
    def clone_url(self) -> str:
        return f"{self.base_url}/{self.owner}/{self.name}.git"

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    def settings_env(self) -> dict[str, str]:
        """The FERRY_* variables that point Ferry at this forge."""
        return {
            "FERRY_FORGE": self.flavour,
            "FERRY_FORGE_URL": self.api_url,
            "FERRY_GITOPS_REPO": self.clone_url,
            "FERRY_FORGE_TOKEN": self.token,
        }

    def seed(self, source: Path) -> None:
        """Push SOURCE's main (a repository on disk) into the forge's repository."""
        subprocess.run(
            ["git", "push", "-q", str(self.repo), "main:refs/heads/main"],
            cwd=source,
            check=True,
            capture_output=True,
        )

    # ------------------------------------------------------------------ what tests inject

    def fail(self, status: int, **kw: Any) -> Fault:
        fault = Fault(status=status, **kw)
        with self.lock:
            self.faults.append(fault)
        return fault

    def add_review(self, number: int, user: str, state: str, body: str = "") -> None:
        """A person's review: state approved, changes_requested or commented."""
        with self.lock:
            pr = self.pulls[number]
            self._next_id += 1
            pr.reviews.append(
                {
                    "id": self._next_id,
                    "user": user,
                    "state": state,
                    "body": body,
                    "at": _now(),
                    "sha": self.branch_sha(pr.head),
                }
            )

    def writes(self) -> list[dict[str, Any]]:
        """The content-creating API requests answered with success (git pushes not counted)."""
        return [
            r
            for r in self.requests
            if r["api"] and r["method"] in ("POST", "PUT", "PATCH", "DELETE") and r["status"] < 300
        ]

    # ------------------------------------------------------------------ git state

    def branch_sha(self, branch: str) -> str | None:
        out = _git(
            self.repo,
            "rev-parse",
            "--verify",
            "--quiet",
            f"refs/heads/{branch}^{{commit}}",
            check=False,
        )
        return out.stdout.strip() or None

    def show(self, ref: str, path: str) -> str:
        return _git(self.repo, "show", f"{ref}:{path}").stdout

    def head_sha(self, pr: FakePR) -> str | None:
        return pr.merged_head if pr.merged else self.branch_sha(pr.head)

    def mergeable(self, pr: FakePR) -> bool | None:
        if pr.merged or pr.state != "open":
            return None if not pr.merged else False
        if not pr.mergeable_known:
            pr.mergeable_known = True
            return None
        head, base = self.branch_sha(pr.head), self.branch_sha(pr.base)
        if head is None or base is None:
            return False
        return (
            _git(self.repo, "merge-tree", "--write-tree", base, head, check=False).returncode == 0
        )

    # ------------------------------------------------------------------ the operations

    def open_pr(self, *, head: str, base: str, title: str, body: str, labels: list[str]) -> FakePR:
        if not title:
            raise ApiError(422, "Validation Failed: title is missing")
        if self.branch_sha(head) is None:
            raise ApiError(422, f"Validation Failed: head '{head}' does not exist")
        if self.branch_sha(base) is None:
            raise ApiError(422, f"Validation Failed: base '{base}' does not exist")
        for pr in self.pulls.values():
            if pr.head == head and pr.base == base and pr.state == "open":
                raise _exists(self.flavour, self.owner, pr)
        now = _now()
        number = max(self.pulls, default=0) + 1
        pr = FakePR(
            number=number,
            title=title,
            body=body,
            head=head,
            base=base,
            author=self.user,
            created_at=now,
            updated_at=now,
            labels=list(dict.fromkeys(labels)),
        )
        self.pulls[number] = pr
        return pr

    def pr(self, number: int) -> FakePR:
        try:
            return self.pulls[number]
        except KeyError:
            raise ApiError(404, "Not Found") from None

    def merge(self, pr: FakePR, *, method: str, sha: str | None, message: str | None) -> str:
        """Merge PR into its base; return the new base commit. Errors as ApiError with a neutral
        status the flavour handler translates: 405 not mergeable, 409 head moved, 403 protected."""
        for hook in list(self.before_merge):
            self.before_merge.remove(hook)
            hook(pr)
        if pr.merged:
            raise ApiError(405, "Pull Request is not mergeable: it is already merged")
        if pr.state != "open":
            raise ApiError(405, "Pull Request is not mergeable: it is closed")
        if pr.base in self.protected:
            raise ApiError(403, self.protected[pr.base])
        head = self.branch_sha(pr.head)
        base = self.branch_sha(pr.base)
        if head is None or base is None:
            raise ApiError(405, "Pull Request is not mergeable: a branch is missing")
        if sha is not None and sha != head:
            raise ApiError(409, "Head branch was modified. Review and try the merge again.")
        tree = _git(self.repo, "merge-tree", "--write-tree", base, head, check=False)
        if tree.returncode != 0:
            raise ApiError(405, "Pull Request is not mergeable")
        tree_id = tree.stdout.split()[0]
        if method == "merge":
            msg = message or f"Merge pull request #{pr.number} from {self.owner}/{pr.head}"
            parents = ["-p", base, "-p", head]
        else:  # squash and rebase both land one commit on top of the base (Ferry's PRs have one)
            msg = message or _git(self.repo, "log", "-1", "--format=%B", head).stdout
            parents = ["-p", base]
        commit = _git(self.repo, "commit-tree", tree_id, *parents, "-m", msg).stdout.strip()
        moved = _git(self.repo, "update-ref", f"refs/heads/{pr.base}", commit, base, check=False)
        if moved.returncode != 0:
            raise ApiError(405, "Base branch was modified. Review and try the merge again.")
        now = _now()
        pr.merged, pr.state, pr.merge_commit, pr.merged_head = True, "closed", commit, head
        pr.merged_at = pr.closed_at = pr.updated_at = now
        return commit

    def comment(self, pr: FakePR, body: str) -> dict[str, Any]:
        self._next_id += 1
        c = {"id": self._next_id, "user": self.user, "body": body, "at": _now()}
        pr.comments.append(c)
        pr.updated_at = c["at"]
        return c

    def set_status(self, sha: str, context: str, state: str, description: str) -> dict[str, Any]:
        if _git(self.repo, "cat-file", "-e", f"{sha}^{{commit}}", check=False).returncode != 0:
            raise ApiError(422, f"No commit found for SHA: {sha}")
        self._next_id += 1
        s = {
            "id": self._next_id,
            "context": context,
            "state": state,
            "description": description,
            "at": _now(),
        }
        self.statuses.setdefault(sha, []).insert(0, s)
        return s

    def latest_statuses(self, sha: str) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        for s in self.statuses.get(sha, []):
            seen.setdefault(s["context"], s)
        return list(seen.values())

    def label_id(self, name: str) -> int:
        if name not in self.label_ids:
            self._next_id += 1
            self.label_ids[name] = self._next_id
        return self.label_ids[name]


def _exists(flavour: str, owner: str, pr: FakePR) -> ApiError:
    if flavour == "github":
        return ApiError(
            422, f"Validation Failed: A pull request already exists for {owner}:{pr.head}."
        )
    if flavour == "gitea":
        return ApiError(409, f"pull request already exists for these targets [id: {pr.number}]")
    return ApiError(
        409, f"Another open merge request already exists for this source branch: !{pr.number}"
    )


# ---------------------------------------------------------------------- the HTTP layer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: an answer goes out as headers then body, two writes; with Nagle's algorithm the
    # body waited for the client's delayed ACK of the headers, 40 ms on every request (a forge's
    # server sends at once).
    disable_nagle_algorithm = True
    server: ThreadingHTTPServer
    _sent: Any = None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet in tests
        return

    @property
    def forge(self) -> FakeForge:
        return self.server.forge  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ------------------------------------------------------------------ plumbing

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self,
        status: int,
        payload: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> None:
        data = (
            raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
        )
        self._sent = payload
        try:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if data or status not in (204, 304):
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data:
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a timeout fault): what a real server sees too

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith(("bearer ", "token ")):
            return auth.split(" ", 1)[1].strip()
        if auth.lower().startswith("basic "):
            try:
                return b64decode(auth[6:]).decode().partition(":")[2]
            except ValueError:
                return None
        return self.headers.get("PRIVATE-TOKEN")

    def _dispatch(self, method: str) -> None:
        f = self.forge
        url = urlsplit(self.path)
        path = unquote(url.path) if f.flavour != "gitlab" else url.path
        prefix = API_PREFIX[f.flavour]
        body = self._body()
        token = self._token()
        record = {
            "at": time.time(),
            "method": method,
            "path": url.path,
            "api": False,
            "status": 0,
            "token": token == f.token,
        }
        with f.lock:
            f.requests.append(record)
        if f.latency:
            time.sleep(f.latency)
        if re.match(rf"^/{re.escape(f.owner)}/{re.escape(f.name)}\.git(/|$)", path):
            record["status"] = self._git(method, url, body, token)
            return
        if not path.startswith(prefix + "/"):
            record["status"] = 404
            self._send(404, {"message": "Not Found"})
            return
        record["api"] = True
        status = self._api(method, path[len(prefix) :], parse_qs(url.query), body, token, record)
        record["status"] = status
        # what was asked and answered, for checking both against the vendor's API description
        record["request"] = json.loads(body) if body else None
        record["response"] = self._sent

    # ------------------------------------------------------------------ git over HTTP

    def _git(self, method: str, url: Any, body: bytes, token: str | None) -> int:
        f = self.forge
        if token != f.token:
            self._send(
                401,
                raw=b"Authentication required\n",
                content_type="text/plain",
                headers={"WWW-Authenticate": 'Basic realm="fake forge"'},
            )
            return 401
        env = {
            "PATH": "/usr/bin:/bin:/usr/local/bin",
            "GIT_PROJECT_ROOT": str(f.repos),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": unquote(url.path),
            "QUERY_STRING": url.query,
            "REQUEST_METHOD": method,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "ferry",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        with f.lock:  # one git process at a time: ref updates are what a forge serialises too
            proc = subprocess.run(["git", "http-backend"], input=body, capture_output=True, env=env)
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        status, headers = 200, {}
        for line in head.decode("latin-1").split("\r\n"):
            k, _, v = line.partition(":")
            if k.lower() == "status":
                status = int(v.strip().split()[0])
            elif k:
                headers[k] = v.strip()
        ctype = headers.pop("Content-Type", "application/octet-stream")
        self._send(status, raw=payload, headers=headers, content_type=ctype)
        return status

    # ------------------------------------------------------------------ the API

    def _rate_headers(self) -> dict[str, str]:
        f = self.forge
        hour = int(time.time()) // 3600
        used = sum(1 for r in f.requests if r["api"] and int(r["at"]) // 3600 == hour)
        reset = str((hour + 1) * 3600)
        if f.flavour == "github":
            return {
                "x-ratelimit-limit": str(f.rate_limit),
                "x-ratelimit-remaining": str(max(0, f.rate_limit - used)),
                "x-ratelimit-used": str(used),
                "x-ratelimit-reset": reset,
                "x-ratelimit-resource": "core",
            }
        if f.flavour == "gitlab":
            return {
                "RateLimit-Limit": str(f.rate_limit),
                "RateLimit-Remaining": str(max(0, f.rate_limit - used)),
                "RateLimit-Reset": reset,
            }
        return {}  # Gitea sends no rate-limit headers

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> int:
        f = self.forge
        if f.flavour == "gitlab":
            payload: Any = {"message": message if status != 401 else "401 Unauthorized"}
        elif f.flavour == "gitea":
            payload = {"message": message, "url": f.base_url + "/api/swagger"}
        else:
            payload = {"message": message, "documentation_url": "https://docs.github.com/rest"}
        self._send(status, payload, {**self._rate_headers(), **(headers or {})})
        return status

    def _api(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        body: bytes,
        token: str | None,
        record: dict[str, Any],
    ) -> int:
        f = self.forge
        now = time.time()
        with f.lock:
            # A request already on its way when the limit was answered cannot have known of it:
            # only one that arrives LIMIT_GRACE_S after that answer broke the Retry-After.
            if now < f.blocked_until and now > f.limited_at + LIMIT_GRACE_S and token == f.token:
                f.violations.append(f"{method} {path} sent {f.blocked_until - now:.2f}s early")
        if token != f.token:
            return self._error(401, "Bad credentials")
        fault = self._pick_fault(method, path)
        if fault is not None and fault.delay and not fault.after:
            time.sleep(fault.delay)
        if fault is not None and not fault.after:
            return self._fault(fault)
        if f.read_only and method != "GET":
            msg = (
                "Resource not accessible by integration"
                if f.flavour == "github"
                else "403 Forbidden - token does not have at least one of required scope(s)"
            )
            return self._error(403, msg)
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            return self._error(400, "Problems parsing JSON")
        try:
            with f.lock:
                routes = {"github": _github, "gitea": _gitea, "gitlab": _gitlab}[f.flavour]
                status, payload, headers = routes(f, method, path, query, data)
        except ApiError as e:
            return self._error(e.status, e.message, e.headers)
        if fault is not None:  # AFTER: it was done, and the client hears an error, or nothing
            time.sleep(fault.delay)
            return self._fault(fault)
        self._send(status, payload, {**self._rate_headers(), **headers})
        return status

    def _pick_fault(self, method: str, path: str) -> Fault | None:
        f = self.forge
        with f.lock:
            for fault in f.faults:
                if fault.times > 0 and fault.matches(method, path):
                    fault.times -= 1
                    return fault
            if f.transient_rate and f.rng.random() < f.transient_rate:
                return self._random_fault(method)
        return None

    def _random_fault(self, method: str) -> Fault:
        f = self.forge
        kind = f.rng.choice(f.transient_kinds)
        if kind == "after" and method != "GET":
            return Fault(status=502, after=True)
        if kind == "429":
            return Fault(status=429, headers={"Retry-After": "1"}, body="Too Many Requests")
        if kind == "secondary" and f.flavour == "github":
            return Fault(
                status=403,
                headers={"retry-after": "1"},
                body="You have exceeded a secondary rate limit. Please wait a few "
                "minutes before you try again.",
            )
        return Fault(status=int(kind) if kind.isdigit() else 500)

    def _fault(self, fault: Fault) -> int:
        f = self.forge
        retry_after = fault.headers.get("Retry-After") or fault.headers.get("retry-after")
        if retry_after:
            with f.lock:
                f.limited_at = time.time()
                f.blocked_until = max(f.blocked_until, f.limited_at + float(retry_after))
        message = fault.body if isinstance(fault.body, str) else "Server Error"
        if isinstance(fault.body, dict):
            self._send(fault.status, fault.body, fault.headers)
            return fault.status
        return self._error(fault.status, message, fault.headers)


# ---------------------------------------------------------------------- pagination


def _page(
    f: FakeForge,
    path: str,
    query: dict[str, list[str]],
    items: list[Any],
) -> tuple[list[Any], dict[str, str]]:
    default, most = PAGE_SIZE[f.flavour]
    most = min(most, f.max_page or most)
    size_param = "limit" if f.flavour == "gitea" else "per_page"
    try:
        size = min(most, max(1, int(query.get(size_param, [default])[0])))
        page = max(1, int(query.get("page", ["1"])[0]))
    except ValueError:
        raise ApiError(400, "page and per_page must be numbers") from None
    last = max(1, -(-len(items) // size))
    chunk = items[(page - 1) * size : page * size]
    base = f.api_url + path
    flat = {k: v[0] for k, v in query.items()}

    def link(p: int) -> str:
        return f"<{base}?{urlencode({**flat, 'page': p, size_param: size})}>"

    rels = []
    if page < last:
        rels.append(f'{link(page + 1)}; rel="next"')
        rels.append(f'{link(last)}; rel="last"')
    if page > 1:
        rels.append(f'{link(1)}; rel="first"')
        rels.append(f'{link(page - 1)}; rel="prev"')
    headers = {"Link": ", ".join(rels)} if rels else {}
    if f.flavour == "gitea":
        headers["X-Total-Count"] = str(len(items))
    if f.flavour == "gitlab":
        headers.update(
            {
                "X-Page": str(page),
                "X-Per-Page": str(size),
                "X-Total": str(len(items)),
                "X-Total-Pages": str(last),
                "X-Next-Page": str(page + 1) if page < last else "",
            }
        )
    return chunk, headers


# ---------------------------------------------------------------------- GitHub REST v3

Answer = tuple[int, Any, dict[str, str]]


def _gh_user(login: str) -> dict[str, Any]:
    return {"login": login, "id": abs(hash(login)) % 100000, "type": "User"}


def _gitea_users(value: Any) -> Any:
    """VALUE with its users as Gitea shows them (no GitHub `type`)."""
    if isinstance(value, list):
        return [_gitea_users(v) for v in value]
    if isinstance(value, dict):
        return {
            k: _gitea_users(v) for k, v in value.items() if not (k == "type" and "login" in value)
        }
    return value


def _gh_label(f: FakeForge, name: str) -> dict[str, Any]:
    return {
        "id": f.label_id(name),
        "name": name,
        "color": "ededed",
        "default": False,
        "description": None,
    }


def _gh_pr(f: FakeForge, pr: FakePR, simple: bool = False) -> dict[str, Any]:
    """A pull request as GitHub shows it; SIMPLE: as its list shows it (GitHub's
    pull-request-simple: no merged, no mergeable)."""
    repo = f"{f.base_url}/{f.full_name}"
    head_sha = f.head_sha(pr) or "0" * 40
    out = {
        "id": 10_000 + pr.number,
        "number": pr.number,
        "state": pr.state,
        "title": pr.title,
        "body": pr.body,
        "user": _gh_user(pr.author),
        "labels": [_gh_label(f, n) for n in pr.labels],
        "html_url": f"{repo}/pull/{pr.number}",
        "url": f"{f.api_url}/repos/{f.full_name}/pulls/{pr.number}",
        "created_at": _iso(pr.created_at),
        "updated_at": _iso(pr.updated_at),
        "closed_at": _iso(pr.closed_at),
        "merged_at": _iso(pr.merged_at),
        "merge_commit_sha": pr.merge_commit,
        "head": {"ref": pr.head, "sha": head_sha, "label": f"{f.owner}:{pr.head}"},
        "base": {"ref": pr.base, "sha": f.branch_sha(pr.base), "label": f"{f.owner}:{pr.base}"},
        "draft": False,
    }
    if not simple:
        out.update({"merged": pr.merged, "mergeable": f.mergeable(pr)})
    return out


def _gh_comment(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": c["id"],
        "body": c["body"],
        "user": _gh_user(c["user"]),
        "created_at": _iso(c["at"]),
        "updated_at": _iso(c["at"]),
    }


def _gh_review(r: dict[str, Any]) -> dict[str, Any]:
    state = {
        "approved": "APPROVED",
        "changes_requested": "CHANGES_REQUESTED",
        "commented": "COMMENTED",
    }[r["state"]]
    return {
        "id": r["id"],
        "user": _gh_user(r["user"]),
        "body": r["body"],
        "state": state,
        "submitted_at": _iso(r["at"]),
        "commit_id": r["sha"],
    }


def _status_json(s: dict[str, Any], gitlab: bool = False, gitea: bool = False) -> dict[str, Any]:
    if gitlab:
        state = {"failure": "failed"}.get(s["state"], s["state"])
        return {
            "id": s["id"],
            "name": s["context"],
            "status": state,
            "description": s["description"],
            "created_at": _iso(s["at"]),
        }
    return {
        "id": s["id"],
        "context": s["context"],
        # Gitea calls a commit status's state `status` (its combined status keeps `state`)
        ("status" if gitea else "state"): s["state"],
        "description": s["description"],
        "created_at": _iso(s["at"]),
        "updated_at": _iso(s["at"]),
    }


def _combined(f: FakeForge, sha: str, gitea: bool = False) -> dict[str, Any]:
    latest = f.latest_statuses(sha)
    states = {s["state"] for s in latest}
    state = (
        "failure"
        if states & {"failure", "error"}
        else "pending"
        if ("pending" in states or not latest)
        else "success"
    )
    return {
        "state": state,
        "sha": sha,
        "total_count": len(latest),
        "statuses": [_status_json(s, gitea=gitea) for s in latest],
    }


def _reviews_and_comments(
    f: FakeForge, method: str, path: str, rest: str, query: dict[str, list[str]], data: Any
) -> Answer | None:
    """Reviews and issue comments of a PR, the same routes on GitHub and Gitea."""
    m = re.fullmatch(r"/pulls/(\d+)/reviews", rest)
    if m and method == "GET":
        pr = f.pr(int(m[1]))
        chunk, headers = _page(f, path, query, pr.reviews)
        to_json = _gh_review if f.flavour == "github" else _gitea_review
        return 200, [to_json(r) for r in chunk], headers
    m = re.fullmatch(r"/issues/(\d+)/comments", rest)
    if not m:
        return None
    pr = f.pr(int(m[1]))
    if method == "POST":
        if not data.get("body"):
            github = f.flavour == "github"
            raise ApiError(
                422, "Validation Failed: body is missing" if github else "[Body]: Required"
            )
        return 201, _gh_comment(f.comment(pr, data["body"])), {}
    if f.flavour == "gitea":  # Gitea's comment list is not paginated
        return 200, [_gh_comment(c) for c in pr.comments], {}
    chunk, headers = _page(f, path, query, pr.comments)
    return 200, [_gh_comment(c) for c in chunk], headers


def _github(
    f: FakeForge, method: str, path: str, query: dict[str, list[str]], data: dict[str, Any]
) -> Answer:
    repo = f"/repos/{f.owner}/{f.name}"
    if not path.startswith(repo + "/") and path != repo:
        raise ApiError(404, "Not Found")
    rest = path[len(repo) :]
    if rest == "/pulls" and method == "GET":
        state = query.get("state", ["open"])[0]
        head = query.get("head", [None])[0]
        prs = sorted(f.pulls.values(), key=lambda p: p.number, reverse=True)
        if state != "all":
            prs = [p for p in prs if p.state == state]
        if head is not None:
            # The documented filter is user:ref-name; a bare branch name matches nothing.
            owner, _, ref = head.partition(":")
            prs = [p for p in prs if ref and owner == f.owner and p.head == ref]
        chunk, headers = _page(f, path, query, prs)
        return 200, [_gh_pr(f, p, simple=True) for p in chunk], headers
    if rest == "/pulls" and method == "POST":
        pr = f.open_pr(
            head=data.get("head", ""),
            base=data.get("base", ""),
            title=data.get("title", ""),
            body=data.get("body") or "",
            labels=[],
        )
        return 201, _gh_pr(f, pr), {}
    m = re.fullmatch(r"/pulls/(\d+)", rest)
    if m and method == "GET":
        return 200, _gh_pr(f, f.pr(int(m[1]))), {}
    if m and method == "PATCH":
        pr = f.pr(int(m[1]))
        if "body" in data:
            pr.body = data["body"] or ""
        if "title" in data:
            pr.title = data["title"]
        if data.get("state") == "closed" and pr.state == "open":
            pr.state, pr.closed_at = "closed", _now()
        pr.updated_at = _now()
        return 200, _gh_pr(f, pr), {}
    m = re.fullmatch(r"/pulls/(\d+)/merge", rest)
    if m and method == "PUT":
        pr = f.pr(int(m[1]))
        method_ = data.get("merge_method", "merge")
        if method_ not in ("merge", "squash", "rebase"):
            raise ApiError(422, f"Validation Failed: merge_method {method_!r} is not valid")
        message = data.get("commit_title")
        if message and data.get("commit_message"):
            message = f"{message}\n\n{data['commit_message']}"
        try:
            sha = f.merge(pr, method=method_, sha=data.get("sha"), message=message)
        except ApiError as e:
            if e.status == 403:  # a protected branch answers 405 with the rule that failed
                raise ApiError(405, e.message) from None
            raise
        return 200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}, {}
    answer = _reviews_and_comments(f, method, path, rest, query, data)
    if answer is not None:
        return answer
    m = re.fullmatch(r"/issues/(\d+)/labels", rest)
    if m and method == "POST":
        pr = f.pr(int(m[1]))
        for name in data.get("labels", []):
            if name not in pr.labels:
                pr.labels.append(name)
        return 200, [_gh_label(f, n) for n in pr.labels], {}
    m = re.fullmatch(r"/issues/(\d+)/labels/(.+)", rest)
    if m and method == "DELETE":
        pr = f.pr(int(m[1]))
        if m[2] not in pr.labels:
            raise ApiError(404, "Label does not exist")
        pr.labels.remove(m[2])
        return 200, [_gh_label(f, n) for n in pr.labels], {}
    m = re.fullmatch(r"/statuses/([0-9a-f]{40})", rest)
    if m and method == "POST":
        if data.get("state") not in ("pending", "success", "failure", "error"):
            raise ApiError(422, "Validation Failed: state is not included in the list")
        s = f.set_status(
            m[1], data.get("context", "default"), data["state"], data.get("description") or ""
        )
        return 201, _status_json(s), {}
    m = re.fullmatch(r"/commits/([^/]+)/status", rest)
    if m and method == "GET":
        sha = f.branch_sha(m[1]) or m[1]
        return 200, _combined(f, sha), {}
    raise ApiError(404, "Not Found")


# ---------------------------------------------------------------------- Gitea v1


def _gitea_pr(f: FakeForge, pr: FakePR) -> dict[str, Any]:
    out = _gh_pr(f, pr)
    out["id"] = 20_000 + pr.number
    out["html_url"] = f"{f.base_url}/{f.full_name}/pulls/{pr.number}"
    out["url"] = out["html_url"]
    out["merged_by"] = _gh_user(f.user) if pr.merged else None
    # Gitea computes mergeability when the PR is opened or its branches move: never null.
    mergeable = f.mergeable(pr)
    out["mergeable"] = bool(mergeable if mergeable is not None else f.mergeable(pr))
    out["head"]["repo"] = {"full_name": f.full_name}
    out["labels"] = [
        {"id": f.label_id(n), "name": n, "color": "ededed", "description": ""} for n in pr.labels
    ]
    return out


def _gitea_review(r: dict[str, Any]) -> dict[str, Any]:
    out = _gh_review(r)
    out["state"] = {
        "APPROVED": "APPROVED",
        "CHANGES_REQUESTED": "REQUEST_CHANGES",
        "COMMENTED": "COMMENT",
    }[out["state"]]
    return out


def _gitea(
    f: FakeForge, method: str, path: str, query: dict[str, list[str]], data: dict[str, Any]
) -> Answer:
    status, payload, headers = _gitea_routes(f, method, path, query, data)
    return status, _gitea_users(payload), headers


def _gitea_routes(
    f: FakeForge, method: str, path: str, query: dict[str, list[str]], data: dict[str, Any]
) -> Answer:
    repo = f"/repos/{f.owner}/{f.name}"
    if not path.startswith(repo + "/"):
        raise ApiError(404, "The target couldn't be found.")
    rest = path[len(repo) :]
    if rest == "/pulls" and method == "GET":
        state = query.get("state", ["open"])[0]
        prs = sorted(f.pulls.values(), key=lambda p: p.number, reverse=True)
        if state != "all":
            prs = [p for p in prs if p.state == state]
        chunk, headers = _page(f, path, query, prs)
        return 200, [_gitea_pr(f, p) for p in chunk], headers
    if rest == "/pulls" and method == "POST":
        ids = data.get("labels") or []
        names = [n for n, i in f.label_ids.items() if i in ids]
        pr = f.open_pr(
            head=data.get("head", ""),
            base=data.get("base", ""),
            title=data.get("title", ""),
            body=data.get("body") or "",
            labels=names,
        )
        return 201, _gitea_pr(f, pr), {}
    m = re.fullmatch(r"/pulls/([^/]+)/(.+)", rest)
    if m and method == "GET" and not m[1].isdigit():
        # GET /repos/{owner}/{repo}/pulls/{base}/{head}: the newest PR from head into base
        for pr in sorted(f.pulls.values(), key=lambda p: p.number, reverse=True):
            if pr.base == m[1] and pr.head == m[2]:
                return 200, _gitea_pr(f, pr), {}
        raise ApiError(404, "pull request does not exist")
    m = re.fullmatch(r"/pulls/(\d+)", rest)
    if m and method == "GET":
        return 200, _gitea_pr(f, f.pr(int(m[1]))), {}
    if m and method == "PATCH":
        pr = f.pr(int(m[1]))
        if "body" in data:
            pr.body = data["body"] or ""
        if data.get("state") == "closed" and pr.state == "open":
            pr.state, pr.closed_at = "closed", _now()
        pr.updated_at = _now()
        return 201, _gitea_pr(f, pr), {}
    m = re.fullmatch(r"/pulls/(\d+)/merge", rest)
    if m and method == "POST":
        pr = f.pr(int(m[1]))
        do = data.get("Do")
        if do not in ("merge", "squash", "rebase", "rebase-merge", "fast-forward-only"):
            raise ApiError(422, "[Do]: Required")
        message = data.get("MergeTitleField")
        if message and data.get("MergeMessageField"):
            message = f"{message}\n\n{data['MergeMessageField']}"
        try:
            f.merge(
                pr,
                method="merge" if do == "merge" else do,
                sha=data.get("head_commit_id"),
                message=message,
            )
        except ApiError as e:
            if e.status == 403:
                raise ApiError(405, e.message) from None
            if e.status == 409:
                raise ApiError(409, "head out of date") from None
            raise
        return 200, None, {}
    answer = _reviews_and_comments(f, method, path, rest, query, data)
    if answer is not None:
        return answer
    if rest == "/labels" and method == "GET":
        items = [{"id": i, "name": n, "color": "ededed"} for n, i in f.label_ids.items()]
        chunk, headers = _page(f, path, query, items)
        return 200, chunk, headers
    if rest == "/labels" and method == "POST":
        name = data.get("name")
        if not name:
            raise ApiError(422, "[Name]: Required")
        if name in f.label_ids:
            raise ApiError(409, "label already exists")
        return 201, {"id": f.label_id(name), "name": name, "color": data.get("color")}, {}
    m = re.fullmatch(r"/issues/(\d+)/labels", rest)
    if m and method == "POST":
        pr = f.pr(int(m[1]))
        by_id = {i: n for n, i in f.label_ids.items()}
        for ident in data.get("labels", []):
            name = by_id.get(ident) if isinstance(ident, int) else ident
            if name is None or name not in f.label_ids:
                raise ApiError(422, f"label {ident!r} does not exist")
            if name not in pr.labels:
                pr.labels.append(name)
        return 200, [{"id": f.label_ids[n], "name": n} for n in pr.labels], {}
    m = re.fullmatch(r"/issues/(\d+)/labels/(\d+)", rest)
    if m and method == "DELETE":
        pr = f.pr(int(m[1]))
        names = [n for n, i in f.label_ids.items() if i == int(m[2])]
        if not names:
            raise ApiError(404, "label does not exist")
        if names[0] in pr.labels:
            pr.labels.remove(names[0])
        return 204, None, {}
    m = re.fullmatch(r"/statuses/([0-9a-f]{40})", rest)
    if m and method == "POST":
        if data.get("state") not in ("pending", "success", "error", "failure", "warning"):
            raise ApiError(422, "[State]: Required")
        s = f.set_status(
            m[1], data.get("context", "default"), data["state"], data.get("description") or ""
        )
        return 201, _status_json(s, gitea=True), {}
    m = re.fullmatch(r"/commits/([^/]+)/status", rest)
    if m and method == "GET":
        return 200, _combined(f, f.branch_sha(m[1]) or m[1], gitea=True), {}
    raise ApiError(404, "The target couldn't be found.")


# ---------------------------------------------------------------------- GitLab v4


def _gl_state(pr: FakePR) -> str:
    return "merged" if pr.merged else "opened" if pr.state == "open" else "closed"


def _gl_mr(f: FakeForge, pr: FakePR) -> dict[str, Any]:
    mergeable = f.mergeable(pr)
    status = (
        "unchecked"
        if mergeable is None and pr.state == "open"
        else "can_be_merged"
        if mergeable
        else "cannot_be_merged"
    )
    return {
        "id": 30_000 + pr.number,
        "iid": pr.number,
        "project_id": 1,
        "title": pr.title,
        "description": pr.body,
        "state": _gl_state(pr),
        "source_branch": pr.head,
        "target_branch": pr.base,
        "sha": f.head_sha(pr),
        "merge_commit_sha": pr.merge_commit,
        "squash_commit_sha": None,
        "labels": list(pr.labels),
        "author": {"username": pr.author, "id": 1},
        "web_url": f"{f.base_url}/{f.full_name}/-/merge_requests/{pr.number}",
        "created_at": _iso(pr.created_at),
        "updated_at": _iso(pr.updated_at),
        "closed_at": None if pr.merged else _iso(pr.closed_at),
        "merged_at": _iso(pr.merged_at),
        "merge_status": status,
        "detailed_merge_status": {
            "unchecked": "checking",
            "can_be_merged": "mergeable",
            "cannot_be_merged": "conflict",
        }[status],
    }


def _gl_note(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": c["id"],
        "body": c["body"],
        "author": {"username": c["user"]},
        "created_at": _iso(c["at"]),
        "system": False,
    }


def _gitlab(
    f: FakeForge, method: str, path: str, query: dict[str, list[str]], data: dict[str, Any]
) -> Answer:
    project = "/projects/" + quote(f.full_name, safe="")
    if not path.startswith(project + "/"):
        raise ApiError(404, "404 Project Not Found")
    rest = path[len(project) :]
    if rest == "/merge_requests" and method == "GET":
        state = query.get("state", ["all"])[0]
        prs = sorted(f.pulls.values(), key=lambda p: p.number, reverse=True)
        if state != "all":
            prs = [p for p in prs if _gl_state(p) == state]
        if "source_branch" in query:
            prs = [p for p in prs if p.head == query["source_branch"][0]]
        chunk, headers = _page(f, path, query, prs)
        return 200, [_gl_mr(f, p) for p in chunk], headers
    if rest == "/merge_requests" and method == "POST":
        labels = [x for x in str(data.get("labels") or "").split(",") if x]
        pr = f.open_pr(
            head=data.get("source_branch", ""),
            base=data.get("target_branch", ""),
            title=data.get("title", ""),
            body=data.get("description") or "",
            labels=labels,
        )
        return 201, _gl_mr(f, pr), {}
    m = re.fullmatch(r"/merge_requests/(\d+)", rest)
    if m and method == "GET":
        return 200, _gl_mr(f, f.pr(int(m[1]))), {}
    if m and method == "PUT":
        pr = f.pr(int(m[1]))
        if "description" in data:
            pr.body = data["description"] or ""
        for name in [x for x in str(data.get("add_labels") or "").split(",") if x]:
            if name not in pr.labels:
                pr.labels.append(name)
        for name in [x for x in str(data.get("remove_labels") or "").split(",") if x]:
            if name in pr.labels:
                pr.labels.remove(name)
        if data.get("state_event") == "close" and pr.state == "open" and not pr.merged:
            pr.state, pr.closed_at = "closed", _now()
        pr.updated_at = _now()
        return 200, _gl_mr(f, pr), {}
    m = re.fullmatch(r"/merge_requests/(\d+)/merge", rest)
    if m and method == "PUT":
        pr = f.pr(int(m[1]))
        squash = bool(data.get("squash"))
        message = data.get("squash_commit_message" if squash else "merge_commit_message")
        try:
            f.merge(
                pr, method="squash" if squash else "merge", sha=data.get("sha"), message=message
            )
        except ApiError as e:
            if e.status == 409:
                raise ApiError(409, "SHA does not match HEAD of source branch") from None
            if e.status == 403:
                raise ApiError(403, e.message) from None
            raise ApiError(405, "405 Method Not Allowed") from None
        return 200, _gl_mr(f, pr), {}
    m = re.fullmatch(r"/merge_requests/(\d+)/notes", rest)
    if m:
        pr = f.pr(int(m[1]))
        if method == "POST":
            if not data.get("body"):
                raise ApiError(400, "body is missing")
            return 201, _gl_note(f.comment(pr, data["body"])), {}
        chunk, headers = _page(f, path, query, pr.comments)
        return 200, [_gl_note(c) for c in chunk], headers
    m = re.fullmatch(r"/merge_requests/(\d+)/approvals", rest)
    if m and method == "GET":
        pr = f.pr(int(m[1]))
        approved = [r for r in pr.reviews if r["state"] == "approved"]
        return (
            200,
            {
                "iid": pr.number,
                "approved": bool(approved),
                "approved_by": [{"user": {"username": r["user"]}} for r in approved],
            },
            {},
        )
    m = re.fullmatch(r"/statuses/([0-9a-f]{40})", rest)
    if m and method == "POST":
        state = data.get("state")
        if state not in ("pending", "running", "success", "failed", "canceled", "skipped"):
            raise ApiError(400, "state does not have a valid value")
        s = f.set_status(
            m[1],
            data.get("name") or data.get("context") or "default",
            "failure" if state == "failed" else state,
            data.get("description") or "",
        )
        return 201, _status_json(s, gitlab=True), {}
    m = re.fullmatch(r"/repository/commits/([0-9a-f]{40})/statuses", rest)
    if m and method == "GET":
        items = [_status_json(s, gitlab=True) for s in f.statuses.get(m[1], [])]
        chunk, headers = _page(f, path, query, items)
        return 200, chunk, headers
    raise ApiError(404, "404 Not Found")
