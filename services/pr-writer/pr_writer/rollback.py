"""pr-writer's rollback: pin a digest that ran in the environment before, by a pull request
labelled `rollback` that links the one it reverts, merged at once (no approval, no soak: the
digest ran there before). Refused while a deny window is open unless forced by an approver."""

from __future__ import annotations

from datetime import UTC, datetime

import pr_writer.worker as worker
from ferry.adapters.state import RollbackStore
from ferry.core.errors import Rejected
from ferry.core.events import PromotionCommand, promotion_id
from ferry.core.rollback import refusal
from ferry.runtime import resources
from ferry.runtime.worker import WorkerContext
from pr_writer.body import rollback_body, title


def roll_back(cmd: PromotionCommand, ctx: WorkerContext) -> None:
    """Open and merge the rollback PR for CMD (idempotent: the PR is found by its promotion id)."""
    from ferry.adapters.forge import PermanentForgeError

    forge = ctx.resources["forge"]
    subject = f"{cmd.service}@{cmd.rollback_of or '-'} -> {cmd.target_env} (back to {cmd.digest})"
    pr = forge.find_pr(cmd.promotion_id)
    if pr is None:
        main = resources.gitops(ctx).at_main()
        policy = main.policy
        env_policy = policy.environment(cmd.target_env, cmd.service)
        pinned = main.pinned(cmd.service, cmd.target_env)
        if pinned == cmd.digest:
            ctx.audit("rollback", subject, "skipped", f"{cmd.target_env} already pins it", cmd)
            return
        if cmd.rollback_of and pinned != cmd.rollback_of:
            reason = f"{cmd.target_env} pins {pinned}, not {cmd.rollback_of}: nothing to roll back"
            ctx.audit("rollback", subject, "skipped", reason, cmd)
            return
        now = datetime.now(UTC)
        teams = dict(policy.approvers.teams)
        why = refusal(env_policy, teams, actor=cmd.actor, force=cmd.force, now=now)
        if why is not None:
            raise Rejected(f"rollback of {cmd.service} in {cmd.target_env} {why}")
        if cmd.rollback_of:
            # Recorded before the merge: gate-evaluator must never see main without the marker.
            RollbackStore(ctx.bus).mark(
                cmd.service,
                cmd.target_env,
                cmd.rollback_of,
                to=cmd.digest,
                actor=cmd.actor,
                reason=cmd.reason,
                at=now.isoformat(),
                promotion_id=cmd.promotion_id,
            )
        branch = f"ferry/{cmd.target_env}/{cmd.service}/rollback-{cmd.promotion_id[2:14]}"
        if worker._cut_branch(ctx, cmd, branch) is None:
            ctx.audit("rollback", subject, "skipped", f"{cmd.target_env} already pins it", cmd)
            return
        reverts = _reverted_pr(forge, cmd)
        path = policy.values_path(cmd.target_env, cmd.service)
        ctx.bus.check_locks()
        try:
            pr = forge.open_pr(
                head=branch,
                title=title(cmd),
                body=rollback_body(cmd, path, policy.digest_key, reverts),
                labels=["ferry", "rollback", f"env/{cmd.target_env}"],
                key=cmd.promotion_id,
            )
        except PermanentForgeError as e:
            raise Rejected(f"forge refused the rollback pull request for {subject}: {e}") from e
        ctx.audit("rollback", subject, "opened", f"PR #{pr.number} reverts {reverts}", cmd)
    worker._remember(ctx, cmd)
    worker._publish(ctx, cmd, "pr_opened", pr.number, rollback_of=cmd.rollback_of)
    if pr.state == "open":
        pr = worker._do_merge(ctx, cmd, pr.number)
    if pr.state == "merged":
        worker._publish(
            ctx,
            cmd,
            "pr_merged",
            pr.number,
            merge_commit=pr.merge_commit,
            rollback_of=cmd.rollback_of,
        )
        by = f"asked by {cmd.actor}" + (" (forced)" if cmd.force else "")
        ctx.audit("rollback", subject, "rolled back", f"PR #{pr.number} merged; {by}", cmd)


def _reverted_pr(forge: object, cmd: PromotionCommand) -> str:
    """'#12' for the pull request that pinned the digest rolled back, when Ferry opened one."""
    if not cmd.rollback_of:
        return "the current pin"
    original = forge.find_pr(promotion_id(cmd.service, cmd.rollback_of, cmd.target_env))  # type: ignore[attr-defined]
    if original is None:
        return f"the pin of {cmd.rollback_of} (not made by a Ferry pull request)"
    return f"#{original.number}"
