"""Reviews on a promotion PR as approvals: which reviews stand (`review_words`), and the approval
gate's `via`, which counts only the channels the policy allows. Plain values in, words out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from ferry.core.evidence import Word
from ferry.core.gates import Facts, approval_gate
from ferry.core.policy import ApprovalGate
from ferry.core.reviews import review_words

D = "sha256:" + "cd" * 32
HEAD, OLD = "a" * 40, "b" * 40
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
FORGE_ONLY = ApprovalGate(min_approvals=1, approvers=["release-lead", "qa"], via=("forge",))


@dataclass
class Review:
    author: str
    state: str
    at: datetime | None = None
    commit: str | None = HEAD
    body: str = ""


def words_of(*reviews: Review) -> tuple[tuple[Word, ...], tuple[str, ...]]:
    return review_words(reviews, HEAD, D, "prod", 7)


def test_an_approving_review_on_the_head_is_a_forge_approval() -> None:
    (word,), notes = words_of(Review("release-lead", "approved", T0))
    assert (word.kind, word.actor, word.via, word.at) == ("approval", "release-lead", "forge", T0)
    assert word.reason == "approved #7 on the forge" and notes == ()


def test_a_review_on_an_older_head_does_not_count_and_says_so() -> None:
    words, notes = words_of(Review("release-lead", "approved", T0, commit=OLD))
    assert words == ()
    assert notes == (f"release-lead's review is on an older head ({OLD[:12]}): it does not count",)


def test_changes_requested_is_a_rejection_and_a_later_comment_leaves_it_standing() -> None:
    (word,), _ = words_of(
        Review("qa", "approved", T0),
        Review("qa", "changes_requested", T0 + timedelta(minutes=1), body="flaky\nmigration"),
        Review("qa", "commented", T0 + timedelta(minutes=2)),
    )
    assert (word.kind, word.reason) == ("rejection", "changes requested on #7: flaky migration")


def test_gitlab_approvals_carry_no_commit_and_count() -> None:
    (word,), _ = words_of(Review("qa", "approved", None, commit=None))
    assert word.kind == "approval"


@given(
    st.lists(
        st.builds(
            Review,
            author=st.sampled_from(["release-lead", "qa", "mallory"]),
            state=st.sampled_from(["approved", "changes_requested", "commented"]),
            at=st.integers(0, 100).map(lambda m: T0 + timedelta(minutes=m)),
            commit=st.sampled_from([HEAD, OLD, None]),
        ),
        max_size=12,
    )
)
def test_each_reviewer_has_at_most_one_standing_word_from_a_review_on_the_head(reviews) -> None:  # noqa: ANN001
    words, _ = words_of(*reviews)
    assert len({w.actor for w in words}) == len(words)
    for w in words:
        mine = [r for r in reviews if r.author == w.actor and r.commit in (HEAD, None)]
        # the forge lists reviews oldest first: at the same time, the later one is newer
        latest = None
        for r in mine:
            if r.state != "commented" and (latest is None or r.at >= latest.at):
                latest = r
        assert latest is not None and w.at == latest.at
        assert w.kind == ("approval" if latest.state == "approved" else "rejection")


def facts(*words: Word) -> Facts:
    return Facts(now=T0 + timedelta(hours=1), digest=D, env="prod", words=words)


def test_via_forge_counts_no_cli_approval_and_says_where_each_came_from() -> None:
    cli = Word("approval", "release-lead", D, "prod", "", T0)
    result = approval_gate(FORGE_ONLY, facts(cli))
    assert result.status == "waiting"
    assert "not counted: release-lead via cli (only forge counts)" in result.reason
    forge = Word("approval", "qa", D, "prod", "", T0, via="forge")
    result = approval_gate(FORGE_ONLY, facts(cli, forge))
    assert (result.status, result.reason) == ("passed", "approved by qa via forge (1/1)")


def test_a_rejection_blocks_whichever_channel_carried_it() -> None:
    forge = Word("approval", "qa", D, "prod", "", T0, via="forge")
    no = Word("rejection", "release-lead", D, "prod", "not today", T0)
    assert approval_gate(FORGE_ONLY, facts(forge, no)).status == "failed"


def test_by_default_both_channels_count() -> None:
    gate = ApprovalGate(min_approvals=2, approvers=["release-lead", "qa"])
    words = (
        Word("approval", "release-lead", D, "prod", "", T0),
        Word("approval", "qa", D, "prod", "", T0, via="forge"),
    )
    result = approval_gate(gate, facts(*words))
    assert result.reason == "approved by qa via forge, release-lead via cli (2/2)"
