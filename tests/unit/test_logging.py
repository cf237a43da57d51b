"""Logs never carry secrets."""

from __future__ import annotations

import json

import pytest

from ferry.runtime.logging import configure, get_logger, scrub_text


def test_tokens_and_url_credentials_never_reach_a_log_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure("INFO", "json")
    get_logger().info(
        "pushing",
        forge_token="ghp_s3cr3t",
        webhook_secret="hush",
        remote="https://ferry:ghp_s3cr3t@github.com/shop/gitops.git",
    )
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert "s3cr3t" not in json.dumps(line) and "hush" not in json.dumps(line)
    assert line["forge_token"] == "***" and line["webhook_secret"] == "***"
    assert line["remote"] == "https://***@github.com/shop/gitops.git"


def test_error_sentences_are_scrubbed_too() -> None:
    text = "git push failed: fatal: could not read from https://x-token:abc123@gitlab.example/r"
    assert "abc123" not in scrub_text(text)
