"""pr-writer: executes promotion commands (open, set the gates, merge, close); it decides
nothing. Branches, pull requests, merges and changes out.

Every step is idempotent under redelivery: the forge finds a PR by its promotion id, a merged PR
stays merged, and each change is published once (keyed by promotion id and kind). A command whose
fence a later choice of gate-evaluator has passed is left alone: it was superseded."""

from __future__ import annotations

from ferry.adapters.state import CandidateStore, PromotionStore
from ferry.core.errors import Rejected
from ferry.core.events import Event, PromotionCommand
from ferry.runtime import failpoints, resources
from ferry.runtime.worker import WorkerContext, WorkerSpec
from pr_writer import rollback
from pr_writer.body import body, commit_message, title, with_gates

# A merge that conflicts is redone from the new main this many times before it is given up.
MERGE_ATTEMPTS = 3


def setup(ctx: WorkerContext) -> None:
    ctx.resources["forge"] = resources.forge(ctx.settings)
    resources.gitops(ctx)


def handle_promotion(event: Event, ctx: WorkerContext) -> None:
    assert isinstance(event, PromotionCommand)
    with ctx.bus.lock(f"promotion:{event.promotion_id}", wait_s=60):
        try:
            if event.kind != "close" and _superseded(event, ctx):
                return
            if event.kind == "open":
                _open(event, ctx)
            elif event.kind == "gates":
                _gates(event, ctx)
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


def _superseded(cmd: PromotionCommand, ctx: WorkerContext) -> bool:
    """Was CMD replaced by a later choice for the same (service, environment)?"""
    if not cmd.fence:
        return False
    candidates = CandidateStore(ctx.bus)
    if candidates.fence(cmd.service, cmd.target_env) <= cmd.fence:
        return False
    later = candidates.get(cmd.service, cmd.target_env)
    if later is not None and later.promotion_id == cmd.promotion_id:
        return False  # the same promotion asked for again
    name = later.digest if later else "a later decision"
    ctx.audit(f"{cmd.kind}_pr", cmd.subject, "skipped", f"superseded by {name}", cmd)
    return True


