"""The board's HTTP endpoints: bad input is a clear 4xx, never a 500; a page of the grid costs a
few pipelined round trips to Redis whatever its size, and says what `ferry explain` says."""

from __future__ import annotations

import html
from datetime import UTC, datetime

import httpx
import pytest

from ferry.app.board import Query, grid
from ferry.app.explain import explanation
from tests.helpers import Cluster, digest_of, start_board, wait_until


@pytest.fixture
def board(cluster: Cluster) -> str:
    cluster.init_repo(["api", "web"])
    return start_board(cluster)


BAD_INPUT = [
    ("/services/nope", 404, "unknown service 'nope'"),
    ("/services/API", 400, "service"),
    ("/services/api?x=1", 400, "no parameters"),
    ("/?page=abc", 400, "page must be a whole number"),
    ("/?page=0", 400, "page must be a whole number from 1"),
    ("/?page=7", 400, "past the last page"),
    ("/?per_page=100000", 400, "per_page must be a whole number from 1 to 100"),
    ("/?q=Api%2F..", 400, "q filters service names"),
    ("/?q=a&q=b", 400, "give q once"),
    ("/?sort=name", 400, "unknown parameter 'sort'"),
    ("/fragments/rows", 400, "name at least one service"),
    ("/fragments/rows?service=nope", 404, "unknown service 'nope'"),
    ("/fragments/rows?service=a%0Ab", 400, "service"),
    ("/fragments/rows?env=dev", 400, "unknown parameter 'env'"),
    ("/api/grid?page=-1", 400, "page must be a whole number"),
    ("/pulls/0", 400, "positive whole number"),
    ("/pulls/4242", 404, "no pull request #4242"),
    ("/pulls/abc", 404, "Not Found"),
    ("/events/no-such-event", 404, "no event 'no-such-event'"),
    ("/events/" + "x" * 300, 400, "1 to 200 printable characters"),
    ("/nowhere", 404, "Not Found"),
]


def test_bad_input_is_a_clear_4xx(board: str) -> None:
    # One board answers every case (starting one per case costs seconds each).
    for path, status, says in BAD_INPUT:
        answer = httpx.get(board + path)
        assert answer.status_code == status, (path, answer.text)
        assert says in html.unescape(answer.text), path


def test_the_grid_and_a_service_page_answer(board: str, cluster: Cluster) -> None:
    page = httpx.get(board + "/?q=ap")
    assert page.status_code == 200
    assert 'id="svc-api"' in page.text and 'id="svc-web"' not in page.text
    data = httpx.get(board + "/api/grid").json()
    assert data["environments"] == ["dev", "staging", "prod"]
    assert set(data["services"]) == {"api", "web"}
    assert httpx.get(board + "/services/api").status_code == 200


def test_a_service_story_links_its_pr_and_the_event_that_caused_it(
    board: str, cluster: Cluster
) -> None:
    cluster.start("gate-evaluator")
    cluster.start("pr-writer")
    d = digest_of("story")
    cluster.build("api", d, event_id="build-story-1")
    cluster.wait_pinned("api", "dev", d)
    cluster.bus.redis.xadd(cluster.bus.stream("ci"), {"kind": "ci", "service": "api"})
    wait_until(lambda: cluster.dead_letters(), 30, "a dead letter")
    page = wait_until(
        lambda: (t := httpx.get(board + "/services/api").text).count('class="step"') >= 3 and t,
        30,
        "the story",
    )
    assert 'href="/events/build-story-1"' in page
    assert 'href="/pulls/1"' in page
    assert "digest" in page.split('id="dead-letters"')[1]  # the dead letter's reason
    event = httpx.get(board + "/events/build-story-1")
    assert event.status_code == 200 and d in event.text
    pull = httpx.get(board + "/pulls/1").text
    assert "Pull request #1" in pull and d in pull


def test_a_page_costs_a_few_round_trips_whatever_its_size(cluster: Cluster) -> None:
    names = [f"svc-{i:03d}" for i in range(60)]
    cluster.init_repo(names)
    now = datetime.now(UTC)
    small = grid(cluster.repo, cluster.bus, Query(per_page=5), now)
    large = grid(cluster.repo, cluster.bus, Query(per_page=60), now)
    assert len(large.rows) == 60 and large.total == 60
    assert large.cost.round_trips == small.cost.round_trips <= 4
    assert large.cost.commands > small.cost.commands


def test_each_cell_says_what_explain_says(cluster: Cluster) -> None:
    cluster.init_repo(["api", "web"])
    cluster.start("gate-evaluator")
    cluster.start("pr-writer")
    d = digest_of("agree")
    cluster.build("api", d)
    cluster.wait_pinned("api", "dev", d)
    cluster.build("api", d, env="dev", check="integration")
    cluster.wait_pinned("api", "staging", d)

    # The page and explain must agree on one state: let the workers finish with staging's merge
    # (prod has its candidate), then stop them so nothing changes between the two reads.
    def prod_has_its_candidate() -> bool:
        e = explanation(cluster.bus, cluster.repo.at_main(), "api", "prod", datetime.now(UTC))
        return e is not None and e.candidate == d

    wait_until(prod_has_its_candidate, what="prod's candidate")
    cluster.stop_all()
    now = datetime.now(UTC)
    page = grid(cluster.repo, cluster.bus, Query(), now)
    main = cluster.repo.at_main()
    for row in page.rows:
        for cell in row.cells:
            assert cell.explanation == explanation(cluster.bus, main, row.service, cell.env, now)
    prod = page.rows[0].cells[2]
    assert prod.explanation is not None and prod.explanation.state == "waiting"
    assert any(m.command.startswith(f"ferry approve api {d} --env prod") for m in prod.moves)
