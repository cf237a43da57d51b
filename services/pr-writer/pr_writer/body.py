"""What a promotion pull request says: the reviewer reads what moves, where from, and why."""

from __future__ import annotations

from ferry.core.events import PromotionCommand


def title(cmd: PromotionCommand) -> str:
    return f"Promote {cmd.service} to {cmd.target_env}: {cmd.digest[:19]}"


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
    return "\n".join(lines) + "\n"
