#!/usr/bin/env python3
"""KV memory under load, through a server's OpenAI API (the `openai` client).

  kv_bench.py paging URL MODEL METRICS_URL --requests N --concurrency C --max-tokens M
      Chat requests that stop early (EOS; max_tokens far above what they
      use), all sent at once up to C in flight. While they run, the worker's
      /metrics is polled (METRICS_URL, 20 Hz) for llorch_worker_active_jobs.
      Prints one JSON line: peak and mean jobs running at once, aggregate
      generated tokens/s, preemptions, wall time.

  kv_bench.py chat URL MODEL [METRICS_URL] --conversations 8 --turns 6
      Multi-turn chats sharing a long system prompt: each conversation sends
      its turns one after another (the whole history each time, as chat
      clients do), conversations in parallel; --think-s: a pause before each
      turn after the first (a person reading and typing). Prints one JSON line: time to
      first token (streamed) per turn index (mean, seconds), the mean over
      turns 2.., prompt tokens and cached tokens per turn (where reported)
      and in all; with --scheduler-metrics, the llorch scheduler's placement
      figures (jobs placed by prefix, mean MatchPrefix probe time).

Greedy and deterministic: every server answers the same questions the same
way, so the histories (and prompts) match across servers of one model.
"""
import argparse
import json
import statistics
import sys
import threading
import time
import urllib.request

import openai

QUESTIONS = [
    "What is the capital of France?", "Name three primary colours.", "How many legs has a spider?",
    "What is the boiling point of water?", "Who wrote Hamlet?", "What is 12 times 12?",
    "Which planet is the largest?", "What language is spoken in Brazil?",
    "What is the chemical symbol for gold?", "How many days are in a leap year?",
    "What is the tallest mountain on Earth?", "Which ocean is the largest?",
    "What gas do plants absorb?", "Who painted the Mona Lisa?", "What is the square root of 81?",
    "What is the freezing point of water in Fahrenheit?",
]

SYSTEM = ("You are a helpful, concise assistant for a geography and science quiz night. "
          "Answer every question in one or two short sentences, plainly, without lists, "
          "greetings or follow-up questions. If a question is ambiguous, pick the most common "
          "reading and answer it. Use metric units unless asked otherwise, and spell out "
          "numbers below ten. Keep a friendly, neutral tone, and never invent sources.")


