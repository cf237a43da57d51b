"""(b') gate-evaluator throughput one entry at a time and on a backlog read in batches, Redis round
trips per decision, and (j) a replay of many CI events: elapsed time and duplicate pull requests.

`python -m bench.backlog` runs these sections alone and writes its part of bench/RESULTS.md.
Baselines, measured in the same run on the same server: a bare redis-py loop reading the same
entries with XREADGROUP COUNT 1 (one XACK each) and COUNT 100 (one XACK per read)."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import throughput
from bench.env import Site, digest_of, machine, services, write_section
from ferry.core.events import CiResult
from tests.helpers import counting_round_trips

MARK_BEGIN = "<!-- bench.backlog: begin -->"
MARK_END = "<!-- bench.backlog: end -->"


def round_trips(url: str, root: Path, names: list[str], n: int) -> dict[str, dict[str, float]]:
    """Redis round trips and commands per decision, gate-evaluator's Dispatcher in this process
    behind a loop that reads as Ferry's reader does (`bench.decision.drain`: reads included,
    each next read riding with a round trip of the read before), warm (each entry's files
    already read once), one entry per read and N per read."""
    from bench.decision import drain, gate_dispatcher

    site, dispatcher = gate_dispatcher(url, "brt:", root / "round-trips", names)
    stream = site.bus.stream("ci")
    out: dict[str, dict[str, float]] = {}
    for mode in throughput.MODES:
        for batch in (False, True):
            site.r.delete(stream)
            site.bus.ensure_group("ci", "gate-evaluator")
            count = n if batch else 1
            throughput.publish_all(site.r, stream, throughput.entries_for(mode, names, n))
            drain(site, dispatcher, "ci", count)  # warm: files read, scripts loaded
            throughput.publish_all(site.r, stream, throughput.entries_for(mode, names, n))
            before = throughput.commands(site.r)
            with counting_round_trips() as box:
                assert drain(site, dispatcher, "ci", count) == n
            out[f"{mode}:{'batch' if batch else 'one'}"] = {
                "round_trips": box[0] / n,
                "commands": (throughput.commands(site.r) - before) / n,
            }
    site.r.delete(stream)
    return out


def read_floors(url: str, names: list[str], n: int, runs: int) -> dict[str, Any]:
    """What each of Ferry's readers costs by itself, one entry per read, with a handler that only
    decodes the entry and XACKs it: FastStream's subscriber (`consumer.build_broker`: batch,
    FERRY_READ_COUNT=1, the untouched-fields parser, the handler after the thread hop Ferry's
    consumer makes, `asyncio.to_thread`) and Ferry's own (`consumer.StreamReader`: the handler in
    the reading thread), beside the bare COUNT 1 loop, in turns on the same entries."""
    import asyncio
    import threading

    import redis

    from ferry.adapters.bus import Bus
    from ferry.core.events import decode_fields
    from ferry.runtime.consumer import READ_TIMEOUT_S, StreamReader, build_broker
    from ferry.runtime.logging import get_logger
    from ferry.runtime.settings import Settings
    from ferry.runtime.worker import WorkerSpec

    r = redis.Redis.from_url(url)
    entries = throughput.entries_for("skip", names, n)
    spec = WorkerSpec(name="floor", handlers={"ci": lambda *_: None})

    def prepared(kind: str, k: int) -> tuple[Settings, str]:
        settings = Settings(
            redis_url=url, stream_prefix=f"bf{kind}{k}:", read_count=1, consumer="c"
        )
        stream = settings.stream("ci")
        throughput.publish_all(r, stream, entries)
        r.xgroup_create(stream, "floor", id="0")
        return settings, stream

    class Counted:
        """Decode each entry, XACK the read; the time from the first entry handled to the last."""

        def __init__(self, stream: str) -> None:
            self.stream, self.seen, self.first = stream, 0, 0.0
            self.done = threading.Event()

        def __call__(self, ids: list[Any], data: list[Any]) -> None:
            for raw in data:
                decode_fields(raw)
            r.xack(self.stream, "floor", *ids)
            if not self.seen:
                self.first = time.perf_counter()
            self.seen += len(ids)
            if self.seen >= n:
                self.done.set()

        def rate(self) -> float:
            return (n - 1) / (time.perf_counter() - self.first)

    async def faststream_run(k: int) -> float:
        settings, stream = prepared("fs", k)
        counted = Counted(stream)

        def receive(short: str) -> Callable[[Any], Any]:
            async def consume(message: Any) -> None:
                raw = message.raw_message
                await asyncio.to_thread(counted, raw["message_ids"], raw["data"])

            return consume

        broker, _ = build_broker(spec, settings, url, receive)
        await broker.start()
        await asyncio.to_thread(counted.done.wait, 600)
        rate = counted.rate()
        await broker.stop()
        r.delete(stream)
        return rate

    def ferry_run(k: int) -> float:
        settings, stream = prepared("own", k)
        counted = Counted(stream)
        client = redis.Redis.from_url(url, socket_timeout=READ_TIMEOUT_S)
        reader = StreamReader(
            Bus(settings, url),
            client,
            spec,
            "ci",
            lambda _, batch: counted([e[0] for e in batch], [e[1] for e in batch]),
            get_logger(),
        )
        halt = threading.Event()
        reader.start(halt)
        counted.done.wait(600)
        rate = counted.rate()
        halt.set()
        reader.join(5)
        client.close()
        r.delete(stream)
        return rate

    rates: dict[str, list[float]] = {"faststream": [], "ferry": [], "bare": []}
    for k in range(runs):
        rates["faststream"].append(asyncio.run(faststream_run(k)))
        rates["ferry"].append(ferry_run(k))
        rates["bare"].append(throughput.run_bare(r, "floor", entries, count=1)["rate"])
    out: dict[str, Any] = {"runs": rates, "bare_rate": statistics.median(rates["bare"])}
    for kind in ("faststream", "ferry"):
        out[kind] = statistics.median(rates[kind])
        out[f"{kind}_ratio"] = out[kind] / out["bare_rate"]
    return out


def medians(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def throughput_runs(
    url: str,
    root: Path,
    names: list[str],
    m: int,
    runs: int,
    read_count: int | None,
    bare_count: int,
    modes: tuple[str, ...],
    step: Callable[[str], None],
    replicas: int = 1,
) -> dict[str, Any]:
    import redis

    r = redis.Redis.from_url(url)
    out: dict[str, Any] = {}
    for mode in modes:
        ferry, bare = [], []
        for k in range(runs):
            step(
                f"{mode}: {m} entries, run {k + 1}/{runs}, read count {read_count or 'default'}"
                + (f", {replicas} replicas" if replicas > 1 else "")
            )
            run = throughput.run_ferry(
                url,
                root,
                mode,
                names,
                m,
                read_count=read_count,
                tag=f"-{read_count}-{k}",
                replicas=replicas,
            )
            run.pop("site")
            entries = run.pop("entries_fields")
            ferry.append(run)
            bare.append(throughput.run_bare(r, mode, entries, count=bare_count))
            del entries
        out[mode] = {
            "ferry": ferry,
            "bare": bare,
            "rate": medians(ferry, "rate"),
            "wall_rate": medians(ferry, "wall_rate"),
            "bare_rate": medians(bare, "rate"),
            "commands": medians(ferry, "commands_per_entry"),
            "dlq": sum(x["dlq"] for x in ferry),
            "outcomes": ferry[-1]["outcomes"],
            "errors": [x["errors"] for x in ferry if x["errors"]],
        }
        out[mode]["ratio"] = out[mode]["rate"] / out[mode]["bare_rate"]
    return out


# --- (j) replay --------------------------------------------------------------------------------


def _quiet(site: Site) -> bool:
    """Every group that takes part has read everything and has nothing pending."""
    for stream, group in (
        ("ci", "gate-evaluator"),
        ("changes", "gate-evaluator"),
        ("promotions", "pr-writer"),
    ):
        g = site.group(stream, group)
        if not g or g.get("lag") != 0 or g.get("pending") != 0:
            return False
    return True


def _settle(site: Site, timeout: float) -> float:
    """Wait until the workers are quiet twice in a row 0.5 s apart; returns when they first were
    (perf_counter)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _quiet(site):
            first = time.perf_counter()
            time.sleep(0.5)
            if _quiet(site):
                return first
        time.sleep(0.05)
    raise TimeoutError("the workers did not finish")


