"""Judge throughput: sequential vs N-way concurrent requests against the local judge server.

    python benchmarks/bench_judge.py                       # SmolLM2-135M served locally, 16 judge prompts
    python benchmarks/bench_judge.py --model tiny-random-llama --requests 32
    python benchmarks/bench_judge.py --scripted-delay 0.2  # scripted judge with fixed latency (client-side
                                                           # concurrency only, like a remote API)

Each phase uses a fresh cache, so every request reaches the server; the prompts are real pairwise judge
prompts built from AlpacaEval instructions and outputs. With a local model the gain comes from the
server generating concurrent requests in one batch; with a fixed-latency endpoint (a remote API) it
comes from overlapping waits. Prints requests/s of both phases and their ratio (and --json writes it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def judge_prompts(n: int) -> list[list[dict[str, str]]]:
    from harness.judge.alpaca import load_reference
    from harness.judge.client import JudgeClient

    instructions, davinci = load_reference(1, limit=n)
    _, gpt4 = load_reference(2, limit=n)
    # Shortened answers keep one request in the range a small CPU model answers in seconds.
    return [JudgeClient.pair_messages(i, a[:400], b[:400])[0] for i, a, b in zip(instructions, davinci, gpt4)]


def run_phase(base_url: str, model: str, prompts: list, workers: int, max_tokens: int) -> float:
    from harness.judge.client import JudgeClient, JudgeError

    with tempfile.TemporaryDirectory() as tmp:
        client = JudgeClient(model, base_url=base_url, api_key_env="", cache_path=Path(tmp) / "cache.sqlite",
                             max_workers=workers)
        start = time.perf_counter()
        results = client.complete_many(prompts, template="bench", temperature=0.0, max_tokens=max_tokens)
        elapsed = time.perf_counter() - start
        client.close()
    failed = [r for r in results if isinstance(r, JudgeError)]
    if failed:
        raise SystemExit(f"{len(failed)} requests failed: {failed[0]}")
    return len(prompts) / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="zoo name or folder to serve")
    parser.add_argument("--scripted-delay", type=float, default=None,
                        help="serve the scripted judge with this latency per request instead of a model")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1, help="alternating sequential/concurrent rounds")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for the server")
    parser.add_argument("--json", default=None, help="write the numbers here")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from harness.judge.server import make_server

    if args.scripted_delay is not None:
        server = make_server(scripted="longer", delay_s=args.scripted_delay, faults=[])
        label = f"scripted judge, {args.scripted_delay}s latency"
    else:
        server = make_server(model=args.model, max_batch=args.workers, faults=[])
        label = f"{args.model} (HF engine, micro-batching up to {args.workers})"
    server.start()
    try:
        prompts = judge_prompts(args.requests)
        model = server.state.served_model
        run_phase(server.base_url, model, prompts[:1], 1, args.max_tokens)  # warm-up
        sequential, concurrent = [], []
        for _ in range(args.repeats):
            sequential.append(run_phase(server.base_url, model, prompts, 1, args.max_tokens))
            concurrent.append(run_phase(server.base_url, model, prompts, args.workers, args.max_tokens))
        stats = server.stats()
    finally:
        server.stop()
    seq, conc = statistics.median(sequential), statistics.median(concurrent)
    result = {
        "server": label, "requests": args.requests, "workers": args.workers, "max_tokens": args.max_tokens,
        "repeats": args.repeats, "sequential_req_per_s": seq, "concurrent_req_per_s": conc,
        "ratio": conc / seq, "batch_sizes": stats.get("batch_sizes"), "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg()[0],
    }
    print(f"judge throughput against {label}, {args.requests} requests, max_tokens={args.max_tokens}:")
    print(f"  sequential (1 worker):   {seq:8.2f} req/s")
    print(f"  concurrent ({args.workers} workers):  {conc:8.2f} req/s")
    print(f"  ratio concurrent/sequential: {conc / seq:.2f}x")
    if stats.get("batch_sizes"):
        print(f"  server generate() calls by batch size: {stats['batch_sizes']}")
    print(f"  (load average at the end: {result['load_average']:.1f} on {os.cpu_count()} CPUs)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
