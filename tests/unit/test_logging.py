"""Logs never carry secrets."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from ferry.runtime.logging import configure, get_logger, scrub_text
from ferry.runtime.settings import Settings


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


def test_a_password_only_redis_url_is_scrubbed() -> None:
    text = "worker started redis=redis://:Pa55-w0rd@cache.internal:6379/0 and rediss://:x%40y@h/1"
    scrubbed = scrub_text(text)
    assert "Pa55-w0rd" not in scrubbed and "x%40y" not in scrubbed
    assert "redis://***@cache.internal:6379/0" in scrubbed and "rediss://***@h/1" in scrubbed


def test_scrubbing_keeps_the_text_around_a_url_intact() -> None:
    text = '{"url":"https://ci.example/run/1","author":"alice@example.com"} got \'api:latest\''
    assert scrub_text(text) == text


@given(
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=200),
    st.from_regex(r"[A-Za-z0-9._~!$&()*+,;=%-]{1,30}", fullmatch=True),
)
def test_a_url_password_never_survives_whatever_surrounds_it(around: str, password: str) -> None:
    text = f"{around} redis://:{password}@host:6379/0 {around}"
    assert f":{password}@" not in scrub_text(text)


def test_configured_secrets_are_scrubbed_wherever_they_appear(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(
        redis_url="redis://:pw-Zq81%2Fx@127.0.0.1:6379/0",
        forge_token=SecretStr("ghp_T0kenT0kenT0ken"),
        _env_file=None,  # type: ignore[call-arg]
    )
    assert "pw-Zq81/x" in settings.secret_values()  # the URL-decoded password too
    configure("INFO", "json")
    get_logger().info(
        "something went wrong",
        error="git said: ghp_T0kenT0kenT0ken is not valid (password pw-Zq81/x)",
        nested={"url": "x-ghp_T0kenT0kenT0ken-y", "items": ["pw-Zq81%2Fx"]},
    )
    line = capsys.readouterr().err.strip().splitlines()[-1]
    for secret in ("ghp_T0kenT0kenT0ken", "pw-Zq81/x", "pw-Zq81%2Fx", "pw-Zq81\\/x"):
        assert secret not in line
    assert json.loads(line)["nested"]["url"] == "x-***-y"
    assert "ghp_T0kenT0kenT0ken" not in scrub_text("token ghp_T0kenT0kenT0ken in an error")


@pytest.mark.parametrize(
    "text",
    [
        "A" * (1 << 20),
        "9" * (1 << 20),
        "a://" + "b" * (1 << 20),
        "a://" * (1 << 18),
        "x:" * (1 << 19),
        "a://" + "x@" * (1 << 19),
    ],
    ids=["letters", "digits", "one-url", "many-schemes", "colons", "many-ats"],
)
def test_scrubbing_a_megabyte_finishes(text: str) -> None:
    # The old pattern took 4.8 s on 40k letters and grew with the square: a megabyte would not
    # finish within the test run. A linear scrubber does it in milliseconds (see bench/).
    assert len(scrub_text(text)) <= len(text)


def test_a_cli_command_that_logs_nothing_does_not_load_structlog() -> None:
    """structlog (with rich and pygments, about 50 ms) is loaded when a logger is first used,
    not when the CLI starts or a Bus (which asks for a logger) is made: `ferry status` logs
    nothing. In a process of its own: this one has loaded structlog already."""
    import subprocess
    import sys

    script = """if True:
        import sys
        import ferry.cli.main
        from ferry.adapters.bus import Bus
        from ferry.runtime.logging import get_logger
        from ferry.runtime.settings import Settings

        url = "redis://127.0.0.1:9"
        Bus(Settings(redis_url=url), url)  # no connection is made before a command is sent
        log = get_logger(worker="w")
        before = "structlog" in sys.modules
        log.info("first use")
        print(before, "structlog" in sys.modules)
    """
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-2:] == ["False", "True"]
    assert "first use" in proc.stdout + proc.stderr
