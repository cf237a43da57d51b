"""ferry publish preview and ferry previews ls|extend|reap, with a preview-reaper running."""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_previews import with_previews
from tests.helpers import Cluster, wait_until
from tests.helpers import run_cli as run
from tests.integration.test_cli import one_line_error


@pytest.mark.parametrize(
    "argv",
    [
        ["previews"],
        ["previews", "ls"],
        ["previews", "extend"],
        ["previews", "reap"],
        ["publish", "preview"],
    ],
)
def test_preview_commands_have_help(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, _ = run(capsys, *argv, "--help")
    assert code == 0 and "Usage: ferry" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--repo", "web", "--pr", "1", "--event", "opened"], "repo must be OWNER/NAME"),
        (["--repo", "shop/web", "--pr", "0", "--event", "opened"], "'pr'"),
        (["--repo", "shop/web", "--pr", "1", "--event", "merged"], "--event must be one of"),
        (["--repo", "shop/web", "--pr", "1", "--event", "extend", "--until", "soon"], "until"),
    ],
)
def test_bad_preview_events_are_one_line_and_publish_nothing(
    env: Cluster, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    code, _, err = run(capsys, "publish", "preview", *args)
    one_line_error(code, err, needle)
    assert env.bus.redis.exists(env.bus.stream("previews")) == 0


def ls(capsys: pytest.CaptureFixture[str]) -> dict[str, dict]:
    code, out, err = run(capsys, "previews", "ls", "--json")
    assert code == 0, err
    return {p["preview"]: p for p in json.loads(out)}


def test_publish_ls_extend_reap(env: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    env.init_repo()
    with_previews(env, "{ttl: 1h, max_ttl: 3h, quota_per_team: 1, warn_before: 10m}")
    env.start("preview-reaper")
    base = ["publish", "preview", "--repo", "shop/web", "--team", "web", "--labels", "preview"]
    assert run(capsys, *base, "--pr", "7", "--event", "opened")[0] == 0
    wait_until(lambda: ls(capsys).get("shop/web#7", {}).get("state") == "active", 20, "active")
    assert run(capsys, *base, "--pr", "8", "--event", "opened")[0] == 0
    wait_until(lambda: ls(capsys).get("shop/web#8", {}).get("state") == "refused", 20, "refused")
    wait_until(lambda: ls(capsys)["shop/web#8"]["forge_log"], 20, "the refusal recorded")
    refused = ls(capsys)["shop/web#8"]
    assert [e["action"] for e in refused["forge_log"]] == ["remove_label", "comment"]
    assert "its quota is 1" in refused["forge_log"][1]["body"]

    first = ls(capsys)["shop/web#7"]
    code, out, _ = run(capsys, "previews", "extend", "shop/web#7", "--for", "2h", "--as", "ann")
    assert code == 0 and "asked to extend shop/web#7: reaped at" in out
    wait_until(lambda: ls(capsys)["shop/web#7"]["expires_at"] > first["expires_at"], 20, "later")
    code, out, _ = run(capsys, "previews", "extend", "shop/web#7", "--for", "9h")
    assert code == 0 and "capped: max_ttl allows until" in out

    code, out, _ = run(capsys, "previews", "ls")
    assert code == 0 and "shop/web#7" in out and "active" in out and "refused" in out

    code, _, err = run(capsys, "previews", "extend", "shop/web#8")
    one_line_error(code, err, "shop/web#8 is not a live preview (refused:")
    code, _, err = run(capsys, "previews", "extend", "shop-web-7")
    one_line_error(code, err, "name a preview as OWNER/NAME#PR")

    code, out, _ = run(
        capsys, "previews", "reap", "shop/web#7", "--reason", "demo over", "--as", "ann"
    )
    assert code == 0 and "asked to reap shop/web#7" in out
    wait_until(lambda: ls(capsys)["shop/web#7"]["state"] == "reaped", 20, "reaped by hand")
    wait_until(lambda: len(ls(capsys)["shop/web#7"]["forge_log"]) == 2, 20, "the reaping recorded")
    reaped = ls(capsys)["shop/web#7"]
    assert reaped["reason"] == "reaped by hand by ann: demo over"
    assert reaped["forge_log"][1]["body"].startswith("Ferry reaped this preview: reaped by hand")
