"""Run git as a subprocess: the one place that knows how Ferry calls git."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

# Commits made by Ferry carry this identity unless the environment sets another.
_IDENTITY = {
    "GIT_AUTHOR_NAME": "Ferry",
    "GIT_AUTHOR_EMAIL": "ferry@localhost",
    "GIT_COMMITTER_NAME": "Ferry",
    "GIT_COMMITTER_EMAIL": "ferry@localhost",
}


class GitError(RuntimeError):
    """A git command failed; the message carries git's own stderr."""

    def __init__(self, args: list[str], returncode: int, stderr: str) -> None:
        self.args_ = args
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"git {' '.join(args)} failed ({returncode}): {self.stderr}")


def _credential_env(env: dict[str, str]) -> dict[str, str]:
    """Hand FERRY_FORGE_TOKEN to git through a credential helper that reads it from git's own
    environment when a forge asks: the token is never in a command line, a remote URL, a
    `.git/config` or a credential store (the empty helper first drops any configured store)."""
    if not env.get("FERRY_FORGE_TOKEN"):
        return {}
    user = "oauth2" if env.get("FERRY_FORGE") == "gitlab" else "x-access-token"
    helper = (
        '!f() { test "$1" = get || exit 0; echo username=' + user + "; "
        'echo "password=$FERRY_FORGE_TOKEN"; }; f'
    )
    n = int(env.get("GIT_CONFIG_COUNT") or 0)
    return {
        "GIT_CONFIG_COUNT": str(n + 2),
        f"GIT_CONFIG_KEY_{n}": "credential.helper",
        f"GIT_CONFIG_VALUE_{n}": "",
        f"GIT_CONFIG_KEY_{n + 1}": "credential.helper",
        f"GIT_CONFIG_VALUE_{n + 1}": helper,
    }


def git_bytes(
    *args: str, cwd: str | Path | None = None, check: bool = True, input: bytes | None = None
) -> bytes:
    """Run `git ARGS` in CWD and return its stdout byte for byte (file contents keep their
    CRLFs and final newlines)."""
    env = {**_IDENTITY, **os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    env.update(_credential_env(env))
    proc = subprocess.run(
        ["git", *args],
        cwd=str(cwd) if cwd is not None else None,
        capture_output=True,
        env=env,
        input=input,
    )
    if check and proc.returncode != 0:
        raise GitError(list(args), proc.returncode, proc.stderr.decode("utf-8", "replace"))
    return proc.stdout


def git(
    *args: str, cwd: str | Path | None = None, check: bool = True, input: str | None = None
) -> str:
    """Run `git ARGS` in CWD and return its stdout as text, without the final newline."""
    out = git_bytes(
        *args, cwd=cwd, check=check, input=input.encode() if input is not None else None
    )
    return out.decode("utf-8", "replace").replace("\r\n", "\n").rstrip("\n")
