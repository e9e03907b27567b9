#!/usr/bin/env python3
"""Checks the simulator against the official Anthropic and OpenAI Python SDKs.

Not part of CI. Usage:

    python3 -m venv /tmp/sdkvenv && /tmp/sdkvenv/bin/pip install anthropic openai
    /tmp/sdkvenv/bin/python scripts/sdk_check.py [path/to/sim_server]

Without a path it runs `cargo run --features sim --example sim_server`. It
starts the server with a tiny RPM at time scale 60 (a provider minute = one
second), then: non-streaming and streaming calls with both SDKs; a burst that
hits 429 and must be absorbed by the SDKs' own retries (which honour
`retry-after-ms` / `retry-after`); a 429 with retries disabled, to see the
typed SDK error. Prints the simulator's counters at the end.
"""

import os
import signal
import subprocess
import sys
import time

import anthropic
import openai

ARGS = ["--rpm", "3", "--itpm", "100000", "--otpm", "100000", "--time-scale", "60",
        "--seed", "1", "--output-tokens", "5:12"]


FAULT_ARGS = ["--seed", "7", "--fault-529", "0.3", "--fault-drop", "0.2",
              "--fault-mid-stream", "1.0", "--output-tokens", "20:30"]


def start_server(args=ARGS):
    if len(sys.argv) > 1:
        cmd = [sys.argv[1], *args]
    else:
        cmd = ["cargo", "run", "-q", "--features", "sim", "--example", "sim_server", "--", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line.startswith("listening on http://127.0.0.1:"), line
    return proc, line.split()[-1]


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        check.failed = True


check.failed = False


def main():
    proc, url = start_server()
    print(f"sim at {url}; anthropic {anthropic.__version__}, openai {openai.__version__}")
    try:
        a = anthropic.Anthropic(base_url=url, api_key="sk-ant-test")
        o = openai.OpenAI(base_url=url + "/v1", api_key="sk-test")
        msgs = [{"role": "user", "content": "Hello, simulator"}]

        m = a.messages.create(model="claude-sim", max_tokens=64, messages=msgs)
        check(m.id.startswith("msg_") and m.stop_reason == "end_turn"
              and m.usage.output_tokens == len(m.content[0].text.split()),
              f"anthropic non-stream: {m.usage.input_tokens} in / {m.usage.output_tokens} out")

        with a.messages.stream(model="claude-sim", max_tokens=64, messages=msgs) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        check(final.usage.output_tokens == len(text.split()) and final.stop_reason == "end_turn",
              f"anthropic stream: {len(text.split())} words, final usage {final.usage.output_tokens}")

        raw = a.messages.with_raw_response.create(model="claude-capped", max_tokens=3, messages=msgs)
        m = raw.parse()
        check(m.stop_reason == "max_tokens" and raw.headers.get("request-id", "").startswith("req_"),
              "anthropic max_tokens cap + request-id header")

        c = o.chat.completions.create(model="gpt-sim", max_tokens=64, messages=msgs)
        check(c.id.startswith("chatcmpl-") and c.choices[0].finish_reason == "stop"
              and c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens,
              f"openai non-stream: {c.usage.prompt_tokens} in / {c.usage.completion_tokens} out")

        chunks = list(o.chat.completions.create(
            model="gpt-sim", max_tokens=64, messages=msgs, stream=True,
            stream_options={"include_usage": True}))
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        usage = chunks[-1].usage
        check(usage is not None and usage.completion_tokens == len(text.split()),
              f"openai stream: {len(chunks)} chunks, usage chunk {usage and usage.completion_tokens}")

        # A burst over 3 RPM: the SDKs' default 2 retries must absorb the 429s.
        for name, call in [
            ("anthropic", lambda: a.messages.create(model="claude-burst", max_tokens=8, messages=msgs)),
            ("openai", lambda: o.chat.completions.create(model="gpt-burst", max_tokens=8, messages=msgs)),
        ]:
            t0 = time.monotonic()
            for _ in range(5):
                call()
            dt = time.monotonic() - t0
            # 3 immediately, then two more need ~0.33 s each of refill
            check(0.3 < dt < 3.0, f"{name} burst of 5 at 3 RPM/s succeeded via SDK retries in {dt:.2f}s")

        # With retries off, the 429 surfaces as the SDK's typed error.
        a0 = a.with_options(max_retries=0)
        o0 = o.with_options(max_retries=0)
        for name, call, exc in [
            ("anthropic", lambda: a0.messages.create(model="claude-429", max_tokens=8, messages=msgs),
             anthropic.RateLimitError),
            ("openai", lambda: o0.chat.completions.create(model="gpt-429", max_tokens=8, messages=msgs),
             openai.RateLimitError),
        ]:
            err = None
            for _ in range(4):
                try:
                    call()
                except exc as e:  # noqa: PERF203
                    err = e
                    break
            check(err is not None and err.status_code == 429,
                  f"{name} 429 without retries -> {type(err).__name__}: "
                  f"retry-after={err.response.headers.get('retry-after') if err else None} "
                  f"retry-after-ms={err.response.headers.get('retry-after-ms') if err else None} "
                  f"body={err.body if err else None}")
    finally:
        stop(proc)

    # Faults: 529s and dropped connections are retried by the SDKs; a
    # mid-stream overloaded_error surfaces as an SDK error.
    proc, url = start_server(FAULT_ARGS)
    try:
        a = anthropic.Anthropic(base_url=url, api_key="k", max_retries=6)
        o = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=6)
        msgs = [{"role": "user", "content": "faults"}]
        ok = sum(1 for _ in range(8)
                 if a.messages.create(model="c", max_tokens=64, messages=msgs).id)
        ok += sum(1 for _ in range(8)
                  if o.chat.completions.create(model="g", max_tokens=64, messages=msgs).id)
        check(ok == 16, "16 calls through 30% 529/503 + 20% dropped connections, SDK retries")
        for name, run in [
            ("anthropic", lambda: "".join(a.messages.stream(
                model="c", max_tokens=64, messages=msgs).__enter__().text_stream)),
            ("openai", lambda: [c for c in o.chat.completions.create(
                model="g", max_tokens=64, messages=msgs, stream=True)]),
        ]:
            try:
                run()
                check(False, f"{name} mid-stream error raised")
            except Exception as e:  # noqa: BLE001
                check(isinstance(e, (anthropic.APIError, openai.APIError)),
                      f"{name} mid-stream error raised {type(e).__name__}: {e}")
    finally:
        stop(proc)
    sys.exit(1 if check.failed else 0)


def stop(proc):
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=10)
        print("sim counters:", err.strip())
    except subprocess.TimeoutExpired:
        proc.kill()


if __name__ == "__main__":
    main()
