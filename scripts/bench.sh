#!/usr/bin/env bash
# Regenerates the figures of BENCHMARKS.md: runs every criterion bench and
# the workload harness, then fills the tables between the
# `<!-- table:NAME -->` … `<!-- /table -->` markers from their
# machine-readable output (scripts/bench_tables.py; python3 stdlib only).
#
# Usage (from anywhere in the repository):
#
#   scripts/bench.sh                 # everything (tens of minutes)
#   scripts/bench.sh stack parse     # only these benches / steps
#   QUICK=1 scripts/bench.sh stack   # shorter criterion runs (1 s warm-up, 3 s measurement)
#
# Steps: parse, admission, retry, cache, stack (criterion benches),
# workload (8x), workload-32, workload-faults (the harness on the embedded simulator), and
# always the table generation at the end. Honours CARGO_TARGET_DIR.
# Two steps are not part of "everything", and need PyPI (never in CI):
#   scripts/bench.sh gateway   # direct vs axum_gateway vs the LiteLLM proxy (scripts/bench_gateway.sh)
#   scripts/bench.sh sdk       # the official anthropic + openai SDKs against axum_gateway
# Criterion options can be passed through CRITERION_ARGS.
#
# The machine should be otherwise idle: criterion's figures move with the
# load (BENCHMARKS.md says what load each run had).
set -euo pipefail

cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"

all=(parse admission retry cache stack workload workload-32 workload-faults)
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=("${all[@]}")

crit_args=(${CRITERION_ARGS:-})
if [ -n "${QUICK:-}" ]; then
    crit_args+=(--warm-up-time 1 --measurement-time 3)
fi

echo "bench.sh: $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')" >&2

tables=0
for step in "${steps[@]}"; do
    [ "$step" = gateway ] || [ "$step" = sdk ] || tables=1
    case "$step" in
        parse | admission | retry | cache | stack)
            echo "bench.sh: cargo bench --bench $step" >&2
            # `--` only when there are criterion arguments to pass.
            if [ ${#crit_args[@]} -gt 0 ]; then
                cargo bench --bench "$step" -- "${crit_args[@]}"
            else
                cargo bench --bench "$step"
            fi
            ;;
        workload)
            echo "bench.sh: workload, 8x oversubscribed" >&2
            cargo run --release --example workload -- --requests 400 --oversubscription 8 \
                --json "$target/workload.json" --plot BENCHMARKS-workload.svg
            ;;
        workload-32)
            echo "bench.sh: workload, 32x oversubscribed" >&2
            cargo run --release --example workload -- --requests 400 --oversubscription 32 \
                --json "$target/workload-32.json"
            ;;
        workload-faults)
            echo "bench.sh: workload --faults, 8x oversubscribed" >&2
            cargo run --release --example workload -- --faults --requests 400 --oversubscription 8 \
                --json "$target/workload-faults.json"
            ;;
        gateway)
            scripts/bench_gateway.sh
            ;;
        sdk)
            venv="${SDK_VENV:-$target/bench-venv/sdk}"
            if [ ! -x "$venv/bin/python" ]; then
                python3 -m venv "$venv"
                "$venv/bin/pip" install -q anthropic openai
            fi
            cargo build --example axum_gateway
            "$venv/bin/python" scripts/sdk_gateway_check.py "$target/debug/examples/axum_gateway"
            ;;
        *)
            echo "bench.sh: unknown step '$step' (known: ${all[*]} gateway sdk)" >&2
            exit 2
            ;;
    esac
done

if [ "$tables" = 1 ]; then
    python3 scripts/bench_tables.py --target "$target" BENCHMARKS.md
fi
