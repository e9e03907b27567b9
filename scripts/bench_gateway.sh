#!/usr/bin/env bash
# The gateway benchmark (`scripts/bench.sh gateway`): the same simulator
# reached three ways — direct, through examples/axum_gateway, through the
# LiteLLM proxy — under the open-loop generator examples/loadgen at 100,
# 500 and 1,000 requests/s and then the highest rate each sustains; then
# a tight upstream quota, to see what each returns to its clients.
# scripts/gateway_report.py prints the comparison at the end.
#
# Needs python3 with venv and PyPI (LiteLLM is installed into
# $target/bench-venv/litellm on first use; LITELLM_VENV points elsewhere).
# Never run in CI. Knobs (environment): DURATION (s per fixed rate, 10),
# PROBE (s per max probe, 5), PROBES (8), RATES ("10,100,500,1000,max": 10
# req/s is below what LiteLLM sustains here, so the added latency of both
# gateways is compared at one common rate),
# TIGHT_RPS (the tight upstream's quota, req/s, 5), TIGHT_RATE (offered req/s
# in the tight-quota run, 20), TIGHT_DURATION (10). The tight quota sits
# below what every path can carry, so each one really meets it.
#
# All three servers and the generator share the machine: the figures are
# for one box, with everything on it competing for its cores.
set -euo pipefail

cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
target="${CARGO_TARGET_DIR:-target}"
out="$target/gateway-bench"
mkdir -p "$out"
rm -f "$out/results.jsonl"

DURATION="${DURATION:-10}"
PROBE="${PROBE:-5}"
PROBES="${PROBES:-8}"
RATES="${RATES:-10,100,500,1000,max}"
TIGHT_RPS="${TIGHT_RPS:-5}"
TIGHT_RATE="${TIGHT_RATE:-20}"
TIGHT_DURATION="${TIGHT_DURATION:-10}"
MASTER_KEY="sk-litellm-bench-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
UPSTREAM_KEY="sk-bench-upstream"

echo "bench_gateway: building release examples" >&2
cargo build --release --example sim_server --example axum_gateway --example loadgen >&2
bin="$target/release/examples"

venv="${LITELLM_VENV:-$target/bench-venv/litellm}"
if [ ! -x "$venv/bin/litellm" ]; then
    echo "bench_gateway: installing litellm[proxy] into $venv (slow)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'litellm[proxy]'
fi
litellm_version="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')"

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# Starts "$@" in the background (in this shell, so the trap can stop it),
# its stdout in $1.out; sets $url to the URL it prints on its first line
# (`listening on URL`).
start() {
    local name=$1
    shift
    "$@" >"$out/$name.out" 2>"$out/$name.err" &
    pids+=($!)
    for _ in $(seq 1 100); do
        if grep -q '^listening on ' "$out/$name.out" 2>/dev/null; then
            url="$(awk '/^listening on /{print $3; exit}' "$out/$name.out")"
            return
        fi
        sleep 0.1
    done
    echo "bench_gateway: $name did not start:" >&2
    cat "$out/$name.err" >&2
    exit 1
}

big=(--rpm 1000000000 --itpm 1000000000000 --otpm 1000000000000)
start sim "$bin/sim_server" --port 0 "${big[@]}" --output-tokens 16:16 --seed 1
sim=$url
# TIGHT_RPS requests per provider minute, a provider minute per second.
start sim-tight "$bin/sim_server" --port 0 --rpm "$TIGHT_RPS" --itpm 1000000000 \
    --otpm 1000000000 --time-scale 60 --output-tokens 16:16 --seed 2
tight=$url

export OPENAI_API_KEY="$UPSTREAM_KEY" ANTHROPIC_API_KEY="$UPSTREAM_KEY"
start gateway "$bin/axum_gateway" --port 0 --upstream "$sim" --no-limits \
    --max-inflight 8192 --upstream-concurrency 4096
