"""pr-writer's handlers: promotion commands in; branches, pull requests, merges and changes out.

Every step is idempotent under redelivery: the forge finds a PR by its promotion id, a merged PR
stays merged, and each change is published once (keyed by promotion id and kind)."""

from __future__ import annotations

from ferry.adapters.state import Candidate, CandidateStore, PromotionStore
from ferry.core.errors import Rejected
from ferry.core.events import Change, Event, PromotionCommand
from ferry.runtime import failpoints, resources
from ferry.runtime.worker import WorkerContext, WorkerSpec
from pr_writer import rollback
from pr_writer.body import body, commit_message, title

# A merge that conflicts is redone from the new main this many times before it is given up.
MERGE_ATTEMPTS = 3


def setup(ctx: WorkerContext) -> None:
    ctx.resources["forge"] = resources.forge(ctx.settings)
    resources.gitops(ctx)


def handle_promotion(event: Event, ctx: WorkerContext) -> None:
    assert isinstance(event, PromotionCommand)
    with ctx.bus.lock(f"promotion:{event.promotion_id}", wait_s=60):
        try:
            if event.kind == "open":
                _open(event, ctx)
            elif event.kind == "merge":
                _merge(event, ctx)
            elif event.kind == "close":
                _close(event, ctx)
            elif event.kind == "rollback":
                rollback.roll_back(event, ctx)
            else:
                raise Rejected(f"promotion kind {event.kind!r} is not handled by this version")
        except Rejected as e:
            _failed(event, ctx, str(e))
            raise


def _open(cmd: PromotionCommand, ctx: WorkerContext) -> None:
    from ferry.adapters.forge import PermanentForgeError

    forge = ctx.resources["forge"]
    repo = resources.gitops(ctx)
    pr = forge.find_pr(cmd.promotion_id)
    successor = _successor(ctx, cmd)
    if pr is None and successor is not None:
        ctx.audit("open_pr", cmd.subject, "skipped", f"superseded by {successor.digest}", cmd)
        return
    if pr is None:
        policy = repo.policy()
        branch = f"ferry/{cmd.target_env}/{cmd.service}/{cmd.digest[7:19]}"
        if _cut_branch(ctx, cmd, branch) is None:
            ctx.audit("open_pr", cmd.subject, "skipped", f"{cmd.target_env} already pins it", cmd)
            return
        failpoints.hit("pr-writer.after-push")
        try:
            pr = forge.open_pr(
                head=branch,
                title=title(cmd),
                body=body(cmd, policy.values_path(cmd.target_env, cmd.service), policy.digest_key),
                labels=["ferry", f"env/{cmd.target_env}"],
                key=cmd.promotion_id,
            )
        except PermanentForgeError as e:
            raise Rejected(f"forge refused the pull request for {cmd.subject}: {e}") from e
        ctx.audit("open_pr", cmd.subject, "opened", f"PR #{pr.number}", cmd)
    _remember(ctx, cmd)
    failpoints.hit("pr-writer.after-open")
    _publish(ctx, cmd, "pr_opened", pr.number)
    if cmd.auto_merge and pr.state == "open":
        pr = _do_merge(ctx, cmd, pr.number)
    elif pr.state == "open":
        # Every gate passed, but this environment is merged by a person.
        forge.set_status(
            pr.number,
            "ferry/gates",
            "success",
            f"all gates passed; merge when ready: ferry pr merge {pr.number}",
        )
    failpoints.hit("pr-writer.after-merge")
    if pr.state == "closed":
        _publish(ctx, cmd, "pr_closed", pr.number, reason=_closed_reason(pr))
    if pr.state == "merged":
        _publish(ctx, cmd, "pr_merged", pr.number, merge_commit=pr.merge_commit)


def _merge(cmd: PromotionCommand, ctx: WorkerContext) -> None:
    pr = ctx.resources["forge"].find_pr(cmd.promotion_id)
    if pr is None:
        raise Rejected(f"no pull request for promotion {cmd.promotion_id}: open it first")
    if pr.state == "open":
        pr = _do_merge(ctx, cmd, pr.number)
    if pr.state == "merged":
        _publish(ctx, cmd, "pr_merged", pr.number, merge_commit=pr.merge_commit)


def _close(cmd: PromotionCommand, ctx: WorkerContext) -> None:
    forge = ctx.resources["forge"]
    pr = forge.find_pr(cmd.promotion_id)
    if pr is None:
        return
    if pr.state == "open":
        pr = forge.close_pr(pr.number, comment=cmd.reason or "closed by ferry")
    if pr.state == "closed":
        _publish(ctx, cmd, "pr_closed", pr.number, reason=cmd.reason)


