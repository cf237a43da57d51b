"""ferry.yaml: the contract keys, defaults, overrides and one-line errors."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ferry.core.policy import PolicyError, format_duration, load_policy, parse_duration

DESIGN_POLICY = """\
layout:
  values_path: "envs/{env}/{service}/values.yaml"
  digest_key: "image.digest"
environments:
  dev:     {promote_from: build, auto_merge: true}
  staging: {promote_from: dev, gates: {ci: {}}, auto_merge: true}
  prod:
    promote_from: staging
    strategy: canary
    gates:
      approval: {min_approvals: 1, approvers: [release-lead, "team:sre"], author_can_approve: false}
      soak: {min_duration: 2h, checks: [load-test]}
      windows:
        - {allow: "0 9 * * 1-4", duration: 6h, timezone: Europe/Berlin}
        - {deny: "0 0 20 12 *", duration: 14d, timezone: UTC}
    canary: {count: 5, failure_limit: 0, inconclusive_limit: 0, consecutive_error_limit: 4,
             progress_deadline: 30m}
approvers:
  teams: {sre: [sre-oncall-1, sre-oncall-2]}
previews: {label: preview, ttl: 48h, ttl_from: last_activity, max_ttl: 7d, quota_per_team: 5,
           warn_before: 2h}
services:
  payments: {environments: {prod: {gates: {approval: {min_approvals: 2}}}}}
