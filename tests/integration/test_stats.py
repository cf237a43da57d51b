"""`ferry stats`: DORA figures from a real GitOps history (commits landed at known times) and
Ferry's own stores in Redis (build times, a rollback record); every number is worked out by hand
from those times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ferry.adapters.state import CandidateStore, RollbackStore
from ferry.app.stats import StatsError, parse_since, stats
from tests.helpers import Cluster, digest_of, pin_digest, run_cli

A, B, C, D, E, X, Y = (digest_of(n) for n in "ABCDEXY")
BROKEN = "not YAML"
H = 3600


@pytest.fixture
def history(env: Cluster, monkeypatch: pytest.MonkeyPatch) -> datetime:
    """api's story, around BASE (ten days ago, whole seconds):

    prod: A at BASE (built 2 h before); B a day later (built 30 m before), rolled back to A 45 m
    after; C two days after BASE (built 4 h before), rolled back by Ferry to E (a digest prod
    never ran: only Ferry's record says it is a rollback) 2 h after; D three days after BASE
    (build time unknown); then a commit that leaves prod's values file unreadable, and one that
    mends it (neither is a change). dev: A 1 h before BASE. staging: X three days before BASE
    (before the window), Y 1 h after BASE."""
    env.init_repo(["api", "web"])
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=10)

    def land(env_name: str, digest: str, at: datetime) -> None:
        stamp = f"{int(at.timestamp())} +0000"
        monkeypatch.setenv("GIT_COMMITTER_DATE", stamp)
        monkeypatch.setenv("GIT_AUTHOR_DATE", stamp)

        def change(clone: Path) -> None:
            path = clone / "envs" / env_name / "api" / "values.yaml"
            if digest == BROKEN:  # a person broke the file, and mended it in the next commit
                path.write_text(path.read_text() + f"image: [{D}\n")
            elif path.read_text().endswith(f"[{D}\n"):
                path.write_text(path.read_text().removesuffix(f"image: [{D}\n"))
            else:
                pin_digest(clone, env_name, "api", digest)

        env.commit_by_hand(f"pin {digest[:12]} in {env_name}", change)

    for digest, at in [
        (X, base - timedelta(days=3)),
        (A, base - timedelta(hours=1)),
    ]:
        land("staging" if digest == X else "dev", digest, at)
    for env_name, digest, at in [
        ("prod", A, base),
        ("staging", Y, base + timedelta(hours=1)),
        ("prod", B, base + timedelta(days=1)),
        ("prod", A, base + timedelta(days=1, minutes=45)),
        ("prod", C, base + timedelta(days=2)),
        ("prod", E, base + timedelta(days=2, hours=2)),
        ("prod", D, base + timedelta(days=3)),
        ("prod", BROKEN, base + timedelta(days=3, hours=1)),
        ("prod", D, base + timedelta(days=3, hours=2)),
    ]:
        land(env_name, digest, at)
    monkeypatch.delenv("GIT_COMMITTER_DATE")
    monkeypatch.delenv("GIT_AUTHOR_DATE")
    builds = CandidateStore(env.bus)
    for digest, built in [
        (A, base - timedelta(hours=2)),
        (B, base + timedelta(days=1) - timedelta(minutes=30)),
        (C, base + timedelta(days=2) - timedelta(hours=4)),
    ]:
        builds.record_build("api", digest, built.timestamp())
    RollbackStore(env.bus).mark("api", "prod", C, to=E, actor="alice", reason="errors")
    return base


def _row(report: dict[str, Any], service: str, env: str) -> dict[str, Any]:
    [row] = [
        r for r in report["rows"] + report["all"] if (r["service"], r["env"]) == (service, env)
    ]
    return row


def test_figures_from_history_and_records(env: Cluster, history: datetime) -> None:
    base = history
    report = stats(env.settings, since=base - timedelta(days=1), now=base + timedelta(days=9))
    assert report["days"] == 10
    prod = _row(report, "api", "prod")
    assert prod["deployments"] == 4  # A, B, C, D; the two rollbacks are counted apart
    assert prod["rollbacks"] == 2
    assert prod["per_day"] == 0.4 and prod["per_week"] == 2.8
    assert prod["failed"] == 2 and prod["change_failure_rate"] == 0.5
    # lead times 2 h, 30 m, 4 h (D's build time is unknown): median 2 h, p90 (nearest rank) 4 h
    assert prod["lead_time"] == {"median_s": 2 * H, "p90_s": 4 * H, "count": 3}
    # restored after 45 m (git: A ran before) and 2 h (Ferry's rollback record): median 82.5 m
    assert prod["time_to_restore"] == {"median_s": 4950, "p90_s": 2 * H, "count": 2}
    dev = _row(report, "api", "dev")
    assert dev["deployments"] == 1 and dev["lead_time"]["median_s"] == H
    assert dev["failed"] == 0 and dev["change_failure_rate"] == 0.0
    staging = _row(report, "api", "staging")
    assert staging["deployments"] == 1  # X landed before the window
    assert staging["lead_time"]["count"] == 0  # Y's build time is unknown
    web = _row(report, "web", "prod")
    assert web["deployments"] == 0 and web["change_failure_rate"] is None
    pooled = _row(report, "*", "prod")
    assert pooled["deployments"] == 4 and pooled["failed"] == 2
    # a window that starts after B's rollback: C failed, D did not
    later = stats(
        env.settings,
        since=base + timedelta(days=1, hours=1),
        now=base + timedelta(days=9),
        service="api",
        env="prod",
    )
    [row] = later["rows"]
    assert (row["deployments"], row["failed"], row["rollbacks"]) == (2, 1, 1)
    assert row["time_to_restore"]["median_s"] == 2 * H
    assert later["all"] == []


def test_cli_json_and_table(env: Cluster, history: datetime, capsys: Any) -> None:
    since = (history - timedelta(days=1)).isoformat()
    code, out, err = run_cli(capsys, "stats", "--json", "--since", since, "--service", "api")
    assert code == 0, err
    import json

    report = json.loads(out)
    assert {(r["service"], r["env"]) for r in report["rows"]} == {
        ("api", "dev"),
        ("api", "staging"),
        ("api", "prod"),
    }
    prod = _row(report, "api", "prod")
    assert (prod["deployments"], prod["failed"], prod["change_failure_rate"]) == (4, 2, 0.5)
    code, out, err = run_cli(capsys, "stats", "--since", since, "--env", "prod")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].split()[:3] == ["SERVICE", "ENV", "DEPLOYS"]
    api = next(line for line in lines if line.startswith("api "))
    assert api.split()[:3] == ["api", "prod", "4"]
    assert "2h" in api and "50%" in api and "1h 22m" in api  # restore median 82.5 m
    assert any(line.startswith("(all) ") and " 4 " in line for line in lines)


@pytest.mark.parametrize(
    ("since", "says"),
    [
        ("yesterday", "--since must be a duration (90m, 12h, 30d, 2w) or a date"),
        ("0d", "--since must be longer than zero"),
        ("2999-01-01", "is not in the past"),
        ("5y", "--since must be a duration"),
    ],
)
def test_bad_since_is_one_line(env: Cluster, capsys: Any, since: str, says: str) -> None:
    env.init_repo(["api"])
    code, out, err = run_cli(capsys, "stats", "--since", since)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and says in err and len(err.strip().splitlines()) == 1


def test_since_forms() -> None:
    now = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    assert parse_since("90m", now) == now - timedelta(minutes=90)
    assert parse_since("2w", now) == now - timedelta(days=14)
    assert parse_since("2026-11-01", now) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since("2026-11-01T09:00:00+01:00", now) == datetime(2026, 11, 1, 8, tzinfo=UTC)
    with pytest.raises(StatsError):
        parse_since("-3d", now)


def test_unknown_service_or_environment_is_one_line(env: Cluster, capsys: Any) -> None:
    env.init_repo(["api"])
    code, _, err = run_cli(capsys, "stats", "--service", "nope")
    assert code == 2 and "no service 'nope'" in err
    code, _, err = run_cli(capsys, "stats", "--env", "qa")
    assert code == 2 and "qa" in err and len(err.strip().splitlines()) == 1
