"""The CLI refuses a name, digest or environment with stray whitespace ("api\\n", a trailing tab
from a script) in one line, before anything is read or published."""

from __future__ import annotations

import pytest

from tests.helpers import Cluster, digest_of
from tests.helpers import run_cli as run

D = digest_of("cli-names")
CHECK = ["--check", "load-test"]


def argv_for(junk: str) -> list[tuple[list[str], str]]:
    """(command line with one value spoiled by JUNK, the field the error must name)."""
    j = junk
    return [
        (["publish", "ci", "--service", f"api{j}", "--digest", D], "service"),
        (["publish", "ci", "--service", "api", "--digest", f"{D}{j}"], "digest"),
        (["publish", "ci", "--service", "api", "--digest", D, "--env", f"dev{j}"], "env"),
        (["publish", "ci", "--service", "api", "--digest", D, "--check", f"it{j}"], "check"),
        (["publish", "ci", "--service", "api", "--digest", D, "--author", f"{j}al"], "author"),
        (["publish", "ci", "--service", "api", "--digest", D, "--image", f"r/api{j}"], "image"),
        (["publish", "check", "--service", f"api{j}", "--digest", D, "--env", "staging", *CHECK],
         "service"),
        (["publish", "check", "--service", "api", "--digest", D, "--env", f"staging{j}", *CHECK],
         "env"),
        (["publish", "check", "--service", "api", "--digest", D, "--env", "staging", "--check",
          f"load-test{j}"], "check"),
        (["approve", f"api{j}", D, "--env", "prod", "--as", "lead"], "service"),
        (["approve", "api", f"{D}{j}", "--env", "prod", "--as", "lead"], "digest"),
        (["approve", "api", D, "--env", f"prod{j}", "--as", "lead"], "env"),
        (["approve", "api", D, "--env", "prod", "--as", f"lead{j}"], "actor"),
        (["reject", "api", D, "--env", f"prod{j}", "--as", "lead", "--reason", "no"], "env"),
        (["explain", f"api{j}", "dev"], "service"),
        (["explain", "api", f"dev{j}"], "environment"),
        (["manifest", f"prod{j}"], "environment"),
        (["audit", "--service", f"api{j}"], "service"),
        (["replay", "ci", "--service", f"api{j}"], "service"),
        (["publish", "canary", "--service", "api", "--digest", D, "--env", f"prod{j}", "--metric",
          "error-rate", "--phase", "successful"], "env"),
        (["publish", "canary", "--service", "api", "--digest", D, "--env", "prod", "--metric",
          f"error-rate{j}", "--phase", "successful"], "metric"),
        (["canary", "promote", f"api{j}", "prod", "--as", "lead"], "service"),
        (["canary", "abort", "api", f"prod{j}", "--as", "lead"], "environment"),
        (["canary", "promote", "api", "prod", "--as", f"lead{j}"], "actor"),
    ]  # fmt: skip


@pytest.mark.parametrize("junk", ["\n", " ", "\t", "\r\n"], ids=repr)
def test_whitespace_in_any_name_is_one_line_and_nothing_is_published(
    env: Cluster, capsys: pytest.CaptureFixture[str], junk: str
) -> None:
    env.init_repo(["api"])
    for argv, field in argv_for(junk):
        code, _, err = run(capsys, *argv)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, (argv, err)
        assert lines[0].startswith("error: ") and field in lines[0], (argv, err)
    for short in ("ci", "signals", "canary"):
        assert env.bus.redis.xlen(env.bus.stream(short)) == 0
