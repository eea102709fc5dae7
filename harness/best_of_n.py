"""Best-of-N evaluation of reward models (paper Sec. 4 "Direct evaluation" and App. H).

Sample N (paper: 16) completions per prompt from the SFT policy at temperature 0.7 once, cache them,
score them with each reward model, keep the top-scoring one, and run the generation benchmarks on
the kept outputs. The cache guarantees the paper's condition "model outputs are identical between
runs": every reward model picks from the very same candidates, so only the scores differ.

`BestOfNGenerator` implements the generation engine interface (`generate(prompts, params, chat)`), so
any registered generation task runs through it unchanged: the task asks for one answer, gets the
reward model's pick. The task's `max_new_tokens` and stop sequences are honoured; its temperature is
replaced by the best-of-N sampling temperature (the point is to choose among samples).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.cache import model_fingerprint
from harness.generation import Generator, Messages, SamplingParams, render_prompt


@dataclass
class BestOfNConfig:
    n: int = 16  # App. H: 16 samples per prompt
    temperature: float = 0.7  # App. H
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"best-of-N needs n >= 1, got {self.n}")
        if self.temperature <= 0:
            raise ValueError(f"best-of-N samples: temperature must be > 0, got {self.temperature}")


class SampleCache:
    """Append-only JSONL of {key, candidates}: candidates are generated once and shared by every RM."""

    def __init__(self, path: Path):
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._entries: dict[str, list[str]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self._entries[entry["key"]] = entry["candidates"]
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> list[str] | None:
        found = self._entries.get(key)
        if found is not None:
            self.hits += 1
        return found

    def put(self, key: str, candidates: list[str]) -> None:
        self.misses += 1
        self._entries[key] = candidates
        line = json.dumps({"key": key, "candidates": candidates}, ensure_ascii=False) + "\n"
        with self.path.open("a") as fh:
            # Grid stages of several cells may append at once (pool / Ray workers on one disk); a long line
            # is written in several syscalls, so lock to keep lines whole.
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                fh.write(line)
                fh.flush()
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def default_cache(sft_path: str) -> tuple[SampleCache, str]:
    """(cache, model key) for an SFT model folder: results/bon_cache/<fingerprint>/samples.jsonl.

    One place for the location, so `run_best_of_n` and the grid's evaluate stage share candidates.
    """
    from harness.paths import results_dir

    model_key = model_fingerprint(sft_path)
    return SampleCache(results_dir() / "bon_cache" / model_key / "samples.jsonl"), model_key


def _as_messages(prompt: Messages | str) -> Messages:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


class BestOfNGenerator:
    """Generation engine that returns the reward model's top pick among N cached SFT samples."""

    def __init__(self, base: Generator, scorer: Any, cache: SampleCache, config: BestOfNConfig, model_key: str):
        self.base = base
        self.scorer = scorer  # RewardScorer-like: score(prompts, responses) -> list[float]
        self.cache = cache
        self.config = config
        self.model_key = model_key
        self.tokenizer = getattr(base, "tokenizer", None)  # tasks count tokens with it
        self.resolved = getattr(base, "resolved", None)  # the engine that generates the candidates
        self.records: list[dict[str, Any]] = []

    def _key(self, rendered: str, params: SamplingParams) -> str:
        resolved = self.resolved  # the engine's precision changes the samples
        blob = json.dumps([self.model_key, rendered, params.max_new_tokens, list(params.stop), self.config.n,
                           self.config.temperature, self.config.top_p, self.config.seed,
                           resolved.key() if resolved is not None else None])
        return hashlib.sha256(blob.encode()).hexdigest()

    def candidates(self, prompts: Sequence[Messages | str], params: SamplingParams, chat: bool) -> list[list[str]]:
        """The N samples per prompt, generated only for prompts not in the cache."""
        tok = self.tokenizer
        keys = [self._key(render_prompt(tok, p, chat) if tok is not None else json.dumps(p), params) for p in prompts]
        found = [self.cache.get(k) for k in keys]
        todo = [i for i, c in enumerate(found) if c is None]
        if todo:
            sampling = SamplingParams(max_new_tokens=params.max_new_tokens, temperature=self.config.temperature,
                                      top_p=self.config.top_p, num_return_sequences=self.config.n,
                                      stop=params.stop, seed=self.config.seed)
            generated = self.base.generate([prompts[i] for i in todo], sampling, chat=chat)
            for i, cands in zip(todo, generated):
                self.cache.put(keys[i], cands)
                found[i] = cands
        return [c if c is not None else [] for c in found]

    def generate(self, prompts: Sequence[Messages | str], params: SamplingParams, chat: bool = True) -> list[list[str]]:
        all_candidates = self.candidates(prompts, params, chat)
        flat_prompts = [_as_messages(p) for p, cands in zip(prompts, all_candidates) for _ in cands]
        flat_cands = [c for cands in all_candidates for c in cands]
        scores = self.scorer.score(flat_prompts, flat_cands) if flat_cands else []
        out, pos = [], 0
        for prompt, cands in zip(prompts, all_candidates):
            cand_scores = scores[pos : pos + len(cands)]
            pos += len(cands)
            ranked = sorted(range(len(cands)), key=lambda j: -cand_scores[j])
            picks = ranked[: max(1, params.num_return_sequences)]
            out.append([cands[j] for j in picks])
            self.records.append({"prompt": _as_messages(prompt)[-1]["content"], "scores": cand_scores,
                                 "chosen_index": picks[0], "chosen": cands[picks[0]]})
        return out


