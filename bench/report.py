"""Render the benchmark results as Markdown (printed, and written to bench/RESULTS.md)."""

from __future__ import annotations

from typing import Any

from bench.latency import BARE_STEPS
from bench.throughput import MODES


def _ms(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 1 else f"{x:.3f}"


def _stat_row(label: str, s: dict[str, float]) -> str:
    return (f"| {label} | {s['count']} | {_ms(s['p50'])} | {_ms(s['p90'])} | {_ms(s['p99'])} "
            f"| {_ms(s['max'])} |")


def render(res: dict[str, Any]) -> str:
    m, a = res["machine"], res["args"]
    lat, bare = res["latency"], res["bare_git"]
    tp, loop, mic = res["throughput"], res["bare_loop"], res["micro"]
    parts, disp, prof = mic["parts"], mic["dispatcher"], mic["profile"]
    fs, prp = res["faststream"], res["pr_parts"]
    ratio_lat = lat["latency_ms"]["p50"] / bare["total_ms"]["p50"]
    out: list[str] = []
    w = out.append

    w("# Ferry benchmarks\n")
    w("Figures from one run of `python -m bench`; they describe this machine on this day, not a "
      "promise. Nothing in the test suite depends on them.\n")
    w("## Machine\n")
    w(f"- date: {m['date']}")
    w(f"- machine: {m['arch']}, {m['nproc']} CPUs ({m['cpu']})")
    w(f"- Python {m['python']}; {m['server']}; {m['git']}")
    w(f"- whole run: {res['elapsed_s']:.0f} s; 1-minute load average when it started: "
      f"{m['load']} (the machine is shared: other processes, e.g. a test run, may have "
      "competed for the 2 CPUs, which shows as run-to-run noise of tens of percent)\n")

    w("## Commands\n")
    w("```sh")
    w(".venv/bin/python -m bench           # what `make bench` runs")
    if res["command"] != ".venv/bin/python -m bench":
        w(f"{res['command']}   # this run")
    w(".venv/bin/python -m bench --quick   # shorter; also --events N --rate R --slow-events N "
      "--slow-rate R --entries M --git-runs K --micro N")
    w("```\n")
    w("Each benchmark starts its own embedded Valkey (`ferry.embedded.start_server()`, a free "
      "loopback port), scaffolds its own GitOps repository (`ferry.scaffold.scaffold`) in a "
      "temporary directory, and starts workers as processes: `python -m ferry worker NAME` with "
      "`FERRY_REDIS_URL`, `FERRY_GITOPS_REPO`, `FERRY_HOME`, `FERRY_STREAM_PREFIX` (one per "
      "benchmark) and `FERRY_LOG_LEVEL=WARNING`; all other settings are Ferry's defaults "
      "(`FERRY_READ_COUNT=1`, poll 100 ms). Times marked *server clock* are differences of "
      "stream entry ids (milliseconds, Valkey's clock); the others are `time.perf_counter()` in "
      "the benchmark process.\n")

    # ------------------------------------------------------------------ (a)
    w("## (a) Reaction latency: green CI in dev -> staging PR merged\n")
    w(f"Workers: **1 gate-evaluator, 1 pr-writer** (processes). {lat['services']} services "
      f"(`svc-00`..), each first pinned in dev by a build (warm-up, {lat['warmup_s']:.1f} s). Then "
      f"one `CiResult(service=s, digest=<dev digest>, env=\"dev\", check=\"integration\")` per "
      f"service at a steady {lat['rate']:g}/s (publishing took {lat['publish_s']:.2f} s, at most "
      f"{lat['publish_late_s'] * 1000:.1f} ms behind schedule). Latency = id of the `pr_merged` "
      f"(env=staging) entry on `ferry:changes` minus id of the CI entry on `ferry:ci` (server "
      f"clock, ms). Dead letters: {lat['dlq']}; PRs on the forge afterwards: {lat['prs']}.\n")
    w("| | count | p50 ms | p90 ms | p99 ms | max ms |")
    w("|---|---|---|---|---|---|")
    w(_stat_row(f"**Ferry**, CI -> staging merged at {lat['rate']:g}/s", lat["latency_ms"]))
    w(_stat_row("Ferry, events that found pr-writer idle (no queueing)",
                lat["unqueued_latency_ms"]))
    if "slow" in lat:
        sl = lat["slow"]
        w(_stat_row(f"Ferry, {sl['events']} more services afterwards at {sl['rate']:g}/s",
                    sl["latency_ms"]))
    w(_stat_row("**bare git** promotion sequence (perf_counter)", bare["total_ms"]))
    w("")
    w(f"**Ratio Ferry p50 / bare-git p50 = {ratio_lat:.1f}x** "
      f"({_ms(lat['latency_ms']['p50'])} ms / {_ms(bare['total_ms']['p50'])} ms) at "
      f"{lat['rate']:g}/s.")
    if "slow" in lat:
        sl = lat["slow"]
        w(f"At {sl['rate']:g}/s, where pr-writer is idle when each result arrives: "
          f"{sl['latency_ms']['p50'] / bare['total_ms']['p50']:.1f}x "
          f"({_ms(sl['latency_ms']['p50'])} ms / {_ms(bare['total_ms']['p50'])} ms).")
    w("")
    w(f"Bare git baseline ({bare['runs']} runs, one after another, in two plain clones of a "
      "scaffolded repo of the same shape; 8 git processes):\n")
    w("```sh")
    w("# clone W (work):")
    w("git fetch -q --prune --no-tags origin")
    w("git checkout -q -f -B bench/staging/<svc>/<i> origin/main")
    w("# python: replace the `  digest:` line of envs/staging/<svc>/values.yaml (str.replace)")
    w("git -c commit.gpgsign=false commit -q -a --no-verify -m 'promote <svc>'")
    w("git push -q origin HEAD:refs/heads/bench/staging/<svc>/<i>")
    w("# clone M (merge):")
    w("git fetch -q --no-tags origin +refs/heads/main:refs/remotes/origin/main "
      "+refs/heads/<branch>:refs/remotes/origin/<branch>")
    w("git checkout -q -f --detach origin/main")
    w("git -c commit.gpgsign=false merge -q --no-ff --no-verify -m 'Merge <branch>' "
      "origin/<branch>")
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
    w(f"{a['entries']} CI entries are published to `ferry:ci` before the worker starts; then "
      "**one gate-evaluator process** (no pr-writer) drains them (`FERRY_READ_COUNT=1`). "
      "Rate = (audit entries - 1) / (last audit id - first audit id), server clock: every "
      "entry produces exactly one audit record. The wall figure includes the worker's start "
      "and ends when XINFO GROUPS shows lag 0, pending 0 and entries-read = M.\n")
    w("| entries | Ferry events/s | wall events/s (incl. start) | bare redis-py loop events/s "
      "| ratio bare / Ferry | audits, outcomes | dead letters | promotions |")
    w("|---|---|---|---|---|---|---|---|")
    for mode, desc in MODES.items():
        t, b = tp[mode], loop[mode]
        outcomes = ", ".join(f"{k} {v}" for k, v in t["outcomes"].items())
        w(f"| {desc} | **{t['rate']:.0f}** | {t['wall_rate']:.0f} | **{b['rate']:.0f}** "
          f"| **{b['rate'] / t['rate']:.0f}x** | {t['audits']}: {outcomes} | {t['dlq']} "
          f"| {t['promotions']} |")
    w("")
    w("Baseline: the same entries XADDed to a separate stream on the same server, then "
      "`XREADGROUP GROUP bare bare-1 COUNT 1 BLOCK 100 STREAMS <s> >`, "
      "`ferry.events.decode_fields`, `XACK`, in a plain redis-py loop in the benchmark process.\n")

    # ------------------------------------------------------------------ overhead
    w("## Where Ferry's overhead goes\n")
    w("### (b) one gate-evaluator event\n")
    w(f"Each part below was timed alone in the benchmark process ({a['micro']} calls, "
      "`time.perf_counter()` per call, warm caches) against the same server and a repository "
      "scaffolded like the one the worker read; `git` counts `subprocess.run` calls per call.\n")
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
    w(f"| bare redis-py loop (read 1, decode, XACK) | {_ms(per_bare['failure'])} "
      f"| {_ms(per_bare['skip'])} |")
    w(f"| FastStream consumer with Ferry's subscriber settings, handler = decode + XACK via "
      f"`asyncio.to_thread` (no Ferry code) | {_ms(fs['per_event_ms'])} | (same) |")
    w(f"| `Dispatcher.process` alone, in-process (parse, handler, audit, XACK) "
      f"| {_ms(disp['failure']['mean'])} ({disp['failure']['git']:g} git) "
      f"| {_ms(disp['skip']['mean'])} ({disp['skip']['git']:g} git) |")
    w(f"| gate-evaluator process (measured in (b)) | {_ms(per_worker['failure'])} "
      f"| {_ms(per_worker['skip'])} |")
    w("")

    def pm(name: str) -> float:
        return parts[name]["mean"]

    redis_f = pm("Bus.audit (AuditRecord + XADD)") + pm("XACK round trip")
    git_f = (pm("GitOpsRepo.policy() (cached)") + pm("GitOpsRepo.values_exists()")
             + pm("GitOpsRepo.repository()"))
    py_f = pm("events.parse (pydantic CiResult)") + pm("decode_fields (bytes -> str)")
    sum_f = redis_f + git_f + py_f
    git_s = (2 * pm("GitOpsRepo.policy() (cached)") + pm("GitOpsRepo.values_exists()")
             + pm("GitOpsRepo.repository()") + 2 * pm("GitOpsRepo.pinned()"))
    redis_s = (redis_f + pm("EvidenceStore.record_check (HSET)") + pm("EvidenceStore.get (HGETALL)")
               + pm("Bus.lock enter + exit (SET NX, Lua unlock)"))
    sum_s = git_s + redis_s + py_f
    spawn = pm("bare `git rev-parse` subprocess")
    fwk_f = per_worker["failure"] - disp["failure"]["mean"]
    fwk_s = per_worker["skip"] - disp["skip"]["mean"]
    w("Adding up the parts the handler calls (from the gate-evaluator's code path):\n")
    w(f"- **failed build** (`policy()`, `values_exists()`, `repository()`, parse, audit XADD, "
      f"XACK): git reads {_ms(git_f)} ms + Redis round trips {_ms(redis_f)} ms + parse/decode "
      f"{_ms(py_f)} ms = **{_ms(sum_f)} ms**, against {_ms(disp['failure']['mean'])} ms for "
      f"the whole `Dispatcher.process`; git is {git_f / sum_f:.0%} of the parts.")
    w(f"- **skip** (the same, plus a second `policy()`, `pinned()` in staging and in dev, the "
      f"evidence HSET and HGETALL, the decision lock): git reads {_ms(git_s)} ms + Redis "
      f"{_ms(redis_s)} ms + parse/decode {_ms(py_f)} ms = **{_ms(sum_s)} ms**, against "
      f"{_ms(disp['skip']['mean'])} ms for the whole; git is {git_s / sum_s:.0%} of the parts.")
    w(f"- Every git read is a fresh `git` process: a bare `git rev-parse` costs {_ms(spawn)} ms "
      f"here, and `GitOpsRepo` runs {disp['failure']['git']:g} of them per failed build and "
      f"{disp['skip']['git']:g} per skip. `main_commit()` spawns `git rev-parse` on every "
      f"call, and `values_exists()`, `repository()` and `pinned()` each resolve main again and "
      f"re-read the values file with their own `git cat-file`, so one failed build reads the "
      f"same blob twice and resolves `main` three times. The YAML parse of a values file "
      f"(ruamel) is {_ms(pm('values.read_value (ruamel parse)'))} ms of each `repository()` / "
      f"`pinned()`. Validation itself is cheap: `events.parse` is "
      f"{_ms(pm('events.parse (pydantic CiResult)'))} ms.")
    w(f"- cProfile of `Dispatcher.process` over the same entries (profiling inflates Python "
      f"code, so read shares, not absolutes): failed build {prof['failure']['total']:.1f} ms/event "
      f"of which `subprocess.run` {prof['failure']['subprocess.run (git)']:.1f}, ruamel "
      f"{prof['failure']['ruamel YAML parse (values.read_value)']:.1f}, redis-py "
      f"{prof['failure']['redis-py commands']:.1f}, `events.parse` "
      f"{prof['failure']['pydantic validate (events.parse)']:.2f}; skip "
      f"{prof['skip']['total']:.1f} ms/event: `subprocess.run` "
      f"{prof['skip']['subprocess.run (git)']:.1f}, ruamel "
      f"{prof['skip']['ruamel YAML parse (values.read_value)']:.1f}, redis-py "
      f"{prof['skip']['redis-py commands']:.1f}.")
    fw = (f"FastStream's dispatch plus the `asyncio.to_thread` hop cost {_ms(fs['per_event_ms'])} "
          f"ms per event in the no-op consumer (the bare hop alone "
          f"{_ms(pm('asyncio.to_thread hop (no-op)'))} ms), against {_ms(per_bare['failure'])} "
          "ms for the whole bare loop: a few times the bare loop, but under a tenth of the git "
          "reads.")
    if fwk_f > 0 and fwk_s > 0:
        w(f"- The worker process takes {_ms(fwk_f)} ms (failed build) / {_ms(fwk_s)} ms (skip) "
          f"more per event than `Dispatcher.process` in-process. {fw} The remainder is the "
          "worker's other subscribers (XAUTOCLAIM reclaim, `ferry:changes`) and the GIL.")
    else:
        w(f"- In this run the worker process was not slower than `Dispatcher.process` in-process "
          f"({_ms(per_worker['failure'])} vs {_ms(disp['failure']['mean'])} ms, "
          f"{_ms(per_worker['skip'])} vs {_ms(disp['skip']['mean'])} ms): the two were measured "
          "at different moments on a shared 2-CPU machine, and the framework's share is "
          f"smaller than that run-to-run noise. Measured directly: {fw}")
    w("")

    w("### (a) one promotion\n")
    st = lat["stages_ms"]
    w("Each promotion's timeline from entry ids (server clock): the CI entry, the "
      "`ferry:promotions` command gate-evaluator wrote, `pr_opened` and `pr_merged` on "
      "`ferry:changes`. pr-writer takes one command at a time in stream order, so it starts a "
      "promotion at max(command, previous pr_merged).\n")
    w("| stage | count | p50 ms | p90 ms | p99 ms | max ms |")
    w("|---|---|---|---|---|---|")
    for name, s in st.items():
        w(_stat_row(name, s))
    w(_stat_row("pr-writer busy per promotion (start -> pr_merged)", lat["pr_writer_service_ms"]))
    w("")
    means = {k: v["mean"] for k, v in st.items()}
    w(f"Mean latency {_ms(lat['latency_ms']['mean'])} ms = "
      + " + ".join(f"{_ms(v)} ({k.split(' (')[0]})" for k, v in means.items())
      + " (the stages add up exactly: they are differences of the same timestamps).\n")
    svc = lat["pr_writer_service_ms"]["p50"]
    cap = 1000 / svc if svc else float("nan")
    w(f"- **Queueing dominates.** One pr-writer is busy {_ms(svc)} ms per promotion (p50), so "
      f"it completes about {cap:.1f} promotions/s; {lat['rate']:g}/s is more than that, the "
      f"backlog grows for the whole burst, and the later events wait (queue p50 "
      f"{_ms(st['queued for pr-writer']['p50'])} ms, max {_ms(st['queued for pr-writer']['max'])} "
      f"ms). The latency percentiles therefore depend on the burst length "
      f"({lat['services']} events here): they describe a {lat['services'] / lat['rate']:.0f} s "
      f"burst at {lat['rate']:g}/s, not a steady state. Events that found pr-writer idle took "
      f"{_ms(lat['unqueued_latency_ms']['p50'])} ms end to end (n="
      f"{lat['unqueued_latency_ms']['count']}). More pr-writer replicas is the documented way "
      f"to scale; this benchmark runs one, as asked.")
    gate = st["gate-evaluator (CI entry -> promotion command)"]
    w(f"- **gate-evaluator** takes {_ms(gate['p50'])} ms (p50, max {_ms(gate['max'])}) from CI "
      "entry to promotion command: the CI handler's git reads as in (b) (`policy()` twice, "
      "`values_exists`, `repository`, `pinned` in staging and dev: about 10 git processes), "
      "the evidence hash, the decision lock and the publish-once script; after each merge "
      "moves main it also re-reads and re-parses ferry.yaml (`load_policy`, "
      f"{_ms(parts['policy.load_policy (on a cache miss: main moved)']['mean'])} ms). Under "
      "load it shares the 2 CPUs with pr-writer's git processes and also handles the "
      "`pr_merged` changes.")
    w(f"- **pr-writer's own work vs the bare sequence**: {_ms(svc)} ms vs "
      f"{_ms(bare['total_ms']['p50'])} ms. Its steps, each timed alone in-process on a fresh "
      f"scaffolded repo ({prp['k']} promotions):\n")
    w("| pr-writer step | p50 ms | mean ms | git processes |")
    w("|---|---|---|---|")
    for name in ("find_pr", "prepare_promotion", "open_pr", "merge_pr"):
        s = prp[name]
        w(f"| {name} | {_ms(s['p50'])} | {_ms(s['mean'])} | {s['git']:.1f} |")
    w("")
    git_pr = sum(prp[n]["git"] for n in ("prepare_promotion", "open_pr", "merge_pr"))
    w(f"  That is {git_pr:.0f} git processes per promotion against the bare sequence's 8: "
      "`prepare_promotion` adds `check-ref-format`, `rev-parse` of origin/main, `clean`, `add`, "
      "`rev-parse HEAD`, the `_same_change_on_remote` probe, and a `cat-file` of ferry.yaml "
      "because main moved since the last promotion (then `load_policy` again); "
      "`LocalForge.open_pr` resolves both branches; `merge_pr` resolves both branches "
      "again, runs `merge --abort` on its scratch clone, `rev-parse` x3, "
      "`merge-base --is-ancestor` and `clean`. At about "
      f"{_ms(spawn)} ms per process spawn that is roughly "
      f"{(git_pr - 8) * spawn:.0f} ms of extra process starts. Timed alone, prepare + open + "
      f"merge take {sum(prp[n]['p50'] for n in ('prepare_promotion', 'open_pr', 'merge_pr')):.0f}"
      f" ms; the worker was busy {_ms(svc)} ms per promotion. The rest (not timed separately) "
      "is the extra work those commands do (fetching two refs into the merge clone, "
      "`clean -ffdx`), "
      "the fsync'd PR-record writes, the Redis lock, publish-once scripts and audit XADDs, and, "
      "in the worker, sharing 2 CPUs with gate-evaluator.")
    rp = prp["read_pulls"]
    if "latency" in rp:
        w(f"- `LocalForge.open_pr` lists every PR record ever written (`read_pulls(..., 'open')` "
          f"parses each JSON file to find an open PR with the same head): "
          f"{_ms(rp['small']['p50'])} ms with {rp['small']['records']} records, "
          f"{_ms(rp['latency']['p50'])} ms with the {rp['latency']['records']} records the "
          f"latency run left. Small now, but it grows linearly with the forge's history.")
    w("")
    if lat["errors"] or any(t["errors"] for t in tp.values()):
        w("### Worker log lines at WARNING or above\n")
        w("```")
        w(lat["errors"])
        for t in tp.values():
            w(t["errors"])
        w("```\n")
    w("## Startup\n")
    w(f"Time from `Popen` to the consumer appearing in its group: gate-evaluator "
      f"{lat['startup_s']['gate-evaluator']:.2f} s, pr-writer {lat['startup_s']['pr-writer']:.2f} "
      f"s (latency run); gate-evaluator {tp['failure']['startup_s']:.2f} s (throughput run). "
      "Not part of any figure above except the throughput 'wall' column.")
    return "\n".join(out) + "\n"
