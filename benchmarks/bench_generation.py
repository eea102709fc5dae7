"""Generation throughput: the project's engine (`HFGenerator`) vs lm-eval's HF backend (`HFLM`).

Same in-memory model and tokenizer, same prompts (AlpacaEval instructions or GSM8K 8-shot prompts in the chat
template, rendered to strings so both engines see identical token ids), greedy, same max new tokens,
same stop strings, same batch size; one timed run each (the project engine first, then lm-eval), after a one-batch warm-up of
each (one prompt). Throughput = generated tokens (re-tokenised outputs, so both are counted the same way) / time.
Reported for wall time and for process CPU time: the machine is shared, and CPU time is the fairer
comparison when other jobs compete for the cores.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_generation.py --model smollm2-135m-instruct \
        --prompt-set alpaca --prompts 16 --max-new-tokens 128 --batch-size 16 [--json out.json]

Prints one line per engine and the ratio (project / lm-eval; > 1 means the project's engine is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _prompts(tokenizer, n: int, prompt_set: str) -> tuple[list[str], list[str]]:
    """(rendered prompts, stop strings): GSM8K 8-shot chat prompts (long prefill, stop at "Question:")
    or AlpacaEval instructions (short prompts, long free generation, no stop string)."""
    from harness.generation import render_prompt

    if prompt_set == "gsm8k":
        from harness.evaluation import gsm8k

        rows = gsm8k.load_rows(n)
        return [render_prompt(tokenizer, [{"role": "user", "content": gsm8k.build_user_prompt(r["question"])}],
                              chat=True) + "Answer:" for r in rows], ["Question:"]
    from harness.judge.alpaca import load_reference

    instructions, _ = load_reference(1, n)
    return [render_prompt(tokenizer, [{"role": "user", "content": i}], chat=True) for i in instructions], []


def _count(tokenizer, texts: list[str]) -> int:
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--prompt-set", choices=("alpaca", "gsm8k"), default="alpaca")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from harness.generation import HFGenerator, SamplingParams
    from harness.models import load_causal_lm

    torch.manual_seed(0)
    model, tok = load_causal_lm(args.model)
    prompts, stop = _prompts(tok, args.prompts, args.prompt_set)

    ours = HFGenerator(model, tok, batch_size=args.batch_size)
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.0, stop=tuple(stop))
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=args.batch_size)
    gen_kwargs = {"until": stop, "max_gen_toks": args.max_new_tokens, "do_sample": False}

    def run_ours(ps: list[str]) -> list[str]:
        return [o[0] for o in ours.generate(ps, params, chat=False)]

    def run_lmeval(ps: list[str]) -> list[str]:
        reqs = [Instance(request_type="generate_until", doc={}, arguments=(p, dict(gen_kwargs)), idx=0,
                         metadata=("bench", i, 1)) for i, p in enumerate(ps)]
        return lm.generate_until(reqs, disable_tqdm=True)

    warm = prompts[:1]
    run_ours(warm)
    run_lmeval(warm)
    out_ours, wall_ours, cpu_ours = _timed(lambda: run_ours(prompts))
    out_lm, wall_lm, cpu_lm = _timed(lambda: run_lmeval(prompts))
    tok_ours, tok_lm = _count(tok, out_ours), _count(tok, out_lm)
    same = sum(a.strip() == b.strip() for a, b in zip(out_ours, out_lm))
    result = {
        "model": args.model, "prompt_set": args.prompt_set, "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size, "torch_threads": torch.get_num_threads(),
        "project": {"tokens": tok_ours, "wall_s": wall_ours, "cpu_s": cpu_ours,
                    "tok_per_wall_s": tok_ours / wall_ours, "tok_per_cpu_s": tok_ours / cpu_ours},
        "lm_eval_hf": {"tokens": tok_lm, "wall_s": wall_lm, "cpu_s": cpu_lm,
                       "tok_per_wall_s": tok_lm / wall_lm, "tok_per_cpu_s": tok_lm / cpu_lm},
        "identical_outputs": same,
    }
    result["ratio_wall"] = result["project"]["tok_per_wall_s"] / result["lm_eval_hf"]["tok_per_wall_s"]
    result["ratio_cpu"] = result["project"]["tok_per_cpu_s"] / result["lm_eval_hf"]["tok_per_cpu_s"]
    for name in ("project", "lm_eval_hf"):
        r = result[name]
        print(f"{name:<11} {r['tokens']:6d} tokens  {r['wall_s']:7.1f} s wall  {r['cpu_s']:7.1f} s cpu  "
              f"{r['tok_per_wall_s']:7.2f} tok/s wall  {r['tok_per_cpu_s']:7.2f} tok/s cpu")
    print(f"identical outputs: {same}/{len(prompts)}")
    print(f"throughput ratio (project / lm-eval HF): {result['ratio_wall']:.2f}x wall, {result['ratio_cpu']:.2f}x cpu")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
