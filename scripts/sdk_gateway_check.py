#!/usr/bin/env python3
"""Checks examples/axum_gateway against the official Anthropic and OpenAI Python SDKs.

Not part of CI (it needs PyPI). `scripts/bench.sh sdk` makes the venv and runs it;
by hand:

    python3 -m venv /tmp/sdkvenv && /tmp/sdkvenv/bin/pip install anthropic openai
    /tmp/sdkvenv/bin/python scripts/sdk_gateway_check.py path/to/axum_gateway

It starts the gateway in front of its embedded simulator with a tight quota
(6 requests per provider minute, a provider minute per second), points each
SDK at it by base URL with a made-up key (the gateway holds the upstream key),
then: creates and streams a message with each SDK, and sends a burst of 12
calls per SDK with the SDKs' own retries switched off, which must all succeed
because the gateway queues them instead of passing the simulator's 429s on.
"""

import concurrent.futures
import signal
import subprocess
import sys
import time

import anthropic
import openai

ARGS = ["--port", "0", "--rpm", "6", "--itpm", "100000", "--otpm", "100000",
        "--time-scale", "60", "--seed", "1", "--output-tokens", "5:12"]


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        check.failed = True


check.failed = False


def main():
    cmd = [sys.argv[1] if len(sys.argv) > 1 else "target/debug/examples/axum_gateway", *ARGS]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line.startswith("listening on http://127.0.0.1:"), line
    url = line.split()[-1]
    print(f"gateway at {url}; anthropic {anthropic.__version__}, openai {openai.__version__}")
    try:
        a = anthropic.Anthropic(base_url=url, api_key="not-the-upstream-key")
        o = openai.OpenAI(base_url=url + "/v1", api_key="not-the-upstream-key")
        msgs = [{"role": "user", "content": "Hello, gateway"}]

        raw = a.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=64,
                                                  messages=msgs)
        m = raw.parse()
        check(m.id.startswith("msg_") and m.content[0].text
              and raw.headers.get("x-gateway-request-id"),
              f"anthropic create: {m.usage.output_tokens} tokens, stop {m.stop_reason}, "
              f"request id {raw.headers.get('x-gateway-request-id')}")

        with a.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=msgs) as s:
            parts = list(s.text_stream)
            final = s.get_final_message()
        text = "".join(parts)
        check(len(parts) > 1 and final.usage.output_tokens == len(text.split()),
              f"anthropic stream: {len(parts)} text deltas, final usage {final.usage.output_tokens}")

        c = o.chat.completions.create(model="gpt-4o-mini", max_tokens=64, messages=msgs)
        check(c.id.startswith("chatcmpl-") and c.choices[0].message.content,
              f"openai create: {c.usage.completion_tokens} tokens, finish {c.choices[0].finish_reason}")

        chunks = list(o.chat.completions.create(
            model="gpt-4o-mini", max_tokens=64, messages=msgs, stream=True,
            stream_options={"include_usage": True}))
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        usage = chunks[-1].usage
        check(usage is not None and usage.completion_tokens == len(text.split()),
              f"openai stream: {len(chunks)} chunks, usage chunk {usage and usage.completion_tokens}")

        # A burst over the quota with the SDKs' retries off: the gateway queues.
        a0 = a.with_options(max_retries=0, timeout=60)
        o0 = o.with_options(max_retries=0, timeout=60)
        for name, call in [
            ("anthropic", lambda _: a0.messages.create(model="claude-burst", max_tokens=8,
                                                       messages=msgs).id),
            ("openai", lambda _: o0.chat.completions.create(model="gpt-burst", max_tokens=8,
                                                            messages=msgs).id),
        ]:
            t0 = time.monotonic()
            errors = []
            with concurrent.futures.ThreadPoolExecutor(12) as pool:
                futs = [pool.submit(call, i) for i in range(12)]
                ids = []
                for f in futs:
                    try:
                        ids.append(f.result())
                    except Exception as e:  # noqa: BLE001
                        errors.append(f"{type(e).__name__}: {e}")
            dt = time.monotonic() - t0
            check(len(ids) == 12 and not errors,
                  f"{name}: burst of 12 at 6 per second, SDK retries off: {len(ids)} answered, "
                  f"{len(errors)} errors {errors[:2]} in {dt:.2f}s")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=10)
            print("gateway:", err.strip())
        except subprocess.TimeoutExpired:
            proc.kill()
    sys.exit(1 if check.failed else 0)


if __name__ == "__main__":
    main()