"""

MINIMAL = "environments:\n  dev: {promote_from: build}\n"


def error(text: str) -> str:
    with pytest.raises(PolicyError) as info:
        load_policy(text)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_design_policy_loads() -> None:
    policy = load_policy(DESIGN_POLICY)
    assert policy.env_names() == ["dev", "staging", "prod"]
    dev, staging, prod = (policy.environment(e) for e in policy.env_names())
    assert dev.promote_from == "build" and dev.auto_merge and dev.strategy == "direct"
    assert staging.gates.ci is not None and staging.gates.ci.checks == []
    assert staging.gates.approval is None and staging.gates.soak is None
    assert prod.strategy == "canary" and not prod.auto_merge
    assert prod.gates.ci is None
    assert prod.gates.approval is not None
    assert prod.gates.approval.min_approvals == 1
    assert prod.gates.approval.approvers == ["release-lead", "team:sre"]
    assert prod.gates.approval.author_can_approve is False
    assert prod.gates.soak is not None
    assert prod.gates.soak.min_duration == timedelta(hours=2)
    assert prod.gates.soak.checks == ["load-test"]
    allow, deny = prod.gates.windows
    assert (allow.kind, allow.cron, allow.duration, allow.timezone) == (
        "allow",
        "0 9 * * 1-4",
        timedelta(hours=6),
        "Europe/Berlin",
    )
    assert (deny.kind, deny.cron, deny.duration) == ("deny", "0 0 20 12 *", timedelta(days=14))
    assert prod.canary.count == 5 and prod.canary.consecutive_error_limit == 4
    assert prod.canary.progress_deadline == timedelta(minutes=30)
    assert policy.approvers.teams == {"sre": ["sre-oncall-1", "sre-oncall-2"]}
    assert policy.previews.ttl == timedelta(hours=48)
    assert policy.previews.max_ttl == timedelta(days=7)
    assert policy.previews.quota_per_team == 5


def test_defaults() -> None:
    policy = load_policy(MINIMAL)
    assert policy.layout.values_path == "envs/{env}/{service}/values.yaml"
    assert policy.digest_key == "image.digest"
    assert policy.repository_key == "image.repository"
    env = policy.environment("dev")
    assert env.auto_merge is False and env.strategy == "direct"
    assert env.gates.ci is None and env.gates.windows == []
    assert policy.previews.label == "preview"


def test_unknown_keys_are_ignored() -> None:
    policy = load_policy(
        "future: 1\nlayout: {flavour: x}\n"
        "environments:\n  dev: {promote_from: build, colour: blue, gates: {magic: {}}}\n"
    )
    assert policy.env_names() == ["dev"]


def test_service_overrides_deep_merge_only_the_given_key() -> None:
    policy = load_policy(DESIGN_POLICY)
    merged = policy.environment("prod", "payments")
    assert merged.gates.approval is not None
    assert merged.gates.approval.min_approvals == 2
    assert merged.gates.approval.approvers == ["release-lead", "team:sre"]
    assert merged.gates.soak is not None and merged.gates.soak.checks == ["load-test"]
    assert merged.strategy == "canary" and len(merged.gates.windows) == 2
    # other services and the env itself are untouched
    assert policy.environment("prod", "api") == policy.environment("prod")
    assert policy.environment("prod").gates.approval.min_approvals == 1  # type: ignore[union-attr]


def test_targets_from() -> None:
    policy = load_policy(DESIGN_POLICY)
    assert policy.targets_from("build") == ["dev"]
    assert policy.targets_from("dev") == ["staging"]
    assert policy.targets_from("staging") == ["prod"]
    assert policy.targets_from("prod") == []


def test_targets_from_with_fan_out_in_file_order() -> None:
    policy = load_policy(
        "environments:\n  dev: {promote_from: build}\n  eu: {promote_from: dev}\n"
        "  us: {promote_from: dev}\n"
    )
    assert policy.targets_from("dev") == ["eu", "us"]


def test_values_path() -> None:
    policy = load_policy(DESIGN_POLICY)
    assert policy.values_path("staging", "api") == "envs/staging/api/values.yaml"
    for env, service in [("staging", "../etc"), ("staging", "API"), ("a/b", "api"), ("", "api")]:
        with pytest.raises(PolicyError, match="DNS label"):
            policy.values_path(env, service)


def test_custom_layout() -> None:
    policy = load_policy(
        'layout: {values_path: "apps/{service}/{env}.yaml", digest_key: "app.image.sha"}\n'
        + MINIMAL
    )
    assert policy.values_path("dev", "api") == "apps/api/dev.yaml"
    assert policy.repository_key == "app.image.repository"


def test_unknown_environment() -> None:
    policy = load_policy(DESIGN_POLICY)
    with pytest.raises(PolicyError) as info:
        policy.environment("qa")
    assert str(info.value) == "unknown environment 'qa': ferry.yaml defines dev, staging, prod"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("14d", timedelta(days=14)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("bad", ["", "2", "h", "2x", "1.5h", "30m1h", "-2h", "2 h", "2H"])
def test_parse_duration_refuses(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(bad)
    assert str(info.value) == (f"duration must look like 90s, 30m, 2h, 14d or 1h30m, got {bad!r}")


# ---------------------------------------------------------------------------- errors


def line_named(message: str, text: str) -> str:
    """The line of TEXT that an error MESSAGE ('ferry.yaml:N: ...') points at."""
    number = int(message.split(":")[1])
    return text.splitlines()[number - 1]


def test_promote_from_unknown_environment() -> None:
    text = DESIGN_POLICY.replace("promote_from: dev", "promote_from: qa")
    message = error(text)
    assert message.split(":", 2)[2].startswith(
        " environments.staging.promote_from: unknown environment 'qa' (defined: dev, staging, prod"
    )
    assert "promote_from: qa" in line_named(message, text)


def test_promote_from_cycle() -> None:
    message = error(DESIGN_POLICY.replace("promote_from: build", "promote_from: prod"))
    assert "promotion cycle" in message and "dev -> prod -> staging -> dev" in message
    assert "cycle" in error("environments:\n  dev: {promote_from: dev}\n")


def test_override_cannot_create_a_cycle_or_name_unknown_env() -> None:
    cyc = DESIGN_POLICY.replace(
        "payments: {environments: {prod:",
        "payments: {environments: {dev: {promote_from: prod}, prod:",
    )
    assert "services.payments" in error(cyc) and "cycle" in error(cyc)
    unknown = DESIGN_POLICY.replace(
        "payments: {environments: {prod", "payments: {environments: {qa"
    )
    assert "services.payments.environments.qa: unknown environment 'qa'" in error(unknown)
    bad_value = DESIGN_POLICY.replace("min_approvals: 2", "min_approvals: -1")
    assert "services.payments.environments.prod.gates.approval.min_approvals" in error(bad_value)


def test_bad_names() -> None:
    assert "DNS label" in error("environments:\n  Prod: {promote_from: build}\n")
    assert "DNS label" in error(MINIMAL + "services:\n  ../etc: {}\n")


def test_bad_durations_and_values() -> None:
    text = DESIGN_POLICY.replace("min_duration: 2h", "min_duration: 2 hours")
    message = error(text)
    assert message.split(":", 2)[2] == (
        " environments.prod.gates.soak.min_duration: duration must look like "
        "90s, 30m, 2h, 14d or 1h30m, got '2 hours'"
    )
    assert "min_duration: 2 hours" in line_named(message, text)
    assert "strategy" in error(DESIGN_POLICY.replace("strategy: canary", "strategy: yolo"))
    assert "promote_from" in error("environments:\n  dev: {auto_merge: true}\n")
    assert "timezone" in error(DESIGN_POLICY.replace("Europe/Berlin", "Mars/Olympus"))
    assert "5 fields" in error(DESIGN_POLICY.replace('"0 9 * * 1-4"', '"0 9 * *"'))
    both = DESIGN_POLICY.replace('{deny: "0 0 20 12 *"', '{allow: "0 0 * * *", deny: "0 0 20 12 *"')
    assert "exactly one of 'allow' or 'deny'" in error(both)
    assert "unknown team 'ops'" in error(DESIGN_POLICY.replace('"team:sre"', '"team:ops"'))


def test_bad_layout() -> None:
    assert "{service}" in error('layout: {values_path: "envs/{env}/values.yaml"}\n' + MINIMAL)
    assert "'..'" in error('layout: {values_path: "../{env}/{service}.yaml"}\n' + MINIMAL)
    assert "'..'" in error('layout: {values_path: "/etc/{env}/{service}"}\n' + MINIMAL)
    assert "digest_key" in error('layout: {digest_key: "image..digest"}\n' + MINIMAL)


def test_not_a_policy() -> None:
    assert error("environments:\n  dev: [\n").startswith("ferry.yaml:3:1: not valid YAML")
    assert "environments" in error("- a\n")
    assert "environments" in error("")
    assert "at least one environment" in error("environments: {}\n")
