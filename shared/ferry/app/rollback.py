"""`ferry rollback SERVICE ENV`: check a person's rollback request against main and the policy,
then build the command pr-writer carries out. Every mistake is found here, before anything is
published."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from ferry.adapters.gitops import GitOpsRepo
from ferry.core.errors import Rejected
from ferry.core.events import PromotionCommand
from ferry.core.names import check_digest, check_label
from ferry.core.rollback import refusal, rollback_command


def request_rollback(
    repo: GitOpsRepo,
    *,
    service: str,
    env: str,
    to: str | None,
    actor: str,
    reason: str | None,
    force: bool,
) -> PromotionCommand:
    """The rollback command for SERVICE in ENV (to TO, default: the digest pinned before the
    current one); Rejected with one line when it cannot be done."""
    try:
        check_label(service, "service")
        check_label(env, "environment")
        if to is not None:
            check_digest(to, "--to")
    except ValueError as e:
        raise Rejected(str(e)) from None
    if not actor.strip():
        raise Rejected("--as must name who asks for the rollback")
    main = repo.at_main()
    policy = main.policy
    env_policy = policy.environment(env, service)  # unknown environment: PolicyError
    path = policy.values_path(env, service)
    current = main.pinned(service, env)
    if current is None:
        raise Rejected(f"{path} pins nothing on main: there is nothing to roll back")
    history = [d for _, d in repo.pin_history(service, env)]
    if to is None:
        to = repo.pinned_before(service, env, current)
        if to is None:
            raise Rejected(
                f"no digest was pinned in {path} before {current}: name one with --to DIGEST"
            )
    elif to == current:
        raise Rejected(f"{env} already pins {to}: nothing to roll back")
    elif to not in history:
        raise Rejected(
            f"{to} never ran in {env} (not in the history of {path} on main): "
            "a rollback pins a digest that ran there before; promote a new one instead"
        )
    why = refusal(
        env_policy, dict(policy.approvers.teams), actor=actor, force=force, now=datetime.now(UTC)
    )
    if why is not None:
        raise Rejected(f"rollback of {service} in {env} {why}")
    return rollback_command(
        service=service,
        env=env,
        to=to,
        rolls_back=current,
        actor=actor,
        reason=reason or f"rolled back by {actor}",
        request=uuid.uuid4().hex,
        force=force,
    )
