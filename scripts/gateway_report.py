#!/usr/bin/env python3
"""Summarises the gateway benchmark (scripts/bench_gateway.sh) as Markdown.

Usage: scripts/gateway_report.py results.jsonl

Reads examples/loadgen's JSON lines (one per run) and prints: latency per
path and offered rate, the latency each gateway adds over going direct
(p50, p99; a rate counts only where both the path and direct sustained it),
the highest sustained rate per path (errors < 1 %, achieved within 5 % of
offered), what clients got under a tight upstream quota, and the goals of
issue 13 marked met or missed. Python 3 standard library only.
"""

import json
import sys


def main():
    rows, meta = [], {}
    with open(sys.argv[1]) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            j = json.loads(line)
            if "meta" in j:
                meta = j["meta"]
            else:
                rows.append(j)

    fixed = {(r["label"], r["offered"]): r for r in rows if r["kind"] == "fixed"}
    best = {r["label"]: r for r in rows if r["kind"] == "max"}
    paths = ["direct", "gateway", "litellm"]
    rates = sorted({o for (_, o) in fixed})

    print(f"Gateway benchmark, {meta.get('date', '?')}, {meta.get('cores', '?')} cores shared by "
          f"the simulator, both gateways and the load generator (load average at the start "
          f"{meta.get('load', '?')}); LiteLLM {meta.get('litellm', '?')} with "
          f"{meta.get('litellm_workers', '?')} workers; {meta.get('duration', '?')} s per fixed rate.\n")
    print("| path | offered req/s | achieved | errors | p50 ms | p99 ms | added p50 ms | added p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    added = {}
    for rate in rates:
        d = fixed.get(("direct", rate))
        for p in paths:
            r = fixed.get((p, rate))
            if r is None:
                continue
            a50 = a99 = "—"
            if p != "direct" and d and d["sustained"] and r["sustained"]:
                added[(p, rate)] = (r["p50_ms"] - d["p50_ms"], r["p99_ms"] - d["p99_ms"])
                a50, a99 = (f"{x:.3f}" for x in added[(p, rate)])
            err = f"{100 * r['error_rate']:.1f} %"
            print(f"| {p} | {rate:.0f} | {r['achieved']:.0f} | {err} | {r['p50_ms']:.3f} | "
                  f"{r['p99_ms']:.3f} | {a50} | {a99} |")

    print("\n| path | highest sustained req/s | p50 ms there | p99 ms there |")
    print("|---|---:|---:|---:|")
    for p in paths:
        b = best.get(p)
        if b:
            print(f"| {p} | {b['offered']:.0f} | {b['p50_ms']:.3f} | {b['p99_ms']:.3f} |")
        else:
            print(f"| {p} | none | | |")

    tight = [r for r in rows if r["label"].startswith("tight-")]
    if tight:
        print(f"\nTight upstream quota ({meta.get('tight_rps', '?')} req/s), offered above it "
              f"(open loop); what the clients got:\n")
        print("| path | offered req/s | sent | 2xx | statuses | timeouts | p50 ms | p99 ms |")
        print("|---|---:|---:|---:|---|---:|---:|---:|")
        for r in tight:
            st = ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items())) or "—"
            print(f"| {r['label'][6:]} | {r['offered']:.0f} | {r['sent']} | {r['ok']} | {st} | "
                  f"{r['timeouts']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")

    print("\nGoals:\n")
    both = [rate for rate in rates if ("gateway", rate) in added and ("litellm", rate) in added]
    if both:
        for rate in both:
            ours, theirs = added[("gateway", rate)][0], added[("litellm", rate)][0]
            ok = ours <= 0.1 * theirs
            print(f"- added p50 at {rate:.0f} req/s: ours {ours:.3f} ms vs LiteLLM {theirs:.3f} ms "
                  f"(ratio {ours / theirs if theirs else float('nan'):.3f}; goal ≤ 0.1): "
                  f"{'met' if ok else 'missed'}")
    else:
        print("- added p50 ≤ 0.1× LiteLLM's: no rate both sustained; not judged")
    a = added.get(("gateway", 500.0))
    if a:
        print(f"- our added p99 at 500 req/s: {a[1]:.3f} ms (goal ≤ 1 ms): "
              f"{'met' if a[1] <= 1.0 else 'missed'}")
    else:
        print("- our added p99 at 500 req/s: not sustained by both direct and gateway; missed")
    g, l = best.get("gateway"), best.get("litellm")
    if g and l:
        ratio = g["offered"] / l["offered"]
        print(f"- max rate: ours {g['offered']:.0f} req/s vs LiteLLM {l['offered']:.0f} req/s "
              f"(×{ratio:.1f}; goal ≥ 10×): {'met' if ratio >= 10 else 'missed'}")
        d = best.get("direct")
        if d and g["offered"] >= 0.9 * d["offered"]:
            print(f"  (ours is within 10 % of going direct, {d['offered']:.0f} req/s: the simulator "
                  f"and the generator on the same cores bound it, not the gateway)")
    elif g:
        print(f"- max rate: ours {g['offered']:.0f} req/s, LiteLLM sustained none of the rates tried: met")
    else:
        print("- max rate: ours sustained none; missed")


if __name__ == "__main__":
    main()
