"""The CLI: every command answers --help; every mistake is one line and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import Cluster, digest_of
from tests.helpers import run_cli as run

D = digest_of("cli")


def one_line_error(code: int, err: str, needle: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and needle in lines[0], err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["init"],
        ["publish"],
        ["publish", "ci"],
        ["worker"],
        ["up"],
        ["status"],
        ["dlq"],
        ["dlq", "ls"],
        ["dlq", "show"],
        ["audit"],
        ["explain"],
        ["approve"],
        ["manifest"],
        ["reject"],
        ["publish", "check"],
        ["pr"],
        ["pr", "ls"],
        ["pr", "show"],
        ["pr", "merge"],
        ["pr", "close"],
        ["demo"],
    ],
)
def test_every_command_has_help(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, _ = run(capsys, *argv, "--help")
    assert code == 0 and "Usage: ferry" in out


def test_tag_instead_of_digest_is_one_line(env: Cluster, capsys) -> None:  # noqa: ANN001
    code, _, err = run(capsys, "publish", "ci", "--service", "api", "--digest", "api:latest")
    one_line_error(code, err, "digest must be sha256:<64 lowercase hex>, got 'api:latest'")
    assert env.bus.redis.xlen(env.bus.stream("ci")) == 0


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["publish", "ci", "--digest", D], "Missing option '--service'"),
        (["publish", "ci", "--service", "../etc", "--digest", D], "service must be a DNS label"),
        (["publish", "ci", "--service", "api", "--digest", D, "--status", "ok"], "field 'status'"),
        (
            ["publish", "ci", "--service", "api", "--digest", D, "--built-at", "yesterday"],
            "built_at must be an ISO 8601 time with a timezone",
        ),
        (["worker", "nope"], "unknown worker 'nope'"),
        (["pr", "ls", "--state", "weird"], "--state must be open, merged or closed"),
        (["pr", "show", "999"], "no pull request #999"),
        (["pr", "show", "one"], "Invalid value for 'number'"),
        (["dlq", "show", "1-1"], "no dead letter '1-1'"),
        (["frobnicate"], "No such command 'frobnicate'"),
    ],
)
def test_mistakes_exit_2_with_one_line(env: Cluster, capsys, argv, needle) -> None:  # noqa: ANN001
    env.init_repo(["api"])
    code, _, err = run(capsys, *argv)
    one_line_error(code, err, needle)


def test_missing_settings_say_which_variable(capsys, monkeypatch, tmp_path) -> None:  # noqa: ANN001
    monkeypatch.delenv("FERRY_GITOPS_REPO", raising=False)
    monkeypatch.delenv("FERRY_REDIS_URL", raising=False)
    monkeypatch.setenv("FERRY_HOME", str(tmp_path / "home"))
    code, _, err = run(capsys, "status")
    one_line_error(code, err, "FERRY_GITOPS_REPO is not set")
    code, _, err = run(capsys, "worker", "pr-writer")
    one_line_error(code, err, "FERRY_GITOPS_REPO is not set")
    code, _, err = run(capsys, "publish", "ci", "--service", "api", "--digest", D)
    one_line_error(code, err, "FERRY_GITOPS_REPO is not set")  # checked against main first
    code, _, err = run(capsys, "publish", "ci", "--service", "api", "--digest", D, "--no-check")
    one_line_error(code, err, "no Redis to talk to: set FERRY_REDIS_URL, or start Ferry with")


def test_init_refuses_a_non_empty_directory(capsys, tmp_path) -> None:  # noqa: ANN001
    code, out, _ = run(capsys, "init", str(tmp_path / "g"), "--services", "api,web")
    assert code == 0 and "GitOps repository ready" in out
    code, _, err = run(capsys, "init", str(tmp_path / "g"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "init", str(tmp_path / "h"), "--services", "API")
    assert code == 2 and "DNS label" in err


def test_publish_status_dlq_and_pr_commands(env: Cluster, capsys) -> None:  # noqa: ANN001
    env.init_repo(["api", "web"])
    code, out, _ = run(capsys, "status", "--json")
    assert code == 0
    assert json.loads(out)["services"] == {
        "api": {"dev": None, "staging": None, "prod": None},
        "web": {"dev": None, "staging": None, "prod": None},
    }
    code, out, _ = run(
        capsys,
        "publish",
        "ci",
        "--service",
        "api",
        "--digest",
        D,
        "--event-id",
        "build-1",
        "--commit",
        "abc",
        "--json",
    )
    assert code == 0 and json.loads(out)["event"]["event_id"] == "build-1"
    [entry] = env.entries("ci")
    assert entry["digest"] == D and entry["commit"] == "abc" and entry["kind"] == "ci"

    env.bus.redis.xadd(env.bus.stream("ci"), {"kind": "ci", "service": "api", "digest": "x"})
    env.start("gate-evaluator")
    env.start("pr-writer")
    env.wait_pinned("api", "dev", D)
    code, out, _ = run(capsys, "status")
    assert code == 0 and "api" in out and D[:19] in out
    code, out, _ = run(capsys, "dlq", "ls")
    assert code == 0 and "digest must be sha256" in out
    letters = json.loads(run(capsys, "dlq", "ls", "--json")[1])
    code, out, _ = run(capsys, "dlq", "show", letters[0]["id"])
    assert code == 0 and json.loads(out)["payload"]["digest"] == "x"

    code, out, _ = run(capsys, "audit", "--service", "api")
    assert code == 0 and "requested" in out and "build succeeded" in out
    assert "waiting: no green CI for this digest in dev" in out  # why it did not go on
    records = json.loads(run(capsys, "audit", "--json", "--limit", "2")[1])
    assert len(records) == 2 and all(r["kind"] == "decision" for r in records)
    code, out, _ = run(capsys, "audit", "--service", "web")
    assert code == 0 and out.strip() == "no decisions recorded"

    code, out, _ = run(capsys, "pr", "ls")
    assert code == 0 and "merged" in out and "Promote api to dev" in out
    code, out, _ = run(capsys, "pr", "show", "1")
    assert code == 0 and D in out and "merged" in out
    code, _, err = run(capsys, "pr", "merge", "1")
    assert code == 0
    code, _, err = run(capsys, "pr", "close", "1")
    one_line_error(code, err, "already merged")


def test_console_script_exit_code_is_real(tmp_path) -> None:  # noqa: ANN001
    proc = subprocess.run(
        [sys.executable, "-m", "ferry", "publish", "ci", "--service", "api", "--digest", "latest"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "FERRY_HOME": str(tmp_path)},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: digest must be sha256:<64 lowercase hex>, got 'latest' "
        "(a tag is not a digest: build once, promote the digest)"
    ]


def test_settings_and_arguments_that_cannot_work_say_how_to_fix_them(
    env: Cluster,
    capsys,  # noqa: ANN001
    monkeypatch,  # noqa: ANN001
    tmp_path,  # noqa: ANN001
) -> None:
    env.init_repo(["api"])
    code, _, err = run(capsys, "dlq", "retry")
    one_line_error(code, err, "name the dead letters to retry by id (`ferry dlq ls` lists them")
    code, _, err = run(capsys, "dlq", "drop", "1-1", "--all")
    one_line_error(code, err, "or pass --all, not both")
    monkeypatch.setenv("FERRY_GITOPS_REPO", str(tmp_path / "no-such-repo"))
    code, _, err = run(capsys, "status")
    one_line_error(code, err, f"FERRY_GITOPS_REPO={tmp_path / 'no-such-repo'} does not exist")
    assert "clone" not in err  # not git's command line
    monkeypatch.setenv("FERRY_REDIS_URL", "redis//localhost:6379")
    code, _, err = run(capsys, "dlq", "ls")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "FERRY_REDIS_URL" in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["publish", "ci", "--service", "nope", "--digest", D], "unknown service 'nope'"),
        (
            ["publish", "ci", "--service", "api", "--digest", D, "--env", "qa"],
            "unknown environment 'qa'",
        ),
        (
            ["publish", "ci", "--service", "api", "--digest", D, "--image", "docker.io/x/api"],
            "image 'docker.io/x/api' is not the repository of 'api'",
        ),
        (
            ["approve", "api", D, "--env", "staging", "--as", "sre-oncall-1"],
            "staging has no approval gate",
        ),
        (
            ["reject", "api", D, "--env", "prod", "--as", "mallory", "--reason", "no"],
            "mallory is not an approver of prod",
        ),
        (
            ["publish", "check", "--service", "api", "--digest", D, "--env", "qa", "--check", "x"],
            "unknown environment 'qa'",
        ),
        (["promote", "api", "prod", D, "--as", "ann"], "is not live in staging"),
    ],
)
def test_mistakes_the_policy_shows_are_refused_before_publishing(
    env: Cluster,
    capsys,  # noqa: ANN001
    argv: list[str],
    needle: str,
) -> None:
    env.init_repo(["api"])
    code, _, err = run(capsys, *argv)
    one_line_error(code, err, needle)
    assert "--no-check publishes anyway" in err
    streams = ("ci", "signals")
    assert all(env.bus.redis.xlen(env.bus.stream(s)) == 0 for s in streams)
    code, out, _ = run(capsys, *argv, "--no-check", "--json")
    assert code == 0 and json.loads(out)["entry_id"]
    assert sum(env.bus.redis.xlen(env.bus.stream(s)) for s in streams) == 1


def test_version_and_json_of_dlq_retry(env: Cluster, capsys) -> None:  # noqa: ANN001
    from importlib.metadata import version

    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"ferry {version('ferry')}"
    code, out, _ = run(capsys, "dlq", "retry", "--all", "--json")
    assert code == 0 and json.loads(out) == {"retried": []}
