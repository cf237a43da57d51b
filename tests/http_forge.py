"""A tiny HTTP server that answers the two GitHub REST calls preview-reaper makes on application
pull requests (remove a label, post a comment), and can be told to fail every call for a while."""

from __future__ import annotations

import json
import re
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

_LABEL = re.compile(r"^/repos/([^/]+/[^/]+)/issues/(\d+)/labels/([^/]+)$")
_COMMENTS = re.compile(r"^/repos/([^/]+/[^/]+)/issues/(\d+)/comments$")


class GitHubIssues:
    """Labels and comments of application PRs, served like api.github.com."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.labels: dict[tuple[str, int], set[str]] = defaultdict(set)
        self.comments: dict[tuple[str, int], list[str]] = defaultdict(list)
        self.failing = False
        self.calls: list[tuple[str, str, int]] = []  # (method, path, status)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> GitHubIssues:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, method: str, path: str, body: bytes, auth: str | None) -> tuple[int, Any]:
        if auth != f"Bearer {self.token}":
            return 401, {"message": "Bad credentials"}
        if self.failing:
            return 503, {"message": "Service Unavailable"}
        if method == "DELETE" and (m := _LABEL.match(path)):
            key = (m[1], int(m[2]))
            label = unquote(m[3])
            if label not in self.labels[key]:
                return 404, {"message": "Label does not exist"}
            self.labels[key].discard(label)
            return 200, [{"name": n} for n in sorted(self.labels[key])]
        if method == "POST" and (m := _COMMENTS.match(path)):
            self.comments[(m[1], int(m[2]))].append(json.loads(body)["body"])
            return 201, {"id": len(self.comments)}
        return 404, {"message": "Not Found"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issues = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with issues._lock:
                    status, data = issues._answer(
                        self.command, self.path, body, self.headers.get("Authorization")
                    )
                    issues.calls.append((self.command, self.path, status))
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_DELETE = do_POST = do_GET = do_PUT = _serve

            def log_message(self, *_: Any) -> None:
                pass

        return Handler