def _do_merge(  # noqa: ANN202
    ctx: WorkerContext, cmd: PromotionCommand, number: int, *, supersedable: bool = True
):
    """Merge the PR unless a newer build superseded it. When main moved under the branch and the
    merge conflicts (another promotion changed the same line), cut the branch again from the new
    main and retry: the change is one line, so redoing it is always right."""
    from ferry.adapters.forge import MergeConflict, PermanentForgeError

    forge = ctx.resources["forge"]
    for attempt in range(1, MERGE_ATTEMPTS + 1):
        successor = _successor(ctx, cmd) if supersedable else None
        if successor is not None:
            reason = (
                f"superseded by {successor.digest} (promotion {successor.promotion_id}), "
                "a newer build"
            )
            ctx.audit("merge_pr", cmd.subject, "closed", reason, cmd)
            return forge.close_pr(number, comment=reason)
        try:
            pr = forge.merge_pr(
                number, message=commit_message(cmd, f"Merge pull request #{number}: {title(cmd)}")
            )
        except MergeConflict as e:
            if attempt == MERGE_ATTEMPTS:
                raise Rejected(f"cannot merge PR #{number}: {e}") from e
            ctx.log.info("merge conflict; cutting the branch again from main", attempt=attempt)
            if _cut_branch(ctx, cmd, forge.get_pr(number).head) is None:
                reason = f"main already pins {cmd.digest}: nothing left to merge"
                return forge.close_pr(number, comment=reason)
            continue
        except PermanentForgeError as e:
            raise Rejected(f"cannot merge PR #{number}: {e}") from e
        ctx.audit(
            "merge_pr", cmd.subject, "merged", f"PR #{number} merged as {pr.merge_commit[:12]}", cmd
        )
        return pr
    raise AssertionError("unreachable")


def _cut_branch(ctx: WorkerContext, cmd: PromotionCommand, branch: str) -> str | None:
    """Push BRANCH = main + the one-line pin; None when main already pins the digest."""
    from ferry.adapters.gitops import PromotionError
    from ferry.core.values import ValuesError

    try:
        return resources.gitops(ctx).prepare_promotion(
            branch=branch,
            service=cmd.service,
            env=cmd.target_env,
            digest=cmd.digest,
            message=commit_message(cmd),
        )
    except (ValuesError, PromotionError) as e:
        raise Rejected(f"cannot promote {cmd.subject}: {e}") from e


def _remember(ctx: WorkerContext, cmd: PromotionCommand) -> None:
    PromotionStore(ctx.bus).remember(
        cmd.promotion_id,
        service=cmd.service,
        digest=cmd.digest,
        source_env=cmd.source_env,
        target_env=cmd.target_env,
    )


def _successor(ctx: WorkerContext, cmd: PromotionCommand) -> Candidate | None:
    """The newer candidate for the same (service, environment), if one replaced this one."""
    current = CandidateStore(ctx.bus).get(cmd.service, cmd.target_env)
    if current is None or current.promotion_id == cmd.promotion_id:
        return None
    return current


def _closed_reason(pr) -> str | None:  # noqa: ANN001
    return pr.comments[-1].body if pr.comments else None


def _publish(
    ctx: WorkerContext, cmd: PromotionCommand, kind: str, pr: int | None, **extra: object
) -> None:
    change = Change(
        kind=kind,  # type: ignore[arg-type]
        event_id=f"{cmd.promotion_id}:{kind}",
        promotion_id=cmd.promotion_id,
        service=cmd.service,
        digest=cmd.digest,
        env=cmd.target_env,
        source_env=cmd.source_env,
        pr=pr,
        **extra,  # type: ignore[arg-type]
    )
    ctx.bus.publish_once(f"change:{cmd.promotion_id}:{kind}", change)


def _failed(cmd: PromotionCommand, ctx: WorkerContext, reason: str) -> None:
    """Say so on ferry:changes; each failure is its own event (not published once), so that a
    promotion re-driven after a fix and failing again is reported again."""
    ctx.audit("promote", cmd.subject, "failed", reason, cmd)
    ctx.bus.publish(
        Change(
            kind="promotion_failed",
            promotion_id=cmd.promotion_id,
            service=cmd.service,
            digest=cmd.digest,
            env=cmd.target_env,
            source_env=cmd.source_env,
            reason=reason,
        )
    )


WORKER = WorkerSpec(
    name="pr-writer",
    handlers={"promotions": handle_promotion},
    setup=setup,
    description="opens and merges the one-line promotion pull requests",
)
