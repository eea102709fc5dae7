"""Generation speed: every in-process engine option of `harness.hf_engine` against lm-eval's HF backend.

Engines (same model weights, same prompts, greedy, same max new tokens and stop strings):
- the project's `HFGenerator` with `static` and `compact` batching (finished-row compaction), each in
  float32 and bfloat16, and `continuous` (transformers' `generate_batch`) at the default dtype;
  `default` marks the one `EngineSettings()` resolves to on this machine;
- lm-eval's `HFLM` at its defaults (batch size 1, dtype "auto" = the checkpoint's float32), and at the
  default engine's dtype when that differs ("equal dtype").

Prompt sets (the chat template applied, rendered to strings so every engine sees identical token ids):
(a) AlpacaEval instructions: short prompts, long uneven free answers, no stop string (AlpacaEval's
budget of 512 new tokens); (b) GSM8K 8-shot chain-of-thought prompts: long prefill, stop at
"Question:" (the task's budget of 512). GSM8K runs first, AlpacaEval last.

Each repeat runs every engine once; the order is reversed on every other repeat, so load on the
machine hits both sides. Throughput = generated tokens (outputs re-tokenised, so every engine is
counted the same way) / seconds, summed over repeats, in wall time and in process CPU time (the fairer
comparison on a shared machine). A ratio > 1 means the project's engine is faster. The last line per
prompt set (AlpacaEval last) reads

    ratio default/lm-eval: wall X.XX cpu Y.YY; equal-dtype wall Z.ZZ; differing outputs N

with N the prompts whose greedy output differs between the default engine and lm-eval at equal dtype.

Also printed: how many default-engine outputs differ from `static` at the same dtype, from lm-eval at
equal dtype and after how many characters they part, and static float32 vs lm-eval float32 (where
batching alone, without bf16 rounding, would show).

Full size (an idle machine; two to three hours on 2 cores, most of it lm-eval's batch-of-1 runs):

    nice .venv/bin/python benchmarks/bench_generation.py --model smollm2-135m-instruct --prompts 32 \\
        --repeats 2 --json results/bench_generation.json

Development size (minutes): `--prompts 4 --max-new-tokens 32 --repeats 1`. `--engines` narrows the
project's options (the default engine, `static` at its dtype and both lm-eval runs always run), e.g.
`--engines "static float32"` for the floor's comparison alone in about half the time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LMEVAL = "lm-eval HFLM"
ENGINE_OPTIONS = ("static float32", "static bfloat16", "compact float32", "compact bfloat16", "continuous")


def _prompts(tokenizer, n: int, prompt_set: str) -> tuple[list[str], list[str]]:
    """(rendered prompts, stop strings) for a prompt set, as the harness's tasks build them."""
    from harness.generation import render_prompt

    if prompt_set == "gsm8k":
        from harness.evaluation import gsm8k

        rows = gsm8k.load_rows(n)
        return [render_prompt(tokenizer, [{"role": "user", "content": gsm8k.build_user_prompt(r["question"])}],
                              chat=True) + "Answer:" for r in rows], list(gsm8k.STOP)
    from harness.judge.alpaca import load_reference

    instructions, _ = load_reference(1, n)
    return [render_prompt(tokenizer, [{"role": "user", "content": i}], chat=True) for i in instructions], []


def _count(tokenizer, texts: list[str]) -> int:
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


