"""`ferry pr ls|show|merge|close` on every provider."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.contract.conftest import Under
from tests.helpers import run_cli


@pytest.fixture
def cli_env(
    under: Under, redis_url: str, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Under:
    monkeypatch.setenv("FERRY_REDIS_URL", redis_url)
    monkeypatch.setenv("FERRY_STREAM_PREFIX", prefix)
    monkeypatch.setenv("FERRY_HOME", str(tmp_path / "cli-home"))
    if under.fake is None:
        monkeypatch.setenv("FERRY_GITOPS_REPO", str(tmp_path / "gitops"))
    return under


def test_pr_commands_work_on_every_provider(
    cli_env: Under, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_env.branch("to-merge", "m\n", path="m.txt")
    cli_env.branch("to-close", "c\n", path="c.txt")
    merge, close = cli_env.open("to-merge"), cli_env.open("to-close")
    code, out, err = run_cli(capsys, "pr", "ls", "--state", "open", "--json")
    assert code == 0, err
    assert [p["number"] for p in json.loads(out)] == [close.number, merge.number]
    code, out, err = run_cli(capsys, "pr", "merge", str(merge.number))
    assert code == 0, err
    assert f"#{merge.number} merged as" in out
    code, out, err = run_cli(capsys, "pr", "close", str(close.number), "--comment", "not now")
    assert code == 0, err
    code, out, _ = run_cli(capsys, "pr", "show", str(close.number))
    assert "state: closed" in out and "not now" in out
    code, _, err = run_cli(capsys, "pr", "show", "999")
    assert code != 0 and "no pull request #999" in err
    assert run_cli(capsys, "pr", "close", str(merge.number))[0] != 0  # merged: refused, one line