gw=$url
# In front of the tight upstream the gateway is told its quota, as a user
# would configure a provider tier.
start gateway-tight "$bin/axum_gateway" --port 0 --upstream "$tight" \
    --rpm "$TIGHT_RPS" --itpm 1000000000 --otpm 1000000000 --time-scale 60
gw_tight=$url
unset OPENAI_API_KEY ANTHROPIC_API_KEY

cat >"$out/litellm.yaml" <<EOF
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: $sim/v1
      api_key: $UPSTREAM_KEY
  - model_name: gpt-tight
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: $tight/v1
      api_key: $UPSTREAM_KEY
litellm_settings:
  telemetry: false
EOF
# LiteLLM's default, one worker: with `--num_workers 2` (1.108.7) its
# uvicorn children die at start-up here, and the proxy never answers.
litellm_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
(cd "$out" && LITELLM_MASTER_KEY="$MASTER_KEY" LITELLM_LOCAL_MODEL_COST_MAP=True \
    exec "$venv/bin/litellm" --config "$out/litellm.yaml" --host 127.0.0.1 --port "$litellm_port") \
    >"$out/litellm.out" 2>&1 &
pids+=($!)
litellm="http://127.0.0.1:$litellm_port"
for _ in $(seq 1 120); do
    curl -sf "$litellm/health/liveliness" >/dev/null 2>&1 && break
    sleep 1
done
curl -sf "$litellm/health/liveliness" >/dev/null || { echo "bench_gateway: LiteLLM did not start" >&2; tail -20 "$out/litellm.out" >&2; exit 1; }

echo "bench_gateway: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), litellm $litellm_version" >&2
echo "{\"meta\": {\"date\": \"$(date -u '+%Y-%m-%d %H:%M UTC')\", \"cores\": $(nproc), \"load\": \"$(cut -d' ' -f1-3 /proc/loadavg)\", \"litellm\": \"$litellm_version\", \"litellm_workers\": 1, \"duration\": $DURATION, \"rates\": \"$RATES\", \"tight_rps\": $TIGHT_RPS}}" >>"$out/results.jsonl"

body='{"model":"MODEL","max_tokens":16,"messages":[{"role":"user","content":"request {n}: say hello"}]}'
load() { # label url key model rates duration timeout_ms
    "$bin/loadgen" --label "$1" --url "$2/v1/chat/completions" --header "authorization: Bearer $3" \
        --body "${body/MODEL/$4}" --rates "$5" --duration "$6" --probe-duration "$PROBE" \
        --max-probes "$PROBES" --timeout "$7" --pause 3 --json "$out/results.jsonl"
}

load direct "$sim" "$UPSTREAM_KEY" gpt-4o-mini "$RATES" "$DURATION" 2000
load gateway "$gw" client-key gpt-4o-mini "$RATES" "$DURATION" 2000
load litellm "$litellm" "$MASTER_KEY" gpt-4o-mini "$RATES" "$DURATION" 2000

echo "bench_gateway: tight upstream quota ($TIGHT_RPS req/s), $TIGHT_RATE req/s offered for $TIGHT_DURATION s" >&2
for path in direct gateway litellm; do
    case $path in
        direct) url=$tight key=$UPSTREAM_KEY model=gpt-4o-mini ;;
        gateway) url=$gw_tight key=client-key model=gpt-4o-mini ;;
        litellm) url=$litellm key=$MASTER_KEY model=gpt-tight ;;
    esac
    sleep 2 # the tight bucket refills between paths
    "$bin/loadgen" --label "tight-$path" --url "$url/v1/chat/completions" \
        --header "authorization: Bearer $key" --body "${body/MODEL/$model}" \
        --rates "$TIGHT_RATE" --warmup 0 --duration "$TIGHT_DURATION" --timeout 60000 \
        --json "$out/results.jsonl"
done

python3 scripts/gateway_report.py "$out/results.jsonl" | tee "$out/report.md"
