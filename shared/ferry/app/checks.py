"""What the CLI checks against the policy and main before it publishes a person's or a job's
event: the mistakes it can see at once (an unknown service or environment, an image of another
repository, an approval nobody asked for, an approver who is not listed) end as one line and a
non-zero exit, not as a dead letter later. What only a worker can judge still goes to the
dead-letter queue; `--no-check` publishes blind, for scripts that run without the repository."""

from __future__ import annotations

from ferry.adapters.gitops import MainSnapshot
from ferry.core.errors import Rejected
from ferry.core.policy import BUILD
from ferry.core.rollback import approvers_of


def check_service(main: MainSnapshot, service: str, env: str | None = None) -> None:
    """SERVICE has a values file on main (in ENV, given; else in the first environment), and
    ENV is one ferry.yaml defines (PolicyError otherwise)."""
    policy = main.policy
    where = env or policy.env_names()[0]
    policy.environment(where)
    if not main.values_exists(service, where):
        path = policy.values_path(where, service)
        raise Rejected(
            f"unknown service {service!r}: {path} does not exist on main "
            "(add the service with `ferry init` or by hand first)"
        )


def check_build(main: MainSnapshot, service: str, image: str | None, env: str | None) -> None:
    """A CI result: the service and environment exist, and IMAGE is the service's repository
    in the environments it is promoted to."""
    check_service(main, service, env)
    targets = main.policy.targets_from(env or BUILD, service)
    where = env or (targets[0] if targets else None)
    if image is None or where is None:
        return
    expected = main.repository(service, where)
    if expected and image != expected:
        path = main.policy.values_path(where, service)
        raise Rejected(
            f"image {image!r} is not the repository of {service!r} ({expected!r} in {path}): "
            "a digest means nothing without its repository"
        )


def check_word(main: MainSnapshot, service: str, env: str, actor: str, kind: str) -> None:
    """An approval or rejection: ENV has an approval gate and ACTOR is one of its approvers."""
    check_service(main, service, env)
    env_policy = main.policy.environment(env, service)
    if env_policy.gates.approval is None:
        raise Rejected(f"{env} has no approval gate in ferry.yaml: an {kind} there changes nothing")
    listed = approvers_of(env_policy, dict(main.policy.approvers.teams))
    if actor not in listed:
        raise Rejected(
            f"{actor} is not an approver of {env} (listed: {', '.join(sorted(listed))}): "
            f"their {kind} would not count"
        )


def check_promote(main: MainSnapshot, service: str, env: str, digest: str) -> None:
    """Asking again for DIGEST in ENV: it must be live in the environment ENV is promoted from."""
    check_service(main, service, env)
    source = main.policy.environment(env, service).promote_from
    if source == BUILD:
        return
    live = main.pinned(service, source)
    if live != digest:
        raise Rejected(
            f"{digest} is not live in {source} ({source} pins {live or 'nothing'}): only what "
            f"runs in {source} moves to {env}"
        )