def replay_run(url: str, root: Path, n_services: int, events: int) -> dict[str, Any]:
    """EVENTS CI entries for N_SERVICES services (a build each, a dev integration result each, the
    rest repeats of both from a chatty CI, each with its own event id) handled by one
    gate-evaluator and one pr-writer; then all of them replayed with `ferry replay ci`'s app
    function, timed until every group is quiet again. Counts pull requests before and after."""
    import redis

    from ferry.app.replay import replay

    names = services(n_services)
    site = Site(url, "brp:", root / "replay")
    site.scaffold(names)
    stream = site.bus.stream("ci")
    fields = []
    for i in range(events):
        s = names[i % n_services]
        d = digest_of(f"replay-{s}")
        if i < n_services or (i >= 2 * n_services and i % 2 == 0):
            event = CiResult(service=s, digest=d, image=f"registry.example.com/shop/{s}")
        else:
            event = CiResult(service=s, digest=d, env="dev", check="integration")
        fields.append(event.to_fields())
    throughput.publish_all(site.r, stream, fields)
    del fields
    try:
        t0 = time.perf_counter()
        site.start("gate-evaluator")
        site.start("pr-writer")
        first = _settle(site, 3600) - t0
        prs_before = site_prs(site)
        t1 = time.perf_counter()
        replayed = len(replay(site.bus, "ci"))
        published = time.perf_counter() - t1
        elapsed = _settle(site, 3600) - t1
        prs_after = site_prs(site)
        titles = Counter(p.title for p in prs_after)
        bare = throughput.run_bare(
            redis.Redis.from_url(url),
            "replay",
            [f for _, f in site.entries("ci")[:replayed]],
            count=100,
        )
        return {
            "services": n_services,
            "events": events,
            "first_s": first,
            "replayed": replayed,
            "publish_s": published,
            "elapsed_s": elapsed,
            "rate": replayed / elapsed,
            "prs_before": len(prs_before),
            "prs_after": len(prs_after),
            "duplicates": sum(c - 1 for c in titles.values()),
            "merged": sum(p.state == "merged" for p in prs_after),
            "dlq": site.r.xlen(site.bus.stream("dlq")),
            "bare": bare,
            "errors": site.worker_errors(),
        }
    finally:
        site.stop()


