"""On call: fix the cause, then re-drive. `ferry dlq retry` puts dead letters back; `ferry replay`
publishes a range of a stream again. Done effects are skipped, failed ones are done again."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime

import pytest

from tests.helpers import Cluster, digest_of, run_cli, wait_until


def test_dlq_retry_after_the_service_was_added(env: Cluster, capsys) -> None:  # noqa: ANN001
    env.init_repo(["api"])
    env.start("gate-evaluator")
    env.start("pr-writer")
    d = digest_of("db")
    env.build("db", d)
    [letter] = wait_until(env.dead_letters, 15, "the dead letter")
    assert "has no values file envs/dev/db/values.yaml" in letter["error"]

    def add_db(clone):  # noqa: ANN001, ANN202
        for e in ("dev", "staging", "prod"):
            shutil.copytree(clone / "envs" / e / "api", clone / "envs" / e / "db")
            path = clone / "envs" / e / "db" / "values.yaml"
            path.write_text(path.read_text().replace("shop/api", "shop/db"))

    env.commit_by_hand("add db", add_db)
    code, out, _ = run_cli(capsys, "dlq", "retry", "--all")
    assert code == 0 and out.strip() == "retried 1 dead letter"
    env.wait_pinned("db", "dev", d)
    assert run_cli(capsys, "dlq", "ls")[1].strip() == "no dead letters"


def test_replay_redrives_a_failed_promotion_and_skips_done_ones(
    env: Cluster,
    capsys,  # noqa: ANN001
) -> None:
    env.init_repo(["api", "web"])

    def break_api(clone):  # noqa: ANN001, ANN202
        path = clone / "envs" / "dev" / "api" / "values.yaml"
        path.write_text(path.read_text().replace("  digest:", "  old_digest:"))

    env.commit_by_hand("rename the digest key by mistake", break_api)
    env.start("gate-evaluator")
    env.start("pr-writer")
    a, w = digest_of("a"), digest_of("w")
    env.build("api", a)
    env.build("web", w)
    env.wait_pinned("web", "dev", w)
    failed = wait_until(lambda: env.changes("promotion_failed"), 15, "promotion_failed")
    assert "image.digest" in failed[0]["reason"]
    wait_until(
        lambda: any(x["outcome"] == "can retry" for x in env.entries("audit")), 10, "can retry"
    )

    def fix_api(clone):  # noqa: ANN001, ANN202
        path = clone / "envs" / "dev" / "api" / "values.yaml"
        path.write_text(path.read_text().replace("  old_digest:", "  digest:"))

    env.commit_by_hand("fix the digest key", fix_api)
    code, out, _ = run_cli(capsys, "replay", "ci")
    assert code == 0 and out.strip() == "replayed 2 entries of ci"
    env.wait_pinned("api", "dev", a)
    wait_until(lambda: len(env.changes("pr_merged")) == 2, 10, "two merges")
    titles = sorted(p.title for p in env.forge.list_prs())
    assert titles == [f"Promote api to dev: {a[:19]}", f"Promote web to dev: {w[:19]}"]


def test_replay_chooses_by_service_and_time_and_says_what_it_would_do(
    env: Cluster,
    capsys,  # noqa: ANN001
) -> None:
    env.init_repo(["api", "web"])
    env.build("api", digest_of("1"))
    env.build("web", digest_of("2"))
    env.bus.redis.xadd(env.bus.stream("ci"), {"json": '{"kind":"ci","service":"api"}'})
    code, out, _ = run_cli(capsys, "replay", "ci", "--service", "api", "--dry-run", "--json")
    chosen = json.loads(out)
    assert code == 0 and len(chosen) == 2
    assert all(c["fields"].get("service", "api") == "api" for c in chosen)
    assert '"event_id": "ci:' in chosen[1]["fields"]["json"]  # identity kept for idempotency
    assert env.bus.redis.xlen(env.bus.stream("ci")) == 3  # dry run: nothing published
    future = datetime(2100, 1, 1, tzinfo=UTC).isoformat()
    code, out, _ = run_cli(capsys, "replay", "ci", "--from", future)
    assert code == 0 and out.strip() == "replayed 0 entries of ci"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["replay", "audit"], "stream 'audit' cannot be replayed: choose one of ci, signals"),
        (["replay", "ci", "--from", "yesterday"], "--from must be a stream entry id"),
        (["dlq", "retry"], "name the dead letters to retry by id (`ferry dlq ls` lists them"),
        (["dlq", "drop", "1-1", "--all"], "or pass --all, not both"),
        (["dlq", "drop", "1-1"], "no dead letter '1-1'"),
    ],
)
def test_redrive_mistakes_are_one_line(env: Cluster, capsys, argv, needle) -> None:  # noqa: ANN001
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err


def test_dlq_drop(env: Cluster, capsys) -> None:  # noqa: ANN001
    env.init_repo(["api"])
    env.start("gate-evaluator")
    for _ in range(2):
        env.bus.redis.xadd(env.bus.stream("ci"), {"kind": "ci", "service": "x", "digest": "y"})
    wait_until(lambda: len(env.dead_letters()) == 2, 15, "two dead letters")
    first = run_cli(capsys, "dlq", "ls", "--json")[1]
    first_id = json.loads(first)[0]["id"]
    assert run_cli(capsys, "dlq", "drop", first_id)[1].strip() == "dropped 1 dead letter"
    assert len(env.dead_letters()) == 1
    assert run_cli(capsys, "dlq", "drop", "--all")[1].strip() == "dropped 1 dead letter"
    assert env.dead_letters() == []
