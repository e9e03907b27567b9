//! Runs the simulated Anthropic + OpenAI provider as a standalone server.
//!
//! ```text
//! cargo run --features sim --example sim_server -- --port 0 --rpm 50 --itpm 20000 \
//!     --otpm 8000 --time-scale 1 --seed 1 --fault-529 0.05
//! ```
//!
//! The first line on stdout is `listening on http://127.0.0.1:PORT`. Point an
//! SDK's base URL at it (Anthropic: the URL; OpenAI: the URL + `/v1`).

use std::io::Write;
use std::time::Duration;

use tower_llm_resilience::sim::{Faults, Limits, SimConfig, Simulator};

const HELP: &str = "\
sim_server: a simulated Anthropic Messages + OpenAI Chat Completions API

USAGE: sim_server [OPTIONS]

OPTIONS:
  --port N                 port on 127.0.0.1 (default 0 = ephemeral)
  --rpm N                  requests per minute (default 50)
  --itpm N                 input tokens per minute (default 20000)
  --otpm N                 output tokens per minute (default 8000)
  --model-limits M=R,I,O   per-model limits (repeatable)
  --time-scale F           60 = a provider minute lasts one real second (default 1)
  --seed N                 PRNG seed (default 0)
  --fault-429 P            injected 429 rate (retry-after one provider second)
  --fault-529 P            overloaded rate (Anthropic 529, OpenAI 503)
  --fault-500 P            500 rate
  --fault-503 P            503 rate
  --fault-drop P           dropped-connection rate
  --fault-mid-stream P     mid-stream error rate (streams)
  --fault-truncate P       truncated-stream rate (streams)
  --latency-ms N           latency before response headers
  --token-latency-ms N     latency per output token
  --output-tokens MIN:MAX  output length range (default 20:200)
  --no-round               do not round Anthropic token `remaining` to thousands
  --api-key KEY            accept only these keys (repeatable; default any)
  -h, --help               this help
";

fn parse<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<T, String> {
    let v = value.ok_or_else(|| format!("{flag} needs a value"))?;
    v.parse().map_err(|_| format!("{flag}: cannot parse {v:?}"))
}

fn config_from_args() -> Result<Option<SimConfig>, String> {
    let mut args = std::env::args().skip(1);
    let mut config = SimConfig::new();
    let mut limits = Limits::TIER_1;
    let mut faults = Faults::none();
    let mut keys = Vec::new();
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--port" => config = config.with_port(parse(&flag, args.next())?),
            "--rpm" => limits.requests_per_minute = parse(&flag, args.next())?,
            "--itpm" => limits.input_tokens_per_minute = parse(&flag, args.next())?,
            "--otpm" => limits.output_tokens_per_minute = parse(&flag, args.next())?,
            "--model-limits" => {
                let v: String = parse(&flag, args.next())?;
                let (model, nums) = v.split_once('=').ok_or_else(|| {
                    format!("--model-limits: expected MODEL=RPM,ITPM,OTPM, got {v:?}")
                })?;
                let n = nums
                    .split(',')
                    .map(|x| x.trim().parse::<u64>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| format!("--model-limits: bad numbers in {v:?}"))?;
                let [r, i, o] = n[..] else {
                    return Err(format!("--model-limits: expected three numbers in {v:?}"));
                };
                config = config.with_model_limits(model, Limits::new(r, i, o));
            }
            "--time-scale" => config = config.with_time_scale(parse(&flag, args.next())?),
            "--seed" => config = config.with_seed(parse(&flag, args.next())?),
            "--fault-429" => faults.rate_limited = parse(&flag, args.next())?,
            "--fault-529" => faults.overloaded = parse(&flag, args.next())?,
            "--fault-500" => faults.server_error = parse(&flag, args.next())?,
            "--fault-503" => faults.service_unavailable = parse(&flag, args.next())?,
            "--fault-drop" => faults.drop_connection = parse(&flag, args.next())?,
            "--fault-mid-stream" => faults.mid_stream_error = parse(&flag, args.next())?,
            "--fault-truncate" => faults.truncate_stream = parse(&flag, args.next())?,
            "--latency-ms" => {
                config =
                    config.with_request_latency(Duration::from_millis(parse(&flag, args.next())?));
            }
            "--token-latency-ms" => {
                config =
                    config.with_token_latency(Duration::from_millis(parse(&flag, args.next())?));
            }
            "--output-tokens" => {
                let v: String = parse(&flag, args.next())?;
                let (lo, hi) = v
                    .split_once(':')
                    .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                    .ok_or_else(|| format!("--output-tokens: expected MIN:MAX, got {v:?}"))?;
                config = config.with_output_tokens(lo, hi);
            }
            "--no-round" => config = config.with_round_remaining_tokens(false),
            "--api-key" => keys.push(parse::<String>(&flag, args.next())?),
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    config = config.with_limits(limits).with_faults(faults);
    if !keys.is_empty() {
        config = config.with_api_keys(keys);
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(Some(config))
}

#[tokio::main]
async fn main() {
    let config = match config_from_args() {
        Ok(Some(c)) => c,
        Ok(None) => {
            print!("{HELP}");
            return;
        }
        Err(e) => {
            eprintln!("sim_server: {e}");
            std::process::exit(2);
        }
    };
    let handle = match Simulator::start(config).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("sim_server: {e}");
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on {}", handle.url());
    let _ = out.flush();
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("sim_server: {:?}", handle.counters());
    handle.shutdown().await;
}
