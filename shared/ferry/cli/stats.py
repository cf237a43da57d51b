"""ferry stats: DORA figures per service and environment (docs/stats.md)."""

from __future__ import annotations

from typing import Any

import typer

from ferry.cli.app import app, check_names, echo_json, fail, load_settings, print_rows


@app.command()
def stats(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    since: str = typer.Option(
        "30d",
        "--since",
        help="Start of the window: a duration back from now (90m, 12h, 30d, 2w) or a date "
        "(2026-11-01, 2026-11-01T09:00:00Z).",
    ),
    service: str | None = typer.Option(None, "--service", help="Only this service."),
    env: str | None = typer.Option(None, "--env", help="Only this environment."),
) -> None:
    """DORA figures from the GitOps history and Ferry's records: deployments and how often, lead
    time from build to live, change-failure rate (rolled back) and time to restore."""
    from datetime import UTC, datetime

    from ferry.app import stats as dora

    check_names(service=service, environment=env)
    now = datetime.now(UTC)
    try:
        start = dora.parse_since(since, now)
    except dora.StatsError as e:
        fail(str(e))
    report = dora.stats(load_settings(), since=start, now=now, service=service, env=env)
    if as_json:
        echo_json(report)
        return
    typer.echo(f"since {report['since']} ({report['days']:g} days)")
    rows = [
        [
            "SERVICE",
            "ENV",
            "DEPLOYS",
            "PER WEEK",
            "LEAD P50",
            "LEAD P90",
            "FAILED",
            "CFR",
            "RESTORE P50",
            "RESTORE P90",
        ]
    ]
    for row in [*report["rows"], *report["all"]]:
        rows.append(_cells(row, dora.duration))
    print_rows(rows)


def _cells(row: dict[str, Any], duration: Any) -> list[str]:
    cfr = row["change_failure_rate"]
    lead, restore = row["lead_time"], row["time_to_restore"]
    return [
        "(all)" if row["service"] == "*" else row["service"],
        row["env"],
        str(row["deployments"]),
        f"{row['per_week']:.1f}",
        duration(lead["median_s"]),
        duration(lead["p90_s"]),
        str(row["failed"]),
        "-" if cfr is None else f"{100 * cfr:.0f}%",
        duration(restore["median_s"]),
        duration(restore["p90_s"]),
    ]
