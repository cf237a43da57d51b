"""`ferry demo` tells its story end to end and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys


def test_demo_runs_end_to_end(tmp_path) -> None:  # noqa: ANN001
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    env["FERRY_HOME"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "ferry", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "refuses it at once: digest must be sha256:<64 lowercase hex>, got 'api:latest'" in out
    assert "ferry:dlq" in out and "api reached staging by merged pull request" in out
    assert "all expectations met" in out
    assert out.count(" merged  Promote ") == 3
    # The demo ends with the address of the board that showed it.
    assert (
        out.rstrip().splitlines()[-1].startswith("The board served this demo at http://127.0.0.1:")
    )