def worker_metric(metrics_url, name):
    """An unlabelled sample of `name` (a counter, gauge, or a histogram's _sum)."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{}"):
                    return float(line.split()[-1])
    except OSError:
        return None
    return None


def scheduler_figures(metrics_url):
    """Cumulative placement figures of a llorch scheduler."""
    get = lambda name: worker_metric(metrics_url, name) or 0  # noqa: E731
    return {"prefix_placements": get("llorch_scheduler_prefix_placements_total"),
            "probe_sum": get("llorch_scheduler_prefix_probe_seconds_sum"),
            "probe_count": get("llorch_scheduler_prefix_probe_seconds_count"),
            "probe_failures": get("llorch_scheduler_prefix_probe_failures_total")}


def paging(args):
    client = openai.OpenAI(base_url=args.url, api_key="unused", max_retries=0, timeout=1800)
    lock = threading.Lock()
    completion_tokens = []
    errors = []
    next_index = [0]

    def worker():
        while True:
            with lock:
                i = next_index[0]
                if i >= args.requests:
                    return
                next_index[0] += 1
            question = QUESTIONS[i % len(QUESTIONS)]
            try:
                r = client.chat.completions.create(
                    model=args.model, max_tokens=args.max_tokens, temperature=0,
                    messages=[{"role": "system", "content": f"Request {i}. " + SYSTEM},
                              {"role": "user", "content": question}])
                with lock:
                    completion_tokens.append(r.usage.completion_tokens)
            except openai.OpenAIError as e:  # counted, reported
                with lock:
                    errors.append(str(e))

    preempt_before = worker_metric(args.metrics_url, "llorch_worker_preemptions_total") or 0
    samples = []
    done = threading.Event()

    def poll():
        while not done.is_set():
            v = worker_metric(args.metrics_url, "llorch_worker_active_jobs")
            if v is not None:
                samples.append(v)
            time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    start = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    done.set()
    poller.join()
    preempt_after = worker_metric(args.metrics_url, "llorch_worker_preemptions_total") or 0
    busy = [s for s in samples if s > 0]
    print(json.dumps({
        "requests": args.requests, "errors": len(errors), "first_error": errors[:1],
        "peak_running": max(samples) if samples else 0,
        "mean_running": round(statistics.mean(busy), 2) if busy else 0,
        "completion_tokens": sum(completion_tokens),
        "mean_completion_tokens": round(statistics.mean(completion_tokens), 1)
        if completion_tokens else 0,
        "tokens_per_s": round(sum(completion_tokens) / wall, 2),
        "preemptions": preempt_after - preempt_before, "wall_s": round(wall, 2)}))


def chat(args):
    client = openai.OpenAI(base_url=args.url, api_key="unused", max_retries=0, timeout=1800)
    ttft = [[] for _ in range(args.turns)]
    prompt_tokens = [[] for _ in range(args.turns)]
    cached_tokens = [[] for _ in range(args.turns)]
    errors = []
    lock = threading.Lock()

    def conversation(c):
        messages = [{"role": "system", "content": SYSTEM}]
        for turn in range(args.turns):
            if turn > 0 and args.think_s > 0:
                time.sleep(args.think_s)
            question = QUESTIONS[(c * args.turns + turn) % len(QUESTIONS)]
            messages.append({"role": "user", "content": question})
            sent = time.monotonic()
            first = None
            text = []
            usage = None
            try:
                stream = client.chat.completions.create(
                    model=args.model, messages=messages, max_tokens=args.max_tokens,
                    temperature=0, stream=True, stream_options={"include_usage": True},
                    extra_body={"cache_prompt": True})
                for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        if first is None:
                            first = time.monotonic()
                        text.append(chunk.choices[0].delta.content)
                    if chunk.usage is not None:
                        usage = chunk.usage
            except openai.OpenAIError as e:
                with lock:
                    errors.append(str(e))
                return
            messages.append({"role": "assistant", "content": "".join(text)})
            with lock:
                if first is not None:
                    ttft[turn].append(first - sent)
                if usage is not None:
                    prompt_tokens[turn].append(usage.prompt_tokens)
                    details = getattr(usage, "prompt_tokens_details", None)
                    cached = getattr(details, "cached_tokens", None) if details else None
                    if cached is not None:
                        cached_tokens[turn].append(cached)

    before = scheduler_figures(args.scheduler_metrics) if args.scheduler_metrics else None
    start = time.monotonic()
    threads = [threading.Thread(target=conversation, args=(c,)) for c in range(args.conversations)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    mean = lambda xs: round(statistics.mean(xs), 4) if xs else None  # noqa: E731
    later = [x for turn in ttft[1:] for x in turn]
    placement = {}
    if before is not None:
        after = scheduler_figures(args.scheduler_metrics)
        delta = {k: after[k] - before[k] for k in after}
        placement = {
            "prefix_placements": delta["prefix_placements"],
            "prefix_probe_failures": delta["probe_failures"],
            "prefix_probe_mean_s": round(delta["probe_sum"] / delta["probe_count"], 5)
            if delta["probe_count"] else None}
    print(json.dumps({
        "conversations": args.conversations, "turns": args.turns, "errors": len(errors),
        "first_error": errors[:1],
        "ttft_s_per_turn": [mean(t) for t in ttft], "ttft_s_turns_2_on": mean(later),
        "prompt_tokens_per_turn": [mean(p) for p in prompt_tokens],
        "cached_tokens_per_turn": [mean(c) for c in cached_tokens],
        "prompt_tokens_total": sum(sum(p) for p in prompt_tokens),
        "cached_tokens_total": sum(sum(c) for c in cached_tokens),
        **placement, "wall_s": round(wall, 2)}))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("paging")
    p.add_argument("url")
    p.add_argument("model")
    p.add_argument("metrics_url")
    p.add_argument("--requests", type=int, default=48)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=512)
    c = sub.add_parser("chat")
    c.add_argument("url")
    c.add_argument("model")
    c.add_argument("metrics_url", nargs="?", default="")
    c.add_argument("--scheduler-metrics", default="")
    c.add_argument("--think-s", type=float, default=0.0)
    c.add_argument("--conversations", type=int, default=8)
    c.add_argument("--turns", type=int, default=6)
    c.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    paging(args) if args.mode == "paging" else chat(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