def site_prs(site: Site) -> list[Any]:
    from ferry.adapters.forge import LocalForge

    return LocalForge(site.repo_path).list_prs()


# --- report ------------------------------------------------------------------------------------


def render(res: dict[str, Any], info: dict[str, str], command: str) -> str:
    one, backlog, rt, rp = res["one"], res["backlog"], res["round_trips"], res["replay"]
    fl = res["floor"]

    def runs_of(kind: str) -> str:
        return ", ".join(f"{x:.0f}" for x in fl["runs"][kind])

    def rows(part: dict[str, Any], n: int) -> str:
        out = []
        for mode, r in part.items():
            ferry, bare = rates(r)
            out.append(
                f"| {throughput.MODES[mode]} | {n} | **{r['rate']:.0f}** ({ferry}) | "
                f"{r['wall_rate']:.0f} | **{r['bare_rate']:.0f}** ({bare}) | "
                f"**{100 * r['ratio']:.0f}%** | {r['commands']:.1f} | {r['dlq']} |"
            )
        return "\n".join(out)

    head = (
        "| entries | n | Ferry events/s, median (runs) | wall events/s | bare loop events/s, "
        "median (runs) | Ferry / bare | Redis commands per entry (server) | dead letters |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    how = {"batch": "one batch", "one": "one at a time"}
    rt_rows = "\n".join(
        f"| {throughput.MODES[k.split(':')[0]]} | {how[k.split(':')[1]]} "
        f"| **{v['round_trips']:.2f}** | {v['commands']:.1f} |"
        for k, v in rt.items()
    )
    met = {True: "met", False: "missed"}
    goal_one = one["skip"]["ratio"] >= 0.40
    goal_backlog = backlog["skip"]["ratio"] >= 0.25
    errors = [e for part in (one, backlog) for r in part.values() for e in r["errors"]]
    return f"""{MARK_BEGIN}
## (b') gate-evaluator: one at a time, a backlog in batches, round trips per decision

Run: `{command}` on {info["date"]}, {info["nproc"]} CPUs ({info["cpu"]}), {info["server"]},
{info["client"]}, 1-minute load average {res["load_start"]} when it started and
{res["load_end"]} when it ended (the machine is shared with other engineers' test runs: figures
of tens of percent apart between runs are noise; each ratio is taken between runs made one right
after the other). Whole run: {res["elapsed_s"]:.0f} s.

Each run publishes the entries to `ferry:ci` of its own prefix and scaffolded repository before one
gate-evaluator process starts (`python -m ferry worker gate-evaluator`, `FERRY_LOG_LEVEL=WARNING`);
rate = (audit records - 1) / (last audit id - first audit id), server clock (each entry makes one
audit record); wall includes the worker's start. Baselines run right after each Ferry run, on the
same entries in a separate stream of the same server: a plain redis-py loop of `XREADGROUP COUNT n
BLOCK 100`, `ferry.events.decode_fields` of each entry, one `XACK` of the read's ids. Redis
commands per entry are `INFO commandstats` deltas over the worker's run (the benchmark's own INFO
and XINFO polls left out; commands inside scripts count one each, as the server counts them).

**One at a time** (`FERRY_READ_COUNT=1`; baseline COUNT 1, one XACK per entry):

{head}
{rows(one, res["n_one"])}

The readers by themselves, one entry per read, each with a handler that only decodes the entry
and XACKs it, beside the bare COUNT 1 loop, in turns, {res["n_one"]} entries: Ferry's own reader
(`StreamReader`, the default: the handler in the reading thread) **{fl["ferry"]:.0f}** events/s
({runs_of("ferry")}): **{100 * fl["ferry_ratio"]:.0f}%**; FastStream's subscriber (Ferry's
`build_broker` subscriber, `FERRY_READER=faststream`: the handler after the same thread hop as
Ferry's consumer) **{fl["faststream"]:.0f}** ({runs_of("faststream")}):
**{100 * fl["faststream_ratio"]:.0f}%**; bare loop **{fl["bare_rate"]:.0f}** ({runs_of("bare")});
before any decision is made.

**Backlog** (the default, `FERRY_READ_COUNT` unset: gate-evaluator reads 100 per XREADGROUP, one
XACK per read after the last entry's effects; baseline COUNT 100):

{head}
{rows(backlog, res["n_backlog"])}

**Round trips per decision**, measured in the benchmark process (gate-evaluator's `Dispatcher`
on {res["n_rt"]} entries after a warm-up pass, behind a loop that reads as Ferry's reader does,
`bench.decision.drain`; a round trip = one request sent to the server, a pipeline of many
commands being one, reads included; the bare loops make 2 per entry one at a time, 2 per
{res["n_rt"]} in one batch):

| entries | read | round trips per decision | commands per decision |
|---|---|---|---|
{rt_rows}

- **One at a time: {100 * one["skip"]["ratio"]:.0f}% of the bare loop for 'skip' decisions
  ({100 * one["failure"]["ratio"]:.0f}% for failed builds); goal 40%: {met[goal_one]}.**
- **Backlog: {100 * backlog["skip"]["ratio"]:.0f}% of the COUNT 100 bare loop for 'skip' decisions
  ({100 * backlog["failure"]["ratio"]:.0f}% for failed builds); goal 25%:
  {met[goal_backlog]}.**
- Worker errors logged: {len(errors)}.{gap(fl)}
{replay_section(rp)}
{MARK_END}
"""


def gap(fl: dict[str, Any]) -> str:
    return f"""

Where the gap is, and what would close it. One at a time, a 'skip' decision makes one round
trip, its read included (the table above), where the bare loop makes two: the decision lock's
SET NX, the snapshot's reads (all at once: `read_batched` fetches first what the last decision
about the subject read) and the read of the next entry, behind the previous entry's writes
(evidence, live mark, due time, audit record), its lock's release and its XACK in one MULTI/EXEC
(`Bus.ack`: gate-evaluator is quick work, so its reader reads an entry ahead). In a read of many
entries the writes go in front of the next round trip, and the entries about one (service,
environment) share one lock and one snapshot read (`Bus.keeping`): a decision after the first
about the same subject reads only what it lacks, from what was read with what the earlier ones
wrote; so a read of 100 entries about 40 services makes about 20 round trips, not 100. What is
left:

- One at a time, the read: FastStream's subscriber by itself, with a handler that only decodes
  and XACKs, reaches {100 * fl["faststream_ratio"]:.0f}% of the bare COUNT 1 loop, Ferry's own
  reader {100 * fl["ferry_ratio"]:.0f}% (above). The workers therefore read with Ferry's own
  loop on one server too (`FERRY_READER=ferry`, the default), each read handed to the
  dispatcher in the thread that read it, no event loop in between; the FastStream apps are
  still built for the AsyncAPI document.
- One at a time, the decision: with its round trip packed by hand (`pipelined.exchange`, on a
  connection each thread keeps), what remains is Python: about 430 us of CPU per 'skip'
  decision (`python -m bench.decision`, 27 Nov), spread thinly (packing the round trip and
  reading its replies, `gather`, acting on the decision, the dispatcher and pydantic's parsing
  of the entry, `decide`), and 23 commands for the server against the bare loop's 2.
- Backlog, Python: the round trips of different services' decisions overlap (8 threads), their
  Python does not (one interpreter lock). Per 'skip' entry: the dispatcher, pydantic parsing of
  the entry, the handler (the image check, the evidence write), `gather` against the kept
  reads, `decide`, the queued writes (the audit record's fields are built without pydantic,
  main's snapshot is one object per commit), and for the first decision about a subject in a
  read its round trip of a dozen commands: a few hundred us of CPU per decision. The bare COUNT
  100 loop, with hiredis parsing the read in C, spends under 10 us per entry (about 40 us with
  redis-py's own parser: see the client above); 25% of it leaves about 35 us per decision.
  Decoding, scrubbing and validating an entry alone take about 14 us and `decide` about 8 (27
  Nov), which leaves about 13 us for the rest (the snapshot from the replies, the lock, a dozen
  commands packed, the audit record, the dispatcher's bookkeeping), which costs over ten times
  that today: one interpreter running this decision cannot reach it. What would: several
  processes sharing the backlog (one decision at a time per subject across them, as replicas
  do; this figure, one process, leaves them out: `python -m bench.backlog --only backlog
  --backlog-replicas N` measures N), or a decision core that is not Python."""


def replay_section(rp: dict[str, Any]) -> str:
    b = rp["bare"]
    return f"""
## (j) Replay: {rp["replayed"]:,} CI events through `ferry replay ci`

{rp["events"]:,} CI entries about {rp["services"]} services (a build and a dev integration result
each, the rest repeats of both with event ids of their own, as a chatty CI sends) were handled by
one gate-evaluator and one pr-writer ({rp["first_s"]:.1f} s, {rp["prs_before"]} pull requests).
Then `ferry.app.replay.replay(bus, "ci")`, what `ferry replay ci` runs, published all
{rp["replayed"]:,} again ({rp["publish_s"]:.1f} s), and the same workers handled them; elapsed =
from the replay's start until every group (gate-evaluator on ci and changes, pr-writer on
promotions) had lag 0 and nothing pending. Baseline: the bare COUNT 100 loop over the same
{b["entries"]:,} entries.

| | entries | seconds | entries/s |
|---|---|---|---|
| **Ferry: replay, gate-evaluator, pr-writer** | {rp["replayed"]:,} | {rp["elapsed_s"]:.1f} \
| **{rp["rate"]:.0f}** |
| bare redis-py loop, COUNT 100 | {b["entries"]:,} | {b["seconds"]:.1f} | {b["rate"]:.0f} |

- **Duplicate pull requests: {rp["duplicates"]}** (pull requests before the replay
  {rp["prs_before"]}, after {rp["prs_after"]}, merged {rp["merged"]}); dead letters {rp["dlq"]}.
- Ferry / bare: {100 * rp["rate"] / b["rate"]:.0f}%.
"""


# The parts of this section, in the order they run (`--only`).
PARTS = ("round-trips", "one", "floor", "backlog", "replay")


def rates(r: dict[str, Any]) -> tuple[str, str]:
    """Each run's rate, Ferry's and the bare loop's."""
    return tuple(", ".join(f"{x['rate']:.0f}" for x in r[k]) for k in ("ferry", "bare"))  # type: ignore[return-value]


def brief(res: dict[str, Any]) -> str:
    """The throughput parts of RES in a few lines (a run of some parts only, `--only`)."""
    out = [f"load average {res['load_start']} at the start, {res['load_end']} at the end"]
    for part in ("one", "backlog"):
        for mode, r in res.get(part, {}).items():
            ferry, bare = rates(r)
            out.append(
                f"{part} {mode}: Ferry {r['rate']:.0f}/s ({ferry}), bare {r['bare_rate']:.0f}/s "
                f"({bare}): {100 * r['ratio']:.0f}%; {r['commands']:.1f} commands per entry, "
                f"{r['dlq']} dead letters, {len(r['errors'])} runs with worker errors"
            )
    for key, v in res.get("round_trips", {}).items():
        out.append(
            f"round trips {key}: {v['round_trips']:.2f} per entry, {v['commands']:.1f} commands"
        )
    return "\n".join(out)


def load() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[0]


def run(
    url: str,
    root: Path,
    *,
    one: int = 2000,
    backlog: int = 100_000,
    replay: int = 100_000,
    runs: int = 3,
    backlog_runs: int = 1,
    step: Callable[[str], None] = lambda _: None,
    only: tuple[str, ...] = PARTS,
    modes: tuple[str, ...] = ("failure", "skip"),
    backlog_replicas: int = 1,
) -> dict[str, Any]:
    """The parts ONLY of this section (all by default) on the server at URL, in scratch
    directories under ROOT. BACKLOG_REPLICAS: gate-evaluator processes sharing the backlog."""
    names = services(40)
    t0 = time.perf_counter()
    res: dict[str, Any] = {"load_start": load(), "n_one": one, "n_backlog": backlog, "n_rt": 200}
    if "round-trips" in only:
        step("round trips per decision")
        res["round_trips"] = round_trips(url, root, names, res["n_rt"])
    if "one" in only:
        res["one"] = throughput_runs(url, root, names, one, runs, 1, 1, modes, step)
    if "floor" in only:
        step(f"the readers alone: {one} entries, {runs} runs")
        res["floor"] = read_floors(url, names, one, runs)
    if "backlog" in only:
        res["backlog"] = throughput_runs(
            url, root, names, backlog, backlog_runs, None, 100, modes, step, backlog_replicas
        )
    if "replay" in only:
        step(f"replay: {replay} CI events")
        res["replay"] = replay_run(url, root, 20, replay)
    res["elapsed_s"] = time.perf_counter() - t0
    res["load_end"] = load()
    return res


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.backlog", description=__doc__)
    p.add_argument("--one", type=int, default=2000, help="entries one at a time (2000)")
    p.add_argument("--backlog", type=int, default=100_000, help="backlog entries (100,000)")
    p.add_argument("--replay", type=int, default=100_000, help="CI events replayed (100,000)")
    p.add_argument("--runs", type=int, default=3, help="runs of the one-at-a-time part (3)")
    p.add_argument("--backlog-runs", type=int, default=1, help="runs of the backlog part (1)")
    p.add_argument(
        "--backlog-replicas",
        type=int,
        default=1,
        help="with --only backlog: gate-evaluator processes sharing the backlog (1)",
    )
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS.md")
    p.add_argument(
        "--only",
        action="append",
        choices=PARTS,
        help="run only this part (repeatable); prints a summary and writes nothing",
    )
    p.add_argument(
        "--mode",
        action="append",
        choices=sorted(throughput.MODES),
        help="with --only: only these entries (repeatable; default both)",
    )
    args = p.parse_args(argv)
    for name in ("one", "backlog", "replay", "runs", "backlog_runs", "backlog_replicas"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.backlog_replicas > 1 and not args.only:
        p.error("--backlog-replicas goes with --only backlog: the section's goal is one process")
    import redis

    from ferry.adapters.embedded import start_server

    def step(text: str) -> None:
        print(f"[bench.backlog {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    server = start_server()
    try:
        url = server.connection_url
        info = machine(redis.Redis.from_url(url).info("server"))
        with tempfile.TemporaryDirectory(prefix="ferry-bench-backlog-") as tmp:
            res = run(
                url,
                Path(tmp),
                one=args.one,
                backlog=args.backlog,
                replay=args.replay,
                runs=args.runs,
                backlog_runs=args.backlog_runs,
                step=step,
                only=tuple(args.only or PARTS),
                modes=tuple(args.mode or ("failure", "skip")) if args.only else ("failure", "skip"),
                backlog_replicas=args.backlog_replicas,
            )
    finally:
        server.stop()
    if args.only:
        print(brief(res))
        return 0
    command = ".venv/bin/python -m bench.backlog " + " ".join(argv)
    section = render(res, info, command.strip())
    print(section)
    write_section(section, args.out, MARK_BEGIN, MARK_END)
    return 0 if res["replay"]["duplicates"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
