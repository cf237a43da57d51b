"""app/split.py: the second half of the items worked on in a forked child, the results in order;
a child that fails leaves its half to the parent. Run in a process of its own: a test process
may have threads, and then nothing forks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def run(body: str) -> dict[str, object]:
    script = textwrap.dedent(
        """
        import json, os
        from ferry.app import split
        split._core_free = lambda: True  # whatever the load of the machine the test runs on
        parent = os.getpid()
        """
    ) + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_second_half_is_worked_on_in_a_child_and_comes_back_in_order() -> None:
    out = run(
        """
        got = split.in_two(list(range(10)), lambda part: [(x, os.getpid()) for x in part], at=2)
        print(json.dumps({"items": [x for x, _ in got], "pids": [p != parent for _, p in got]}))
        """
    )
    assert out["items"] == list(range(10))
    assert out["pids"] == [False] * 5 + [True] * 5


def test_a_failing_child_leaves_its_half_to_the_parent() -> None:
    out = run(
        """
        def work(part):
            if os.getpid() != parent:
                raise RuntimeError("the child fails")
            return [(x, os.getpid()) for x in part]

        got = split.in_two(list(range(10)), work, at=2)
        print(json.dumps({"items": [x for x, _ in got], "pids": [p == parent for _, p in got]}))
        """
    )
    assert out == {"items": list(range(10)), "pids": [True] * 10}


def test_few_items_stay_in_one_process() -> None:
    out = run(
        """
        got = split.in_two(list(range(10)), lambda part: [os.getpid() for _ in part], at=11)
        print(json.dumps({"here": all(p == parent for p in got)}))
        """
    )
    assert out == {"here": True}
