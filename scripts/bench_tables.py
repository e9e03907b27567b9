#!/usr/bin/env python3
"""Fills the tables of BENCHMARKS.md from the benchmarks' machine-readable output.

Usage: scripts/bench_tables.py [--target DIR] [--only NAME,...] [BENCHMARKS.md]

Criterion writes one `<target>/criterion/<dir>/new/benchmark.json` (with the
benchmark's `full_id`, e.g. `stack/bare`) and `estimates.json` per benchmark;
the workload example writes `<target>/workload.json` and
`<target>/workload-faults.json`. Each table of BENCHMARKS.md sits between
`<!-- table:NAME -->` and `<!-- /table -->`; only what is between the markers
is replaced, the prose around them is kept. A table whose figures are not
all present in the output is left as it is (with a note on stderr), so a
partial run updates only what it measured.

The time quoted is criterion's typical estimate (the slope of a linear
sampling run, else the mean) — the middle value of the `time: [low mid
high]` line criterion prints. Python 3 standard library only.
"""

import argparse
import datetime
import json
import os
import re
import sys


# ---------------------------------------------------------------- criterion

def load_criterion(target):
    """full_id -> {"time": ns, "low": ns, "high": ns, "throughput": {...}}."""
    root = os.path.join(target, "criterion")
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "benchmark.json" not in files:
            continue
        try:
            with open(os.path.join(dirpath, "benchmark.json")) as f:
                meta = json.load(f)
            with open(os.path.join(dirpath, "estimates.json")) as f:
                est = json.load(f)
        except (OSError, ValueError):
            continue
        typical = est.get("slope") or est.get("mean")
        if not typical:
            continue
        ci = typical.get("confidence_interval", {})
        out[meta["full_id"]] = {
            "time": typical["point_estimate"],
            "low": ci.get("lower_bound"),
            "high": ci.get("upper_bound"),
            "throughput": meta.get("throughput") or {},
        }
    return out


