"""The domain core imports no adapter: it works where redis, httpx and faststream are missing."""

from __future__ import annotations

import subprocess
import sys

BLOCKED = ("redis", "httpx", "faststream", "structlog", "prometheus_client")

PROGRAM = f"""
import importlib, pkgutil, sys

class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)")
        return None

sys.meta_path.insert(0, Missing())
import ferry.core
names = [m.name for m in pkgutil.iter_modules(ferry.core.__path__, "ferry.core.")]
for name in names:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "ferry")
print(" ".join(loaded))
"""


def test_the_core_imports_without_redis_httpx_or_faststream() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.split()
    assert "ferry.core.decision" in loaded and "ferry.core.events" in loaded
    assert [m for m in loaded if not m.startswith("ferry.core") and m != "ferry"] == []


def test_the_blocker_really_blocks() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            PROGRAM.replace(
                "import ferry.core\n", "import ferry.adapters.bus\nimport ferry.core\n"
            ),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0 and "blocked by the test" in done.stderr
