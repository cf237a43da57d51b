"""Render the benchmark results as Markdown (printed, and written to bench/RESULTS.md)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from bench import micro as M
from bench.canary import render as canary_section
from bench.hostile import render as render_hostile
from bench.latency import BARE_STEPS
from bench.previews import render as render_previews
from bench.throughput import MODES

GATE = "gate-evaluator (CI entry -> promotion command)"


def _ms(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 1 else f"{x:.3f}"


def _stat_row(label: str, s: dict[str, float]) -> str:
    if not s["count"]:
        return f"| {label} | 0 | - | - | - | - |"
    return (
        f"| {label} | {s['count']} | {_ms(s['p50'])} | {_ms(s['p90'])} | {_ms(s['p99'])} "
        f"| {_ms(s['max'])} |"
    )


def _cmds(cmds: list[str]) -> str:
    """['fetch', 'rev-parse', 'rev-parse'] -> '`fetch`, `rev-parse` x2' (first-seen order)."""
    if not cmds:
        return "none"
    counts = Counter(cmds)
    return ", ".join(f"`{c}`" + (f" x{n}" if n > 1 else "") for c, n in counts.items())


def _pw(n: int) -> str:
    return f"{n} pr-writer" + ("s" if n > 1 else "")


def render(res: dict[str, Any]) -> str:
    m, a = res["machine"], res["args"]
    lat, lat2, bare = res["latency"], res["latency2"], res["bare_git"]
    tp, loop, mic = res["throughput"], res["bare_loop"], res["micro"]
    parts, disp, prof = mic["parts"], mic["dispatcher"], mic["profile"]
    fs, prp = res["faststream"], res["pr_parts"]
    out: list[str] = []
    w = out.append

    w("# Ferry benchmarks\n")
    w(
        "Figures from one run of `python -m bench`; they describe this machine on this day, not a "
        "promise. Nothing in the test suite depends on them.\n"
    )
    w("## Machine\n")
    w(f"- date: {m['date']}")
    w(f"- machine: {m['arch']}, {m['nproc']} CPUs ({m['cpu']})")
    w(f"- Python {m['python']}; {m['server']}; {m['git']}")
    w(
        f"- whole run: {res['elapsed_s']:.0f} s; 1-minute load average when it started: "
        f"{m['load']} (the machine is shared: other processes, e.g. a test run, may have "
        "competed for the 2 CPUs, which shows as run-to-run noise of tens of percent)\n"
    )

    w("## Commands\n")
    w("```sh")
    w(".venv/bin/python -m bench           # what `make bench` runs")
    if res["command"] != ".venv/bin/python -m bench":
        w(f"{res['command']}   # this run")
    w(
        ".venv/bin/python -m bench --quick   # shorter; also --events N --rate R --slow-events N "
        "--slow-rate R --entries M --git-runs K --micro N"
    )
    w("```\n")
    w(
        "Each benchmark starts its own embedded Valkey "
        "(`ferry.adapters.embedded.start_server()`, a free loopback port), scaffolds its own "
        "GitOps repository (`ferry.adapters.scaffold.scaffold`) in a "
        "temporary directory, and starts workers as processes: `python -m ferry worker NAME` with "
        "`FERRY_REDIS_URL`, `FERRY_GITOPS_REPO`, `FERRY_HOME`, `FERRY_STREAM_PREFIX` (one per "
        "benchmark) and `FERRY_LOG_LEVEL=WARNING`; all other settings are Ferry's defaults "
        "(poll 100 ms; `FERRY_READ_COUNT` the worker's: 100 for gate-evaluator, 1 for the "
        "others), except (b), which sets `FERRY_READ_COUNT=1`. Times marked *server clock* are "
        "differences of "
        "stream entry ids (milliseconds, Valkey's clock); the others are `time.perf_counter()` in "
        "the benchmark process.\n"
    )

    # ------------------------------------------------------------------ (a)
    runs = [lat, lat2]
    bp50 = bare["total_ms"]["p50"]
    w("## (a) Reaction latency: green CI in dev -> staging PR merged\n")
    w(
        f"Two runs with the same load, each with its own scaffolded repository and stream prefix: "
        f"**1 gate-evaluator + {_pw(lat['pr_writers'])}**, then **1 gate-evaluator + "
        f"{lat2['pr_writers']} pr-writer replicas** (consumers `pr-writer-1`, `pr-writer-2`, each "
        "with its own clone; adding pr-writer processes is the documented way to scale). In each, "
        f"{lat['services']} services (`svc-00`..) are first pinned in dev by a build (warm-up "
        f"{lat['warmup_s']:.1f} s / {lat2['warmup_s']:.1f} s). Then one `CiResult(service=s, "
        f'digest=<dev digest>, env="dev", check="integration")` per service at a steady '
        f"{lat['rate']:g}/s (publishing took {lat['publish_s']:.2f} s / {lat2['publish_s']:.2f} s, "
        f"at most {max(lat['publish_late_s'], lat2['publish_late_s']) * 1000:.1f} ms behind "
        "schedule). Latency = id of the `pr_merged` (env=staging) entry on `ferry:changes` minus "
        "id of the CI entry on `ferry:ci` (server clock, ms). Dead letters: "
        f"{lat['dlq']} / {lat2['dlq']}; PRs on the forge afterwards: {lat['prs']} / "
        f"{lat2['prs']}.\n"
    )
    w("| | count | p50 ms | p90 ms | p99 ms | max ms |")
    w("|---|---|---|---|---|---|")
    for run in runs:
        w(
            _stat_row(
                f"**Ferry, {_pw(run['pr_writers'])}**, CI -> staging merged at {run['rate']:g}/s",
                run["latency_ms"],
            )
        )
    for run in runs:
        if "unqueued_latency_ms" in run:
            w(
                _stat_row(
                    f"Ferry, {_pw(run['pr_writers'])}: events that found their pr-writer "
                    "idle (no queueing)",
                    run["unqueued_latency_ms"],
                )
            )
    if "slow" in lat:
        sl = lat["slow"]
        w(
            _stat_row(
                f"Ferry, {_pw(lat['pr_writers'])}: {sl['events']} more services afterwards "
                f"at {sl['rate']:g}/s",
                sl["latency_ms"],
            )
        )
    w(_stat_row("**bare git** promotion sequence (perf_counter)", bare["total_ms"]))
    w("")
    for run in runs:
        lm = run["latency_ms"]
        w(
            f"- **{_pw(run['pr_writers'])}: Ferry p50 / bare-git p50 = "
            f"{lm['p50'] / bp50:.1f}x** ({_ms(lm['p50'])} ms / {_ms(bp50)} ms); p99 "
            f"{_ms(lm['p99'])} ms = {lm['p99'] / bp50:.1f}x the bare-git p50."
        )
    l1, l2 = lat["latency_ms"], lat2["latency_ms"]
    w(
        f"- 2 pr-writers vs 1: p50 {_ms(l2['p50'])} vs {_ms(l1['p50'])} ms "
        f"({l2['p50'] / l1['p50']:.2f}x), p99 {_ms(l2['p99'])} vs {_ms(l1['p99'])} ms "
        f"({l2['p99'] / l1['p99']:.2f}x)."
    )
    if "slow" in lat:
        sl = lat["slow"]
        w(
            f"- At {sl['rate']:g}/s with one pr-writer, which is then idle when most results "
            f"arrive: {sl['latency_ms']['p50'] / bp50:.1f}x ({_ms(sl['latency_ms']['p50'])} ms / "
            f"{_ms(bp50)} ms)."
        )
    w("")
    w(
        f"Bare git baseline ({bare['runs']} runs, one after another, in two plain clones of a "
        "scaffolded repo of the same shape; 8 git processes):\n"
    )
    w("```sh")
    w("# clone W (work):")
    w("git fetch -q --prune --no-tags origin")
    w("git checkout -q -f -B bench/staging/<svc>/<i> origin/main")
    w("# python: replace the `  digest:` line of envs/staging/<svc>/values.yaml (str.replace)")
    w("git -c commit.gpgsign=false commit -q -a --no-verify -m 'promote <svc>'")
    w("git push -q origin HEAD:refs/heads/bench/staging/<svc>/<i>")
    w("# clone M (merge):")
    w(
        "git fetch -q --no-tags origin +refs/heads/main:refs/remotes/origin/main "
        "+refs/heads/<branch>:refs/remotes/origin/<branch>"
    )
    w("git checkout -q -f --detach origin/main")
    w(
        "git -c commit.gpgsign=false merge -q --no-ff --no-verify -m 'Merge <branch>' "
        "origin/<branch>"
    )
    w("git push -q origin HEAD:refs/heads/main")
    w("```\n")
    w("| bare git step | p50 ms | max ms |")
    w("|---|---|---|")
    for step in BARE_STEPS:
        s = bare["steps_ms"][step]
        w(f"| {step} | {_ms(s['p50'])} | {_ms(s['max'])} |")
    w("")

    # ------------------------------------------------------------------ (b)
    w("## (b) Throughput: one gate-evaluator, entries one at a time\n")
    w(
        f"{a['entries']} CI entries are published to `ferry:ci` before the worker starts; then "
        "**one gate-evaluator process** (no pr-writer) drains them (`FERRY_READ_COUNT=1`). "
        "Rate = (audit entries - 1) / (last audit id - first audit id), server clock: every "
        "entry produces exactly one audit record. The wall figure includes the worker's start "
        "and ends when XINFO GROUPS shows lag 0, pending 0 and entries-read = M.\n"
    )
    w(
        "| entries | Ferry events/s | wall events/s (incl. start) | bare redis-py loop events/s "
        "| ratio bare / Ferry | audits, outcomes | dead letters | promotions |"
    )
    w("|---|---|---|---|---|---|---|---|")
    for mode, desc in MODES.items():
        t, b = tp[mode], loop[mode]
        outcomes = ", ".join(f"{k} {v}" for k, v in t["outcomes"].items())
        w(
            f"| {desc} | **{t['rate']:.0f}** | {t['wall_rate']:.0f} | **{b['rate']:.0f}** "
            f"| **{b['rate'] / t['rate']:.1f}x** | {t['audits']}: {outcomes} | {t['dlq']} "
            f"| {t['promotions']} |"
        )
    w("")
    w(
        "Baseline: the same entries XADDed to a separate stream on the same server, then "
        "`XREADGROUP GROUP bare bare-1 COUNT 1 BLOCK 100 STREAMS <s> >`, "
        "`ferry.core.events.decode_fields`, `XACK`, in a plain redis-py loop in the benchmark "
        "process.\n"
    )

    # ------------------------------------------------------------------ overhead
    def pm(name: str) -> float:
        return parts[name]["mean"]

    if "canary" in res:
        out.extend(canary_section(res["canary"]))
    w("## Where Ferry's overhead goes\n")
    w("### (b) one gate-evaluator event\n")
    w(
        f"Each part below was timed alone in the benchmark process ({a['micro']} calls, "
        "`time.perf_counter()` per call) against the same server and the repository the "
        "throughput worker read; `git` counts `subprocess.run` calls per call. Rows marked *main "
        f"moved* read, each call, a commit not read before: {mic['cold_commits']} new commits on "
        f"main in a copy of that repository, each changing `{mic['services'][0]}`'s staging "
        "values file only (so another service's file is unchanged and its parse is remembered). "
        "The `pack-refs` row reads the same copy after `git pack-refs --all` "
        f"(`refs/heads/main` loose before: {'yes' if mic['loose_ref'] else 'no'}, after: "
        f"{'no' if mic['packed'] else 'yes'}).\n"
    )
    w("| part | mean ms | p50 ms | git processes |")
    w("|---|---|---|---|")
    for name, s in parts.items():
        w(f"| {name} | {_ms(s['mean'])} | {_ms(s['p50'])} | {s['git']:g} |")
    w("")
    per_bare = {k: 1000 / v["rate"] for k, v in loop.items()}
    per_worker = {k: 1000 / v["rate"] for k, v in tp.items()}
    w("Per-event cost, layer by layer (ms per event):\n")
    w("| layer | failed build | skip |")
    w("|---|---|---|")
    w(
        f"| bare redis-py loop (read 1, decode, XACK) | {_ms(per_bare['failure'])} "
        f"| {_ms(per_bare['skip'])} |"
    )
    w(
        f"| FastStream consumer with Ferry's subscriber settings, handler = decode + XACK via "
        f"`asyncio.to_thread` (no Ferry code) | {_ms(fs['per_event_ms'])} | (same) |"
    )
    w(
        f"| `Dispatcher.process` alone, in-process (parse, handler, audit, XACK) "
        f"| {_ms(disp['failure']['mean'])} ({disp['failure']['git']:g} git) "
        f"| {_ms(disp['skip']['mean'])} ({disp['skip']['git']:g} git) |"
    )
    w(
        f"| gate-evaluator process (measured in (b)) | {_ms(per_worker['failure'])} "
        f"| {_ms(per_worker['skip'])} |"
    )
    w("")

    snap_f = pm(M.AT_MAIN) + 2 * pm(M.POLICY) + pm(M.EXISTS) + pm(M.REPOSITORY)
    redis_f = pm(M.AUDIT) + pm(M.XACK)
    py_f = pm(M.PARSE) + pm(M.DECODE)
    sum_f = snap_f + redis_f + py_f
    snap_s = (
        2 * pm(M.AT_MAIN) + 3 * pm(M.POLICY) + pm(M.EXISTS) + pm(M.REPOSITORY) + 2 * pm(M.PINNED)
    )
    # The gate facts (approvals and rejections, the author, live-since read and mark) and the
    # waiting set (read, remove): 7 small round trips, each costed as one HGETALL.
    redis_s = redis_f + pm(M.HSET) + pm(M.HGETALL) + pm(M.LOCK) + 7 * pm(M.HGETALL)
    sum_s = snap_s + redis_s + py_f
    spawn = pm(M.SPAWN)
    w("Adding up the parts the handler calls (from the gate-evaluator's code path, warm caches):\n")
    for label, sn, rd, total, whole, calls in (
        (
            "failed build",
            snap_f,
            redis_f,
            sum_f,
            disp["failure"],
            "`at_main()`, `.policy` x2, `values_exists()`, `repository()`, parse, audit XADD, XACK",
        ),
        (
            "skip",
            snap_s,
            redis_s,
            sum_s,
            disp["skip"],
            "`at_main()` x2 (once for the event, once inside the decision lock), `.policy` x3, "
            "`values_exists()`, `repository()`, `pinned()` in staging and in dev, the evidence "
            "HSET and HGETALL, the decision lock, the gate facts and the waiting set (7 small "
            "round trips, each costed as one HGETALL), parse, audit XADD, XACK",
        ),
    ):
        rest = whole["mean"] - total
        tail = (
            f"; the other {_ms(rest)} ms ({rest / whole['mean']:.0%}) is not timed "
            "separately: the dispatcher's and handler's own Python (structlog context, the "
            "decision log call, the Prometheus histogram, policy look-ups)"
            if rest > 0
            else ""
        )
        w(
            f"- **{label}** ({calls}): snapshot reads {_ms(sn)} ms + Redis round trips "
            f"{_ms(rd)} ms + parse/decode {_ms(py_f)} ms = **{_ms(total)} ms**, against "
            f"{_ms(whole['mean'])} ms for the whole `Dispatcher.process`{tail}. Redis round trips "
            f"are {rd / total:.0%} of the timed parts, the snapshot reads {sn / total:.0%}."
        )
    df, ds = disp["failure"], disp["skip"]
    first = ", ".join(sorted(set(df["first_pass_cmds"]) | set(ds["first_pass_cmds"]))) or "none"
    w(
        f"- **git**: with warm caches `Dispatcher.process` ran {df['git']:g} git processes per "
        f"failed build and {ds['git']:g} per skip. Before the timed pass, a first pass over the "
        f"same {df['n']} entries ran {df['first_pass_git']} (failed builds) and "
        f"{ds['first_pass_git']} (skip) in total (subcommands: {first}): each file is read once "
        "per commit of main, and main does not move in (b). `main_commit()` reads the loose ref "
        f"file: {_ms(pm(M.MAIN_LOOSE))} ms and {parts[M.MAIN_LOOSE]['git']:g} git processes, "
        f"against {_ms(spawn)} ms for one bare `git rev-parse`."
    )
    w(
        f"- **When main moves** (every merge), the next decision reads the new commit: "
        f"`.policy` {_ms(pm(M.POLICY_COLD))} ms ({parts[M.POLICY_COLD]['git']:g} `git cat-file`; "
        f"`load_policy`, {_ms(pm(M.LOAD_POLICY))} ms, runs only when ferry.yaml's text "
        f"changed), `values_exists()` {_ms(pm(M.EXISTS_COLD))} ms, `pinned()` "
        f"{_ms(pm(M.PINNED_COLD_SAME))} ms when the values file is unchanged (parse remembered) "
        f"and {_ms(pm(M.PINNED_COLD_CHANGED))} ms when it changed (ruamel parse "
        f"{_ms(pm(M.READ_VALUE))} ms). A CI event in dev reads at most three files per new "
        "commit: ferry.yaml and the service's dev and staging values files."
    )
    w(
        f"- **Packed refs**: when `refs/heads/main` is not a loose file (after `git gc` or "
        f"`git pack-refs`), `main_commit()` falls back to `git rev-parse`: "
        f"{_ms(pm(M.MAIN_PACKED))} ms and {parts[M.MAIN_PACKED]['git']:g} git process per call, "
        f"{pm(M.MAIN_PACKED) / pm(M.MAIN_LOOSE):.0f}x the loose read, until the next update of "
        "main writes a loose ref again."
    )
    w(
        f"- cProfile of `Dispatcher.process` over the same entries, warm (profiling inflates "
        f"Python code, so read shares, not absolutes): failed build "
        f"{prof['failure']['total']:.2f} ms/event, of which redis-py "
        f"{prof['failure']['redis-py commands']:.2f}, `events.parse` "
        f"{prof['failure']['pydantic validate (events.parse)']:.2f}, `subprocess.run` "
        f"{prof['failure']['subprocess.run (git)']:.2f}, ruamel "
        f"{prof['failure']['ruamel YAML parse (values.read_value)']:.2f}; skip "
        f"{prof['skip']['total']:.2f} ms/event: redis-py {prof['skip']['redis-py commands']:.2f}, "
        f"`events.parse` {prof['skip']['pydantic validate (events.parse)']:.2f}, "
        f"`subprocess.run` {prof['skip']['subprocess.run (git)']:.2f}, ruamel "
        f"{prof['skip']['ruamel YAML parse (values.read_value)']:.2f}."
    )
    fsr = fs["per_event_ms"]
    fw = (
        f"FastStream's dispatch plus the `asyncio.to_thread` hop cost {_ms(fsr)} ms per event "
        f"in the no-op consumer (the bare hop alone {_ms(pm(M.HOP))} ms), "
        f"{fsr / per_bare['failure']:.1f}x the {_ms(per_bare['failure'])} ms of the whole bare "
        f"loop, and {fsr / per_worker['failure']:.0%} / {fsr / per_worker['skip']:.0%} of the "
        "gate-evaluator's per-event time in (b)."
    )
    fwk_f = per_worker["failure"] - disp["failure"]["mean"]
    fwk_s = per_worker["skip"] - disp["skip"]["mean"]
    if fwk_f > 0 and fwk_s > 0:
        w(
            f"- The worker process takes {_ms(fwk_f)} ms (failed build) / {_ms(fwk_s)} ms (skip) "
            f"more per event than `Dispatcher.process` in-process. {fw}"
        )
    else:
        w(
            f"- In this run the worker process was not slower than `Dispatcher.process` in-process "
            f"({_ms(per_worker['failure'])} vs {_ms(disp['failure']['mean'])} ms, "
            f"{_ms(per_worker['skip'])} vs {_ms(disp['skip']['mean'])} ms): the two were measured "
            "at different moments on a shared 2-CPU machine. Measured directly: " + fw
        )
    w("")

    # ------------------------------------------------------------------ (a) stages
    w("### (a) one promotion\n")
    w(
        "Each promotion's timeline from entry ids (server clock): the CI entry, the "
        "`ferry:promotions` command gate-evaluator wrote, `pr_opened` and `pr_merged` on "
        "`ferry:changes`. A pr-writer replica takes one command at a time in stream order, so it "
        "starts a promotion at max(command, its own previous pr_merged). With 2 replicas, which "
        "replica handled a promotion is not in the streams (audit records name the worker, not "
        "the replica); it is read from the replicas' clones, where `prepare_promotion` leaves the "
        "promotion branch as a remote-tracking ref of the replica that pushed it.\n"
    )
    prp = res["pr_parts"]
    for run in runs:
        n_pw = run["pr_writers"]
        if "stages_ms" not in run:
            w(
                f"**{_pw(n_pw)}**: only {run['attributed']} of {run['events']} promotions could be "
                "attributed to one replica, so no stage breakdown: end-to-end figures only (above)."
                "\n"
            )
            continue
        split = (
            " (promotions per replica: "
            + ", ".join(f"pr-writer-{k}: {v}" for k, v in run["per_replica"].items())
            + ")"
            if "per_replica" in run
            else ""
        )
        w(f"**{_pw(n_pw)}**{split}:\n")
        w("| stage | count | p50 ms | p90 ms | p99 ms | max ms |")
        w("|---|---|---|---|---|---|")
        for name, s in run["stages_ms"].items():
            w(_stat_row(name, s))
        w(
            _stat_row(
                "pr-writer busy per promotion (start -> pr_merged)", run["pr_writer_service_ms"]
            )
        )
        w("")
        means = {k: v["mean"] for k, v in run["stages_ms"].items()}
        w(
            f"Mean latency {_ms(run['latency_ms']['mean'])} ms = "
            + " + ".join(f"{_ms(v)} ({k.split(' (')[0]})" for k, v in means.items())
            + " (the stages add up exactly: they are differences of the same timestamps). "
            f"Completed {run['completed_per_s']:.1f} promotions/s from the first command to the "
            "last merge.\n"
        )

    lock_ms = prp["open_pr"]["p50"] + prp["merge_pr"]["p50"]
    for run in runs:
        if "stages_ms" not in run:
            continue
        n_pw, st = run["pr_writers"], run["stages_ms"]
        svc = run["pr_writer_service_ms"]["p50"]
        cap = n_pw * 1000 / svc if svc else float("nan")
        q = st["queued for pr-writer"]
        who = "One pr-writer is" if n_pw == 1 else f"Each of the {n_pw} replicas is"
        head_ = f"- **{_pw(n_pw)}: " + (
            "queueing dominates.** "
            if q["mean"] > run["latency_ms"]["mean"] / 2
            else "queueing.** "
        )
        if cap < run["rate"]:
            verdict = (
                f"{run['rate']:g}/s is more than that, the backlog grows for the whole "
                f"burst and the later events wait (queue p50 {_ms(q['p50'])} ms, max "
                f"{_ms(q['max'])} ms). The percentiles therefore depend on the burst "
                f"length ({run['events']} events here): they describe a "
                f"{run['events'] / run['rate']:.0f} s burst at {run['rate']:g}/s, not a "
                "steady state."
            )
        else:
            verdict = (
                f"that keeps up with {run['rate']:g}/s (queue p50 {_ms(q['p50'])} ms, "
                f"max {_ms(q['max'])} ms)."
            )
        idle = run["unqueued_latency_ms"]
        idle_s = (
            f" Events that found their pr-writer idle took {_ms(idle['p50'])} ms end to "
            f"end (p50, n={idle['count']})."
            if idle["count"]
            else " No event found its pr-writer idle."
        )
        w(
            f"{head_}{who} busy {_ms(svc)} ms per promotion (p50), so "
            f"{'it completes' if n_pw == 1 else 'together they complete'} about "
            f"{cap:.1f} promotions/s; " + verdict + idle_s
        )
    if "stages_ms" in lat and "stages_ms" in lat2:
        m1 = lat["stages_ms"]["pr-writer: merge (pr_opened -> pr_merged)"]["p50"]
        m2 = lat2["stages_ms"]["pr-writer: merge (pr_opened -> pr_merged)"]["p50"]
        o1 = lat["stages_ms"]["pr-writer: branch + push + open PR (start -> pr_opened)"]["p50"]
        o2 = lat2["stages_ms"]["pr-writer: branch + push + open PR (start -> pr_opened)"]["p50"]
        b1 = lat["pr_writer_service_ms"]["p50"]
        b2 = lat2["pr_writer_service_ms"]["p50"]
        w(
            f"- **What a second replica buys, and what caps it.** The local forge holds one file "
            "lock (`<gitdir>/ferry/forge.lock`) for the whole of `open_pr` and of `merge_pr` "
            "(the merge clone's fetch, merge and push of main happen inside it), so merges never "
            "overlap, whatever the number of replicas. Timed alone (below), `open_pr` + "
            f"`merge_pr` hold it about {_ms(lock_ms)} ms per promotion: on this machine the "
            f"forge completes at most about {1000 / lock_ms:.0f} promotions/s however many "
            "pr-writers run, and less when the CPUs are busy. With 2 replicas the per-replica "
            f"busy time went from {_ms(b1)} to {_ms(b2)} ms (p50): branch + push + open "
            f"{_ms(o1)} -> {_ms(o2)} ms, merge {_ms(m1)} -> {_ms(m2)} ms. With two replicas these "
            "stages also include any wait for the lock while the other replica holds it, and "
            "sharing the 2 "
            "CPUs with a third worker process and its git children; the streams do not separate "
            f"the two. Measured throughput: {lat['completed_per_s']:.1f} promotions/s with one "
            f"replica, {lat2['completed_per_s']:.1f} with two."
        )
    gate = lat["stages_ms"][GATE] if "stages_ms" in lat else None
    if gate:
        w(
            f"- **gate-evaluator** takes {_ms(gate['p50'])} ms (p50, max {_ms(gate['max'])}) from "
            "CI entry to promotion command with one pr-writer"
            + (
                f", {_ms(lat2['stages_ms'][GATE]['p50'])} ms with two"
                if "stages_ms" in lat2
                else ""
            )
            + ". It reads main through one snapshot per decision (the loose ref file, no git "
            "process); because every merge moves main, a CI event that arrives after a merge "
            "reads ferry.yaml and the service's values files at the new commit (up to three `git "
            "cat-file`, as in *main moved* above; `load_policy` only when ferry.yaml changed). "
            "It also writes the evidence hash, takes the decision lock and runs the "
            "publish-once script, handles the `pr_merged` changes, and shares the 2 CPUs with "
            "pr-writer's git processes."
        )
    svc1 = lat["pr_writer_service_ms"]["p50"] if "stages_ms" in lat else float("nan")
    w(
        f"- **pr-writer's own work vs the bare sequence**: {_ms(svc1)} ms busy per promotion "
        f"(one replica, p50) vs {_ms(bp50)} ms. Its steps, each timed alone in-process on a "
        f"fresh scaffolded repo ({prp['k']} promotions; git subcommands of the last one):\n"
    )
    w("| pr-writer step | p50 ms | mean ms | git processes | git subcommands |")
    w("|---|---|---|---|---|")
    for name in ("find_pr", "prepare_promotion", "open_pr", "merge_pr"):
        s = prp[name]
        w(f"| {name} | {_ms(s['p50'])} | {_ms(s['mean'])} | {s['git']:.1f} | {_cmds(s['cmds'])} |")
    w("")
    git_pr = sum(prp[n]["git"] for n in ("prepare_promotion", "open_pr", "merge_pr"))
    alone = sum(prp[n]["p50"] for n in ("find_pr", "prepare_promotion", "open_pr", "merge_pr"))
    extra = (
        f"the worker was busy {_ms(svc1)} ms, {_ms(svc1 - alone)} ms more: what it does "
        "around those calls (the promotion lock and successor look-up in Redis, publish-once "
        "scripts for `pr_opened` and `pr_merged`, audit XADDs), and sharing 2 CPUs with "
        "gate-evaluator, not timed separately."
        if svc1 > alone
        else f"the worker was busy {_ms(svc1)} ms, no more than that."
    )
    w(
        f"  That is {git_pr:.0f} git processes per promotion against the bare sequence's 8; at "
        f"about {_ms(spawn)} ms per process spawn (a bare `git rev-parse`) the {git_pr - 8:.0f} "
        f"extra ones cost roughly {(git_pr - 8) * spawn:.0f} ms. Timed alone, the four steps "
        f"take {_ms(alone)} ms (p50s added); " + extra
    )
    w("")
    errs = [r["errors"] for r in runs] + [t["errors"] for t in tp.values()]
    errs += [res["canary"]["errors"]] if "canary" in res else []
    if any(errs):
        w("### Worker log lines at WARNING or above\n")
        w("```")
        for e in errs:
            if e:
                w(e)
        w("```\n")
    if "hostile" in res:
        out.extend(render_hostile(res["hostile"]))
    if "previews" in res:
        out.extend(render_previews(res["previews"]))
    w("## Startup\n")
    w(
        f"Time from `Popen` to the consumer appearing in its group: gate-evaluator "
        f"{lat['startup_s']['gate-evaluator']:.2f} s, pr-writer "
        f"{lat['startup_s']['pr-writer']:.2f} s (latency run, one pr-writer); gate-evaluator "
        f"{lat2['startup_s']['gate-evaluator']:.2f} s, the slower of the two pr-writers "
        f"{lat2['startup_s']['pr-writer']:.2f} s (two pr-writers, started one after the other); "
        f"gate-evaluator {tp['failure']['startup_s']:.2f} s (throughput run). Not part of any "
        "figure above except the throughput 'wall' column."
    )
    return "\n".join(out) + "\n"