def _open(cmd: PromotionCommand, ctx: WorkerContext) -> None:
    from ferry.adapters.forge import PermanentForgeError

    forge = ctx.resources["forge"]
    repo = resources.gitops(ctx)
    pr = forge.find_pr(cmd.pr_key)
    if pr is None:
        policy = repo.policy()
        branch = f"ferry/{cmd.target_env}/{cmd.service}/{cmd.digest[7:19]}"
        if _cut_branch(ctx, cmd, branch) is None:
            ctx.audit("open_pr", cmd.subject, "skipped", f"{cmd.target_env} already pins it", cmd)
            return
        failpoints.hit("pr-writer.after-push")
        ctx.bus.check_locks()  # the push may have outlived the lock: stop if it was lost
        try:
            pr = forge.open_pr(
                head=branch,
                title=title(cmd),
                body=body(cmd, policy.values_path(cmd.target_env, cmd.service), policy.digest_key),
                labels=["ferry", f"env/{cmd.target_env}"],
                key=cmd.pr_key,
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
        _set_gates(ctx, cmd, pr)
    failpoints.hit("pr-writer.after-merge")
    if pr.state == "closed":
        _publish(ctx, cmd, "pr_closed", pr.number, reason=_closed_reason(pr))
    if pr.state == "merged":
        _publish(ctx, cmd, "pr_merged", pr.number, merge_commit=pr.merge_commit)


def _gates(cmd: PromotionCommand, ctx: WorkerContext) -> None:
    """Show the gates' state on the PR. No PR yet: the open command will (gate-evaluator sends
    newer gates again once it hears the PR opened)."""
    pr = ctx.resources["forge"].find_pr(cmd.pr_key)
    if pr is not None and pr.state == "open":
        _set_gates(ctx, cmd, pr)


def _set_gates(ctx: WorkerContext, cmd: PromotionCommand, pr) -> None:  # noqa: ANN001
    """The `ferry/gates` commit status and the gates section of the body (each written only
    when it changed)."""
    forge = ctx.resources["forge"]
    state = cmd.gates_state or "success"
    description = cmd.gates_description or "all gates passed"
    if state == "success" and not cmd.auto_merge:
        description += f"; merge when ready: ferry pr merge {pr.number}"
    if cmd.gates:
        forge.update_body(pr.number, with_gates(pr.body, cmd))
    forge.set_status(pr.number, "ferry/gates", state, description)
    ctx.log.info("gates shown on the pull request", pr=pr.number, state=state)


def _merge(cmd: PromotionCommand, ctx: WorkerContext) -> None:
    pr = ctx.resources["forge"].find_pr(cmd.pr_key)
    if pr is None:
        raise Rejected(f"no pull request for promotion {cmd.promotion_id}: open it first")
    if pr.state == "open":
        _set_gates(ctx, cmd.model_copy(update={"auto_merge": True}), pr)
        pr = _do_merge(ctx, cmd, pr.number)
    if pr.state == "merged":
        _publish(ctx, cmd, "pr_merged", pr.number, merge_commit=pr.merge_commit)


def _close(cmd: PromotionCommand, ctx: WorkerContext) -> None:
    forge = ctx.resources["forge"]
    pr = forge.find_pr(cmd.pr_key)
    if pr is None:
        return
    if pr.state == "open":
        ctx.bus.check_locks()
        pr = forge.close_pr(pr.number, comment=cmd.reason or "closed by ferry")
        ctx.audit("close_pr", cmd.subject, "closed", f"PR #{pr.number}: {cmd.reason}", cmd)
    if pr.state == "closed":
        _publish(ctx, cmd, "pr_closed", pr.number, reason=cmd.reason)


def _do_merge(ctx: WorkerContext, cmd: PromotionCommand, number: int):  # noqa: ANN202
    """Merge the PR. When main moved under the branch and the merge conflicts (another
    promotion changed the same line), cut the branch again from the new main and retry: the change
    is one line, so redoing it is always right."""
    from ferry.adapters.forge import MergeConflict, PermanentForgeError

    forge = ctx.resources["forge"]
    for attempt in range(1, MERGE_ATTEMPTS + 1):
        ctx.bus.check_locks()
        try:
            pr = forge.merge_pr(
                number, message=commit_message(cmd, f"Merge pull request #{number}: {title(cmd)}")
            )
        except MergeConflict as e:
            if attempt == MERGE_ATTEMPTS:
                raise Rejected(f"cannot merge PR #{number}: {e}") from e
            ctx.log.info("merge conflict; cutting the branch again from main", attempt=attempt)
            if _cut_branch(ctx, cmd, forge.get_pr(number).head) is None:
                pr = forge.get_pr(number)
                if pr.state == "merged":  # by another delivery of this command, meanwhile
                    return pr
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

    ctx.bus.check_locks()
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


def _closed_reason(pr) -> str | None:  # noqa: ANN001
    return pr.comments[-1].body if pr.comments else None


def _publish(
    ctx: WorkerContext, cmd: PromotionCommand, kind: str, pr: int | None, **extra: object
) -> None:
    ctx.bus.emit(cmd.change(kind, pr, **extra))


def _failed(cmd: PromotionCommand, ctx: WorkerContext, reason: str) -> None:
    """Say so on ferry:changes; each failure is its own event (not published once), so that a
    promotion re-driven after a fix and failing again is reported again."""
    ctx.audit("promote", cmd.subject, "failed", reason, cmd)
    ctx.bus.emit(cmd.change("promotion_failed", reason=reason))


WORKER = WorkerSpec(
    name="pr-writer",
    handlers={"promotions": handle_promotion},
    setup=setup,
    description="opens and merges the one-line promotion pull requests",
)