def _engines(args: argparse.Namespace, stop: list[str], max_new_tokens: int
             ) -> tuple[dict[str, Callable[[list[str]], list[str]]], str, str, str]:
    """({label: run(prompts) -> outputs}, the default engine's label, the equal-dtype lm-eval label,
    lm-eval's default dtype)."""
    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from harness.generation import EngineSettings, SamplingParams
    from harness.hf_engine import HFGenerator
    from harness.models import load_causal_lm, resolve_model

    path = resolve_model(args.model)
    default = EngineSettings().resolved("cpu")
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=tuple(stop))
    models = {dtype: load_causal_lm(path, device="cpu", dtype=dtype) for dtype in ("float32", "bfloat16")}
    engines: dict[str, Callable[[list[str]], list[str]]] = {}

    def ours(dtype: str, batching: str) -> Callable[[list[str]], list[str]]:
        model, tok = models[dtype]
        generator = HFGenerator(model, tok, batch_size=args.batch_size, batching=batching)
        return lambda ps: [row[0] for row in generator.generate(ps, params, chat=False)]

    default_label = f"{default.batching} {default.dtype}"
    # The default engine and `static` at its dtype always run (the report compares their outputs); the
    # others are the ones --engines names (all by default).
    wanted = set(args.engines) | {default_label, f"static {default.dtype}"}
    for batching in ("static", "compact"):
        for dtype in ("float32", "bfloat16"):
            if f"{batching} {dtype}" in wanted:
                engines[f"{batching} {dtype}"] = ours(dtype, batching)
    if f"continuous {default.dtype}" in wanted or "continuous" in wanted:
        engines[f"continuous {default.dtype}"] = ours(default.dtype, "continuous")

    def lmeval(dtype: str | None) -> tuple[Callable[[list[str]], list[str]], str]:
        lm = HFLM(pretrained=path, device="cpu", **({"dtype": dtype} if dtype else {}))  # else lm-eval's defaults
        kwargs = {"until": stop, "max_gen_toks": max_new_tokens, "do_sample": False}

        def run(ps: list[str]) -> list[str]:
            reqs = [Instance(request_type="generate_until", doc={}, arguments=(p, dict(kwargs)), idx=0,
                             metadata=("bench", i, 1)) for i, p in enumerate(ps)]
            return lm.generate_until(reqs, disable_tqdm=True)

        return run, str(next(lm.model.parameters()).dtype).removeprefix("torch.")

    equal_label = f"{LMEVAL} defaults"
    engines[equal_label], lm_default_dtype = lmeval(None)
    if lm_default_dtype != default.dtype:
        equal_label = f"{LMEVAL} {default.dtype}"
        engines[equal_label], _ = lmeval(default.dtype)
    torch.manual_seed(0)
    return engines, default_label, equal_label, lm_default_dtype


def _differing(a: list[str], b: list[str]) -> list[int]:
    return [i for i, (x, y) in enumerate(zip(a, b)) if x.strip() != y.strip()]