def best_of_n_tasks(
    base: Generator,
    sft_path: str,
    reward: str | Any,
    tasks: list[str],
    out_dir: Path,
    cache: SampleCache,
    model_key: str,
    config: BestOfNConfig,
    limit: int | None = None,
    batch_size: int = 16,
    task_settings: dict[str, Any] | None = None,
    judge: dict[str, Any] | None = None,
    planned: dict[str, dict[str, Any]] | None = None,
) -> dict[str, float]:
    """Run `tasks` on one reward's best-of-N picks; the tasks' own metric names (no prefix). `reward` is a
    reward-model folder or a `harness.reward_source.RewardSource` (an RM, an ensemble or a verifier).

    `task_settings` ({group: TaskSettings}, as planned; default: resolved now), `judge` (the endpoint
    for judged tasks) and `planned` (the plan's task fingerprints) are passed to `run_tasks`.
    Writes the task samples, `results.json` and `bon_selections.jsonl` (candidate scores and the pick)
    under out_dir.
    """
    from harness.evaluation import EvalContext, run_tasks
    from harness.reward_source import RewardSource

    source = RewardSource(model_path=reward) if isinstance(reward, str) else reward
    generator = BestOfNGenerator(base, source.scorer(batch_size=batch_size), cache, config, model_key)
    ctx = EvalContext(model_path=sft_path, out_dir=out_dir, limit=limit, seed=config.seed,
                      batch_size=batch_size, reward_model_path=source.model_path, judge=judge,
                      settings=dict(task_settings or {}), _generator=generator)
    metrics = run_tasks(ctx, tasks, planned=planned)
    with (out_dir / "bon_selections.jsonl").open("w") as fh:
        for record in generator.records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return metrics


def run_best_of_n(
    sft_model: str,
    reward_models: dict[str, str],
    tasks: list[str],
    out_dir: Path,
    config: BestOfNConfig | None = None,
    limit: int | None = None,
    cache_dir: Path | None = None,
    batch_size: int = 16,
) -> dict[str, float]:
    """Best-of-N over `tasks` for each reward model ({label: RM folder}); metrics `bon/<label>/<metric>`.

    Per RM, writes the task samples and `bon_selections.jsonl` (candidate scores and the pick) under
    out_dir/<label>/. Candidates are cached under `cache_dir` (default results/bon_cache/<sft>, the
    grid's evaluate stage uses the same), so a second call, or another reward model, reuses them.
    """
    from harness.engines import make_generator
    from harness.evaluation import TASKS
    from harness.models import resolve_model

    config = config or BestOfNConfig()
    if not reward_models:
        raise ValueError("run_best_of_n needs at least one reward model")
    for name in tasks:
        TASKS.get(name)  # unknown task: fails here, listing the valid ones, before any generation
    sft_path = resolve_model(sft_model)
    if cache_dir is not None:
        model_key = model_fingerprint(sft_path)
        cache = SampleCache(cache_dir / "samples.jsonl")
    else:
        cache, model_key = default_cache(sft_path)
    base = make_generator(sft_path, batch_size=batch_size)
    metrics: dict[str, float] = {}
    for label, rm_path in reward_models.items():
        found = best_of_n_tasks(base, sft_path, rm_path, tasks, out_dir / label, cache, model_key, config,
                                limit=limit, batch_size=batch_size)
        metrics.update({f"bon/{label}/{key}": value for key, value in found.items()})
    metrics["bon/cache_hits"] = float(cache.hits)
    metrics["bon/cache_misses"] = float(cache.misses)
    return metrics
