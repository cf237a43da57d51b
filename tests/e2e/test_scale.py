"""Two pr-writer replicas promote fifty services at once: no lost update on the GitOps repo."""

from __future__ import annotations

from tests.helpers import Cluster, digest_of, wait_until

N = 50


def test_two_pr_writers_fifty_services(cluster: Cluster) -> None:
    services = [f"svc-{i:02d}" for i in range(N)]
    cluster.init_repo(services)
    cluster.start("gate-evaluator")
    cluster.start("pr-writer")
    cluster.start("pr-writer")
    digests = {s: digest_of(s) for s in services}
    for s, d in digests.items():
        cluster.build(s, d)
    wait_until(lambda: len(cluster.changes("pr_merged")) >= N, 120, f"{N} merges")
    prs = cluster.forge.list_prs()
    assert len(prs) == N and all(p.state == "merged" for p in prs)
    assert len({p.number for p in prs}) == N
    assert len(cluster.changes("pr_merged")) == N
    for s, d in digests.items():
        assert cluster.repo.pinned(s, "dev") == d, s
    # Both replicas did part of the work.
    writers = [p for p in cluster.procs if "pr-writer" in str(p.log_path)]  # type: ignore[attr-defined]
    assert len(writers) == 2
    for proc in writers:
        assert '"action": "merge_pr"' in cluster.log_of(proc)
