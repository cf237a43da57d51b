"""The board in a real headless browser: the grid shows the scaffolded services; a build, a
waiting prod promotion and an approval reach the open page without a reload."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser import chromium
from tests.e2e.test_prod_gates import load_test_passed, with_prod_policy
from tests.helpers import Cluster, digest_of, run_cli, start_board

TIMEOUT = 60  # a loaded machine (CI on two cores) is slow; a fast one returns at once


@pytest.fixture
def browser() -> Iterator[Any]:
    yield from chromium()


def cell(driver: Any, service: str, env: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'#svc-{service} td[data-env="{env}"]')


def wait_for(driver: Any, check: Any, what: str) -> Any:
    """Wait for CHECK(driver), retrying while a row is being replaced under it."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(
        driver, TIMEOUT, poll_frequency=0.05, ignored_exceptions=[StaleElementReferenceException]
    ).until(check, f"timed out waiting for {what}")


def test_the_board_follows_a_digest_from_build_to_an_approved_prod(
    env: Cluster,
    browser: Any,
    capsys,  # noqa: ANN001
) -> None:
    env.init_repo(["api", "web"])
    with_prod_policy(env, auto_merge=True)
    env.start("gate-evaluator")
    env.start("pr-writer")
    url = start_board(env)
    browser.get(url)
    wait_for(browser, lambda b: b.find_element("id", "live").text == "live", "the live stream")
    rows, pinned = wait_for(
        browser,
        lambda b: (
            [
                r.get_attribute("data-service")
                for r in b.find_elements("css selector", "tr[data-service]")
            ],
            cell(b, "api", "dev").get_attribute("data-pinned"),
        ),
        "the board's rows",
    )
    assert rows == ["api", "web"]
    assert pinned == ""
    # A page that reloads loses this mark: the changes below must arrive without one.
    browser.execute_script("window.notReloaded = true")

    d = digest_of("board")
    env.build("api", d, author="alice")
    wait_for(
        browser,
        lambda b: cell(b, "api", "dev").get_attribute("data-pinned") == d,
        "the build in the dev cell",
    )
    # The row may be re-rendered by a later update between two reads: read it whole, in a wait.
    text, title = wait_for(
        browser,
        lambda b: (
            cell(b, "api", "dev").text,
            b.find_element("css selector", '#svc-api td[data-env="dev"] .pin').get_attribute(
                "title"
            ),
        ),
        "the dev cell's pin",
    )
    assert d[7:19] in text  # short, with the full digest on hover
    assert title == d

    env.build("api", d, env="dev", check="integration")
    assert load_test_passed(capsys, d) == 0
    wait_for(
        browser,
        lambda b: (
            cell(b, "api", "prod").get_attribute("data-state") == "waiting"
            and "approvals 0/1" in cell(b, "api", "prod").text
        ),
        "prod waiting for an approval",
    )

    def approval_gate(b: Any) -> tuple[str, str]:
        prod = cell(b, "api", "prod")
        status = prod.find_element("css selector", 'li[data-gate="approval"]')
        command = prod.find_element("css selector", '.cmd[data-move="approval"] button')
        return status.get_attribute("data-status"), command.get_attribute("data-copy")

    status, copy = wait_for(browser, approval_gate, "the prod cell's approval gate")
    assert status == "waiting"
    assert copy == f"ferry approve api {d} --env prod --as $USER"

    code, _, err = run_cli(capsys, "approve", "api", d, "--env", "prod", "--as", "release-lead")
    assert code == 0, err
    asked = time.monotonic()  # published: from here on it is Ferry's and the board's time
    wait_for(
        browser,
        lambda b: (
            'data-status="waiting"' not in cell(b, "api", "prod").get_attribute("innerHTML")
            or cell(b, "api", "prod").get_attribute("data-pinned") == d
        ),
        "the approval in the prod cell",
    )
    print(f"approval -> prod cell changed in {time.monotonic() - asked:.2f}s")
    wait_for(
        browser,
        lambda b: cell(b, "api", "prod").get_attribute("data-pinned") == d,
        "the merge in the prod cell",
    )
    assert browser.execute_script("return window.notReloaded") is True