def fmt_time(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    if ns >= 100:
        return f"{ns:.0f} ns"
    return f"{ns:.1f} ns"


def fmt_bytes_per_s(bps):
    gib = bps / (1 << 30)
    if gib >= 0.1:
        return f"{gib:.1f} GiB/s"
    return f"{bps / (1 << 20):.0f} MiB/s"


def throughput(c):
    t = c["throughput"]
    if "Bytes" in t:
        return fmt_bytes_per_s(t["Bytes"] / (c["time"] * 1e-9))
    if "Elements" in t:
        return f"{t['Elements'] / (c['time'] * 1e-9) / 1e6:.2f} M/s"
    return ""


def ratio(a, b):
    return f"{a / b:.2f}×"


class Missing(Exception):
    pass


def need(crit, *ids):
    missing = [i for i in ids if i not in crit]
    if missing:
        raise Missing(", ".join(missing))
    return [crit[i] for i in ids]


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------- tables

PARSE = [
    ("parse/request_meta_4k", "`RequestMeta::parse` of a 4.1 KiB Anthropic Messages body (model, max_tokens, stream, temperature, input-token estimate walking every message): the scanner fast path"),
    ("parse/request_meta_4k_serde", "the same parse forced through the serde path alone (the scanner's fallback; what `parse` was before the scanner)"),
    ("observe/sse_100_deltas_64b_chunks", "a `ResponseBody` replaying an Anthropic SSE stream of 100 text deltas in 64-byte chunks, with usage observation and one completion observer"),
]


def t_parse(crit):
    need(crit, *[i for i, _ in PARSE])
    return table(
        ["bench", "what it measures", "time", "throughput"],
        [[f"`{i}`", what, fmt_time(crit[i]["time"]), throughput(crit[i])] for i, what in PARSE],
    )


RETRY = [
    ("retry/tower_retry_noop", "tower's `Retry` with a policy that never retries but copies the request in `clone_request`, as every real retry policy must"),
    ("retry/ours_noop", "`RetryLayer::new()` (defaults: 3 attempts, budget, jitter): a packed copy of the request (replay template) + budget deposit + response-start check + `RetryInfo` in the extensions"),
    ("retry/ours_noop_no_budget", "the same without the retry budget"),
    ("retry/ours_noop_single_attempt", "`max_attempts(1)`: no replay template"),
    ("retry/no_layer", "the service called directly"),
]


def t_retry(crit):
    need(crit, *[i for i, _ in RETRY])
    return table(
        ["bench", "what it measures", "criterion time"],
        [[f"`{i}`", what, fmt_time(crit[i]["time"])] for i, what in RETRY],
    )


CACHE = [
    ("cache/moka_get", "moka 0.12 `sync::Cache::get`, hit, 10,000 `CacheKey`s, byte weigher"),
    ("cache/quick_cache_get", "quick_cache 0.7 `sync::Cache::get`, same keys, same values, byte weigher"),
    ("cache/hit_4k_body", "a full `Cache::call` on a hit for a 4.1 KiB Anthropic body (request with `x-api-key`, `anthropic-version`): tenant fingerprint, raw-body xxh3-128, alias lookup, store lookup, response with headers, `CacheStatus` and replay body; the request is dropped inside the measurement"),
    ("cache/key_alias_4k", "`DefaultKeyPolicy::key` for a byte-identical repeat (xxh3 + alias lookup + key clone)"),
    ("cache/xxh3_4k", "`xxh3_128` of the 4.1 KiB body alone"),
    ("cache/canonical_4k", "`canonical_hash` of the same body (streaming order-independent walk) — what the alias index saves"),
]


def t_cache(crit):
    need(crit, *[i for i, _ in CACHE])
    return table(
        ["bench", "what it measures", "time"],
        [[f"`{i}`", what, fmt_time(crit[i]["time"])] for i, what in CACHE],
    )


ADMISSION = [
    ("admission/governor_check_n", "governor direct limiter, `check_n(4)`, 10⁹ cells/s, burst 2³²−1 (never denies; asserted)", "admission/governor_check_n", "governor"),
    ("admission/no_layer", "the floor of every layer row: the no-op service `ready()` + `call()` + drop response, same request", "admission/governor_check_n", "governor"),
    ("admission/tower_rate_limit", "tower `RateLimit` `ready()` + `call()` + drop response, no-op service", "admission/governor_check_n", "governor"),
    ("admission/ours_1dim", "`RateLimitLayer` (requests limited) `ready()` + `call()` + poll + drop response", "admission/governor_check_n", "governor"),
    ("admission/ours_3dim", "same, requests + input + output tokens limited", "admission/governor_check_n", "governor"),
    ("admission/ours_keyed_1k", "same as 1dim, 1,000 API keys round-robin (1,000 groups, warmed)", "admission/governor_check_n", "governor"),
    ("admission/ours_gcra_1dim", "the algorithm as the in-memory store runs it: `Mutex<Gcra>` lock + `tokio::time::Instant::now()` + `reserve([1,0,0])`", "admission/governor_check_n", "governor"),
    ("admission/ours_gcra_3dim", "same, three dimensions `reserve([1,20,4])`", "admission/governor_check_n", "governor"),
    ("concurrency/no_layer", "the floor: the no-op service `ready()` + `call()` + poll + drop response", "concurrency/tower", "tower"),
    ("concurrency/tower", "tower `ConcurrencyLimit` `ready()` + `call()` + poll + drop response and future", "concurrency/tower", "tower"),
    ("concurrency/ours", "`ConcurrencyLimitLayer` same work; the permit is released by dropping the response body", "concurrency/tower", "tower"),
]

# Each layer row's floor (the same work without the layer).
FLOOR = {"admission": "admission/no_layer", "concurrency": "concurrency/no_layer"}


def t_admission(crit):
    need(crit, *[i for i, *_ in ADMISSION])
    rows = []
    for i, what, peer, peer_name in ADMISSION:
        r = ratio(crit[i]["time"], crit[peer]["time"])
        floor = FLOOR[i.split("/")[0]]
        layer = i.endswith(("tower_rate_limit", "_1dim", "_3dim", "_1k", "/tower", "/ours")) and "gcra" not in i
        over = fmt_time(crit[i]["time"] - crit[floor]["time"]) if layer else "—"
        rows.append([f"`{i}`", what, fmt_time(crit[i]["time"]),
                     "1.0× (peer)" if i == peer else f"{r} {peer_name}", over])
    return table(["bench", "what it measures", "time", "ratio", "over the floor"], rows)


BREAKDOWN = [
    ("breakdown/instant_now", "`tokio::time::Instant::now`"),
    ("breakdown/system_time_now", "`SystemTime::now`"),
    ("breakdown/body_drop_no_observer", "`ResponseBody::empty()` dropped with no observer: nothing to tell"),
    ("breakdown/body_observer_attach_drop", "same with one `on_complete` observer"),
    ("breakdown/key_id_from_headers", "`KeyId::from_headers`, `x-api-key`"),
    ("breakdown/quota_snapshot_no_headers", "`QuotaSnapshot::from_headers` on an empty map"),
    ("breakdown/wait_queue_wake_head_empty", "`WaitQueue::wake_head`, no waiter"),
    ("breakdown/extensions_insert_arc_meta", "first extension insert into a request"),
    ("breakdown/permit_atomics", "the least a permit outliving the response future costs: `Arc` clone, take, give back, `Arc` drop"),
]


def t_breakdown(crit):
    need(crit, *[i for i, _ in BREAKDOWN])
    return table(
        ["bench", "time"],
        [[f"`{i}` ({what})", fmt_time(crit[i]["time"])] for i, what in BREAKDOWN],
    )


STACK = [
    ("stack/bare", "the no-op transport called directly (200, `{}` as a `String`, `content-type`): the floor"),
    ("stack/ours_passthrough", "`Stack::builder()`: BufferBody (parses the 4.1 KiB body) → Cache (pass: no `temperature`, not cached) → Fallback (empty chain: a passthrough) → Retry (default) → RateLimit (3 dimensions, never waits) → ConcurrencyLimit (1,024); body read to its end and dropped"),
    ("stack/tower_resilience_equiv", "tower-resilience 0.13: Cache (LRU 1,024, per-request counter key: a miss, stored) → Fallback (from error) → Retry (3 attempts, exponential backoff, token-bucket budget, 429/5xx predicate) → RateLimiter (fixed window, 10¹²/s); no parse"),
]


def t_stack(crit):
    bare, ours, theirs = need(crit, *[i for i, _ in STACK])
    o_ours = ours["time"] - bare["time"]
    o_theirs = theirs["time"] - bare["time"]
    rows = []
    for (i, what), c in zip(STACK, (bare, ours, theirs)):
        over = c["time"] - bare["time"]
        rows.append([
            f"`{i}`", what, fmt_time(c["time"]),
            "—" if i == "stack/bare" else fmt_time(over),
        ])
    text = table(["bench", "what it measures", "time", "overhead over bare"], rows)
    text += (
        f"\n\nOverhead ratio ours / tower-resilience: **{o_ours / o_theirs:.2f}×** "
        f"(target ≤ 0.4×: {'met' if o_ours <= 0.4 * o_theirs else 'missed'}); "
        f"our overhead {fmt_time(o_ours)} (target ≤ 2 µs including the parse: "
        f"{'met' if o_ours <= 2000 else 'missed'})."
    )
    return text


# ----------------------------------------------------------------- workload

def workload_table(path):
    if not os.path.exists(path):
        raise Missing(path)
    with open(path) as f:
        rows = json.load(f)
    out = []
    for r in rows:
        out.append([
            f"`{r['client']}`",
            f"{r['succeeded']}/{r['requests']}",
            str(r["failed"] + r["lost"]),
            str(r["upstream_attempts"]),
            str(r["status_429"]),
            str(r["duplicates"]),
            f"{r['elapsed_s']:.2f} s",
            f"{r['lower_bound_s']:.2f} s",
            f"{r['elapsed_over_bound']:.3f}",
            f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f} ms",
            f"{r['utilization_requests']:.2f} / {r['utilization_input_tokens']:.2f} / {r['utilization_output_tokens']:.2f}",
        ])
    return table(
        ["client", "succeeded", "failed + lost", "upstream attempts", "429s", "duplicates",
         "elapsed", "minimum", "elapsed ÷ minimum", "p50 / p99", "utilization req / in / out"],
        out,
    )