def _common_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def run_prompt_set(args: argparse.Namespace, prompt_set: str) -> dict:
    from harness.models import load_tokenizer

    tok = load_tokenizer(args.model)
    prompts, stop = _prompts(tok, args.prompts, prompt_set)
    engines, default_label, equal_label, lm_dtype = _engines(args, stop, args.max_new_tokens)
    for run in engines.values():  # warm-up: one short prompt each, untimed
        run(prompts[:1])
    totals = {label: {"wall_s": 0.0, "cpu_s": 0.0, "tokens": 0} for label in engines}
    outputs: dict[str, list[str]] = {}
    for repeat in range(args.repeats):
        order = list(engines) if repeat % 2 == 0 else list(reversed(engines))
        for label in order:
            wall, cpu = time.perf_counter(), time.process_time()
            out = engines[label](prompts)
            totals[label]["wall_s"] += time.perf_counter() - wall
            totals[label]["cpu_s"] += time.process_time() - cpu
            totals[label]["tokens"] += _count(tok, out)
            outputs[label] = out
            print(f"  [{prompt_set} repeat {repeat + 1}] {label}: {time.perf_counter() - wall:.1f} s", flush=True)
    for t in totals.values():
        t["tok_per_wall_s"] = t["tokens"] / t["wall_s"]
        t["tok_per_cpu_s"] = t["tokens"] / t["cpu_s"]
    reference = totals[f"{LMEVAL} defaults"]
    print(f"\n{prompt_set}: {len(prompts)} prompts, max {args.max_new_tokens} new tokens, batch size "
          f"{args.batch_size}, stop {stop}, {args.repeats} repeat(s), load {os.getloadavg()[0]:.1f}")
    for label, t in totals.items():
        mark = " (default)" if label == default_label else ""
        print(f"{label + mark:<34} {t['tokens']:7d} tok {t['wall_s']:8.1f} s wall {t['cpu_s']:8.1f} s cpu  "
              f"{t['tok_per_wall_s'] / reference['tok_per_wall_s']:5.2f}x wall "
              f"{t['tok_per_cpu_s'] / reference['tok_per_cpu_s']:5.2f}x cpu vs lm-eval defaults")
    ours, equal = outputs[default_label], outputs[equal_label]
    differing = _differing(ours, equal)
    static_same = outputs[f"static {default_label.split()[1]}"]
    # Why outputs differ at equal dtype: the same comparison in float32 (batched vs lm-eval's batch of 1),
    # and how far into the answer they first part.
    fp32_differing = _differing(outputs["static float32"], outputs[f"{LMEVAL} defaults"]) \
        if lm_dtype == "float32" and "static float32" in outputs else None
    parted_at = sorted(_common_prefix(ours[i].strip(), equal[i].strip()) for i in differing)
    print(f"differing at equal dtype: {len(differing)}; they part after a median of "
          f"{parted_at[len(parted_at) // 2] if parted_at else 0} characters (of {sum(len(o) for o in ours) // len(ours)} "
          f"on average); static float32 vs lm-eval float32: "
          f"{'n/a' if fp32_differing is None else len(fp32_differing)} differing")
    result = {
        "prompt_set": prompt_set, "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size, "repeats": args.repeats, "default": default_label,
        "equal_dtype_reference": equal_label, "totals": totals, "differing_prompts": differing,
        "differing_vs_static_same_dtype": _differing(ours, static_same),
        "differing_fp32_static_vs_lmeval_fp32": fp32_differing, "parted_after_chars": parted_at,
        "outputs": outputs,
        "ratio_wall": totals[default_label]["tok_per_wall_s"] / reference["tok_per_wall_s"],
        "ratio_cpu": totals[default_label]["tok_per_cpu_s"] / reference["tok_per_cpu_s"],
        "ratio_equal_dtype_wall": totals[default_label]["tok_per_wall_s"] / totals[equal_label]["tok_per_wall_s"],
    }
    print(f"default engine vs static at its dtype: {len(result['differing_vs_static_same_dtype'])} differing outputs")
    print(f"ratio default/lm-eval: wall {result['ratio_wall']:.2f} cpu {result['ratio_cpu']:.2f}; "
          f"equal-dtype wall {result['ratio_equal_dtype_wall']:.2f}; differing outputs {len(differing)}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=512, help="both prompt sets' budget (their tasks': 512)")
    parser.add_argument("--batch-size", type=int, default=16, help="the harness's engines (lm-eval keeps its 1)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--prompt-sets", nargs="+", choices=("gsm8k", "alpaca"), default=["gsm8k", "alpaca"])
    parser.add_argument("--engines", nargs="+", default=list(ENGINE_OPTIONS), choices=ENGINE_OPTIONS,
                        help="the project's engine options to run beside lm-eval (default: all); the default "
                             "engine and `static` at its dtype always run, lm-eval at its defaults and at "
                             "equal dtype too")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    for key in ("TOKENIZERS_PARALLELISM",):
        os.environ.setdefault(key, "false")
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(key, "1")
    order = [s for s in ("gsm8k", "alpaca") if s in args.prompt_sets]  # AlpacaEval last
    print(f"model {args.model}; torch threads {__import__('torch').get_num_threads()}; load {os.getloadavg()}")
    results = [run_prompt_set(args, s) for s in order]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
