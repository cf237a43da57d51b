"""What a promotion pull request says: the reviewer reads what moves, where from, why, and where
each gate stands (a section rewritten when the gates change)."""

from __future__ import annotations

from ferry.core.events import PromotionCommand

# Everything after this line is the gates section, rewritten by `gates` commands.
GATES_MARK = "<!-- ferry:gates -->"


def title(cmd: PromotionCommand) -> str:
    if cmd.kind == "rollback":
        return f"Roll back {cmd.service} in {cmd.target_env} to {cmd.digest[:19]}"
    return f"Promote {cmd.service} to {cmd.target_env}: {cmd.digest[:19]}"


def commit_message(cmd: PromotionCommand, subject: str | None = None) -> str:
    """SUBJECT (default: the title) and trailers, so that `git log` on the GitOps repository alone
    tells which promotion pinned which digest from where, and what a rollback undid."""
    trailers = [
        f"Ferry-Promotion: {cmd.promotion_id}",
        f"Ferry-Digest: {cmd.digest}",
        f"Ferry-Source-Env: {cmd.source_env}",
    ]
    if cmd.rollback_of:
        trailers.append(f"Ferry-Rollback-Of: {cmd.rollback_of}")
    return f"{subject or title(cmd)}\n\n" + "\n".join(trailers) + "\n"


def rollback_body(cmd: PromotionCommand, values_path: str, digest_key: str, reverts: str) -> str:
    """REVERTS names the pull request that pinned the digest rolled back ("#12"), if known."""
    lines = [
        f"Ferry rolls **{cmd.service}** in **{cmd.target_env}** back to a digest that ran there "
        f"before. This reverts {reverts}.",
        "",
        "| | |",
        "|---|---|",
        f"| service | `{cmd.service}` |",
        f"| environment | `{cmd.target_env}` |",
        f"| rolled back | `{cmd.rollback_of}` |",
        f"| pinned again | `{cmd.digest}` |",
        f"| asked by | {cmd.actor or '-'}{' (forced)' if cmd.force else ''} |",
        f"| reason | {cmd.reason or '-'} |",
        f"| promotion | `{cmd.promotion_id}` |",
        "",
        f"This change sets `{digest_key}` in `{values_path}` and nothing else: one line. "
        "A rollback skips approval and soak: the digest ran here before.",
        "",
        "### Evidence",
    ]
    lines += [f"- {r}" for r in cmd.evidence.get("reasons") or []]
    for m in cmd.evidence.get("measurements") or []:
        lines.append(f"- measurement: `{m}`")
    return "\n".join(lines) + "\n"


def body(cmd: PromotionCommand, values_path: str, digest_key: str) -> str:
    lines = [
        f"Ferry promotes **{cmd.service}** from **{cmd.source_env}** to **{cmd.target_env}**.",
        "",
        "| | |",
        "|---|---|",
        f"| service | `{cmd.service}` |",
        f"| digest | `{cmd.digest}` |",
        f"| source environment | `{cmd.source_env}` |",
        f"| target environment | `{cmd.target_env}` |",
        f"| strategy | {cmd.strategy} |",
        f"| promotion | `{cmd.promotion_id}` |",
        "",
        f"This change sets `{digest_key}` in `{values_path}` and nothing else: one line.",
        "",
        "### Evidence",
    ]
    reasons = cmd.evidence.get("reasons") or ([cmd.reason] if cmd.reason else [])
    lines += [f"- {r}" for r in reasons]
    for key in ("commit", "author", "check", "url", "image", "built_at", "caused_by"):
        if cmd.evidence.get(key):
            lines.append(f"- {key}: `{cmd.evidence[key]}`")
    text = "\n".join(lines) + "\n"
    return with_gates(text, cmd) if cmd.gates else text


def gates_section(cmd: PromotionCommand) -> str:
    lines = [GATES_MARK, "### Gates", "", "| gate | state | why |", "|---|---|---|"]
    for g in cmd.gates:
        why = g.get("reason", "").replace("|", "\\|")
        lines.append(f"| {g.get('gate', '')} | {g.get('status', '')} | {why} |")
    state = cmd.gates_state or "pending"
    lines += ["", f"`ferry/gates`: **{state}** ({cmd.gates_description or ''})"]
    return "\n".join(lines) + "\n"


def with_gates(text: str, cmd: PromotionCommand) -> str:
    """TEXT with its gates section replaced by (or extended with) the one CMD describes."""
    head = text.split(GATES_MARK, 1)[0].rstrip("\n")
    return head + "\n\n" + gates_section(cmd)