# ------------------------------------------------------------------- driver

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", nargs="?", default="BENCHMARKS.md")
    ap.add_argument("--target", default=os.environ.get("CARGO_TARGET_DIR", "target"))
    ap.add_argument("--only", default="", help="comma-separated table names")
    a = ap.parse_args()

    crit = load_criterion(a.target)
    makers = {
        "parse": lambda: t_parse(crit),
        "retry": lambda: t_retry(crit),
        "cache": lambda: t_cache(crit),
        "admission": lambda: t_admission(crit),
        "breakdown": lambda: t_breakdown(crit),
        "stack": lambda: t_stack(crit),
        "workload": lambda: workload_table(os.path.join(a.target, "workload.json")),
        "workload-32": lambda: workload_table(os.path.join(a.target, "workload-32.json")),
        "workload-faults": lambda: workload_table(os.path.join(a.target, "workload-faults.json")),
    }
    only = {n for n in a.only.split(",") if n}

    with open(a.file) as f:
        text = f.read()
    pattern = re.compile(r"(<!-- table:([\w-]+) -->\n)(.*?)(<!-- /table -->)", re.S)
    updated = []

    def fill(m):
        name = m.group(2)
        if name not in makers or (only and name not in only):
            return m.group(0)
        try:
            body = makers[name]()
        except Missing as e:
            print(f"bench_tables: {name}: kept as is (no output for {e})", file=sys.stderr)
            return m.group(0)
        updated.append(name)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        try:
            load = "load average " + " / ".join(f"{x:.1f}" for x in os.getloadavg())
        except OSError:
            load = "load unknown"
        return f"{m.group(1)}{body}\n\n_Generated {stamp} by `scripts/bench_tables.py` ({load} at generation)._\n{m.group(4)}"

    text = pattern.sub(fill, text)
    with open(a.file, "w") as f:
        f.write(text)
    print("bench_tables: updated " + (", ".join(updated) if updated else "nothing"), file=sys.stderr)


if __name__ == "__main__":
    main()
