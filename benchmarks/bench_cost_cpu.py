"""Does the cpu-2core device profile predict this machine? A real DPO step and a real generation, measured
and estimated side by side (harness/cost.py; docs/cost.md "Calibration on this machine").

- DPO: TRL's DPOTrainer with the harness's own DPO config (`make_dpo_config`: fp32 on CPU, reference
  log-probs precomputed), batch `--batch` pairs, every prompt and answer `--tokens` tokens long; the
  median wall time of steps 2.. against `cost.estimate` of one step; the reference precompute (inside the
  trainer's constructor) against the estimate of one reference forward over the pairs.
- Generation: `model.generate` (greedy, KV cache, the harness's engine underneath) of `--batch` prompts
  of `--tokens` tokens, exactly `--new-tokens` new tokens each; median of 3 runs against the estimate.

The profile describes a dedicated 2-core machine; this one is shared, so next to wall time every
measurement records the process's CPU time (all threads) divided by its threads: what the wall time
would be with the cores to itself. That is the number compared (with the wall time and the load printed
beside it). On a loaded machine two OpenMP threads spin while waiting for each other and inflate CPU
time too: `--threads 1` measures one core, against the profile scaled to half the machine. Prints one line per measurement, `measured X s (wall W s), estimated Y s,
estimate/measured Z`; `--json` writes the numbers for harness/device_profiles.yaml's `calibration`.

    OMP_NUM_THREADS=2 PYTHONPATH=. .venv/bin/python benchmarks/bench_cost_cpu.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

CORES = 2  # the cpu-2core profile's
WORDS = " the cat sat on a mat and looked at every bird that flew over the old green house by the river"


def text_of_tokens(tok: Any, n: int, offset: int = 0) -> str:
    """A text that the tokenizer splits into exactly `n` tokens (common words, repeated)."""
    ids: list[int] = []
    words = WORDS.split(" ")[1:]
    i = offset
    while len(ids) < n:
        ids.extend(tok(" " + words[i % len(words)], add_special_tokens=False).input_ids)
        i += 1
    return tok.decode(ids[:n])


def measure_dpo(model_name: str, batch: int, tokens: int, steps: int) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOTrainer

    from harness.algorithms.base import History, TrainContext, history_callback
    from harness.algorithms.dpo import DPOAlgoConfig, make_dpo_config
    from harness.algorithms.trl_common import preference_dataset, quiet_trainer
    from harness.generation import EngineSettings
    from harness.models import resolve_model

    path = resolve_model(model_name)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    pairs = batch * steps
    rows = [{"prompt": text_of_tokens(tok, tokens) + f" {i}", "chosen": text_of_tokens(tok, tokens),
             "rejected": text_of_tokens(tok, tokens, offset=5)} for i in range(pairs)]

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.cpu_seconds: list[float] = []
            self._start = self._cpu = 0.0

        def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self._start, self._cpu = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            self.seconds.append(time.perf_counter() - self._start)
            self.cpu_seconds.append((time.process_time() - self._cpu) / torch.get_num_threads())

    with tempfile.TemporaryDirectory() as tmp:
        cfg = DPOAlgoConfig(learning_rate=5e-7, num_train_epochs=1.0, warmup_ratio=0.0,
                            per_device_train_batch_size=batch, gradient_accumulation_steps=1,
                            max_length=4 * tokens, precompute_ref_log_probs=True)
        history = History(Path(tmp) / "history.jsonl")
        # fp32, the cpu-2core profile's dtype (the engine's default on a CPU with AVX-512 BF16 is bf16 autocast)
        ctx = TrainContext(policy_path=path, train_rows=rows, config=cfg, out_dir=Path(tmp), seed=0, log=history.log,
                           engine=EngineSettings(dtype="float32"))
        model = AutoModelForCausalLM.from_pretrained(path)
        timer = StepTimer()
        start, cpu = time.perf_counter(), time.process_time()
        trainer = DPOTrainer(model=model, args=make_dpo_config(cfg, ctx), train_dataset=preference_dataset(rows),
                             processing_class=tok, callbacks=[history_callback(ctx.log), timer])
        quiet_trainer(trainer)
        construct, construct_cpu = time.perf_counter() - start, (time.process_time() - cpu) / torch.get_num_threads()
        data = trainer.train_dataset
        lengths = {part: statistics.fmean(len(x) for x in data[f"{part}_ids"])
                   for part in ("prompt", "chosen", "rejected")}
        trainer.train()
    timed = slice(1, None) if len(timer.seconds) > 1 else slice(None)  # step 1 warms up
    return {"model": model_name, "pairs_per_step": batch, "threads": torch.get_num_threads(),
            "step_seconds": timer.seconds, "step_cpu_seconds_per_thread": timer.cpu_seconds,
            "median_step_seconds": statistics.median(timer.seconds[timed]),
            "median_step_cpu_seconds_per_thread": statistics.median(timer.cpu_seconds[timed]),
            "construct_seconds": construct, "construct_cpu_seconds_per_thread": construct_cpu,
            "pairs": pairs, "mean_tokens": lengths}


def measure_generation(model_name: str, batch: int, tokens: int, new_tokens: int, repeats: int = 3) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.models import resolve_model

    path = resolve_model(model_name)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    prompts = [text_of_tokens(tok, tokens) for _ in range(batch)]
    enc = tok(prompts, return_tensors="pt", add_special_tokens=False)
    seconds, cpu_seconds = [], []
    with torch.no_grad():
        for _ in range(repeats):
            start, cpu = time.perf_counter(), time.process_time()
            out = model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id or tok.eos_token_id)
            seconds.append(time.perf_counter() - start)
            cpu_seconds.append((time.process_time() - cpu) / torch.get_num_threads())
    assert out.shape[1] - enc.input_ids.shape[1] == new_tokens
    return {"model": model_name, "batch": batch, "prompt_tokens": int(enc.input_ids.shape[1]),
            "new_tokens": new_tokens, "threads": torch.get_num_threads(), "seconds": seconds,
            "cpu_seconds_per_thread": cpu_seconds, "median_seconds": statistics.median(seconds),
            "median_cpu_seconds_per_thread": statistics.median(cpu_seconds)}


def estimates(dpo: dict[str, Any], gen: dict[str, Any], profile_name: str = "cpu-2core") -> dict[str, float]:
    """The estimates of the measured workloads. Measured on fewer threads than the profile's cores, the
    profile is scaled to that share of the machine (peak FLOP/s and memory bandwidth x threads / 2)."""
    from harness import cost, cost_profiles

    profile = cost_profiles.device_profile(profile_name)
    share = min(dpo["threads"], CORES) / CORES
    if share < 1:
        profile = cost_profiles.with_profile_overrides(profile, peak_flops=profile.peak_flops * share,
                                              memory_bandwidth=profile.memory_bandwidth * share)
    shape = cost_profiles.model_shape(dpo["model"])
    lengths = dpo["mean_tokens"]
    one_step = cost.PairwiseTraining(
        "dpo", shape, cost.PreferencePairs(dpo["pairs_per_step"], lengths["prompt"], lengths["chosen"], lengths["rejected"]),
        epochs=1, batch_size=dpo["pairs_per_step"], max_length=10**6, max_steps=1, reference="none")
    # The precompute: one reference forward over every pair (the estimator's "precomputed" reference part).
    with_ref = cost.PairwiseTraining(
        "dpo", shape, cost.PreferencePairs(dpo["pairs"], lengths["prompt"], lengths["chosen"], lengths["rejected"]),
        epochs=1, batch_size=dpo["pairs_per_step"], max_length=10**6, max_steps=1, reference="precomputed")
    ref = cost.estimate(with_ref, profile).seconds_by_part["reference forward (precomputed)"]
    generation = cost.Evaluation(cost_profiles.model_shape(gen["model"]), (cost.EvalTask(
        "generate", examples=gen["batch"], prompt_tokens=gen["prompt_tokens"], max_new_tokens=gen["new_tokens"],
        batch_size=gen["batch"]),))
    return {"dpo_step": cost.estimate(one_step, profile).seconds, "reference_precompute": ref,
            "generation": cost.estimate(generation, profile).seconds}


def measured_seconds(dpo: dict[str, Any], gen: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """(CPU seconds per thread, wall seconds) of the three measurements, keyed like `estimates`."""
    cpu = {"dpo_step": dpo["median_step_cpu_seconds_per_thread"],
           "reference_precompute": dpo["construct_cpu_seconds_per_thread"],
           "generation": gen["median_cpu_seconds_per_thread"]}
    wall = {"dpo_step": dpo["median_step_seconds"], "reference_precompute": dpo["construct_seconds"],
            "generation": gen["median_seconds"]}
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64, help="tokens of each prompt and each answer")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=CORES,
                        help="torch threads; 1 avoids OpenMP spin-waits inflating CPU time on a loaded machine")
    parser.add_argument("--json", type=Path, help="write the measurements and estimates here")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    dpo = measure_dpo(args.model, args.batch, args.tokens, args.steps)
    gen = measure_generation(args.model, args.batch, args.tokens, args.new_tokens)
    load_after = os.getloadavg()
    est = estimates(dpo, gen)
    measured, wall = measured_seconds(dpo, gen)
    print(f"DPO step seconds: wall {[round(s, 2) for s in dpo['step_seconds']]}, CPU per thread "
          f"{[round(s, 2) for s in dpo['step_cpu_seconds_per_thread']]}; mean tokens {dpo['mean_tokens']}")
    print(f"generation seconds: wall {[round(s, 2) for s in gen['seconds']]}, CPU per thread "
          f"{[round(s, 2) for s in gen['cpu_seconds_per_thread']]}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    for key in ("dpo_step", "reference_precompute", "generation"):
        print(f"{key}: measured {measured[key]:.2f} s (wall {wall[key]:.2f} s), estimated {est[key]:.2f} s, "
              f"estimate/measured {est[key] / measured[key]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"dpo": dpo, "generation": gen, "estimates": est, "measured": measured,
                                         "measured_wall": wall, "load_1min": [load_before[0], load_after[0]]},
                                        indent=1))


if __name__ == "__main__":
    main()
