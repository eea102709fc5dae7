"""Best-of-N evaluation of reward models (paper Sec. 4 "Direct evaluation" and App. H): the pick.

N (paper: 16) samples per prompt of the SFT policy at temperature 0.7 are the `sample_candidates` stage
(`harness.sample_candidates`), sampled once and shared by every cell with the same SFT model and settings.
Here a reward model scores them, the top-scoring one is kept, and the generation benchmarks run on the kept
outputs: every reward model picks among the very same candidates, so only the scores differ (App. H: "model
outputs are identical between runs").

`BestOfNGenerator` implements the generation engine interface (`generate(prompts, params, chat)`), so any
registered generation task runs through it unchanged: the task asks for one answer, gets the reward model's
pick. It never generates: a request the candidates stage did not sample is an error naming the prompt
(`sample_candidates.MissingCandidates`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.generation import Messages, SamplingParams
from harness.sample_candidates import Candidates


def _as_messages(prompt: Messages | str) -> Messages:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


class BestOfNGenerator:
    """Generation engine that returns the reward model's top pick among a request's sampled candidates.

    `tokenizer` is the SFT model's (tasks render prompts with it, as they did when the candidates were
    sampled); `tokenized_prompts` is the sampling engine's setting of that name (the paper setting's prompt
    rendering reads it); `resolved` the engine that sampled them, for the record."""

    def __init__(self, candidates: Candidates, scorer: Any, tokenizer: Any, resolved: Any = None,
                 tokenized_prompts: bool = True):
        self.candidates = candidates
        self.scorer = scorer  # RewardScorer-like: score(prompts, responses) -> list[float]
        self.tokenizer = tokenizer
        self.resolved = resolved
        self.tokenized_prompts = tokenized_prompts
        self.records: list[dict[str, Any]] = []

    def generate(self, prompts: Sequence[Messages | str], params: SamplingParams, chat: bool = True) -> list[list[str]]:
        if params.num_return_sequences != 1:
            # App. H: "use the top-scoring response as the final output", one per prompt. Returning the top k
            # of N would make pass@k over (nearly) all candidates, whatever the reward model (TaskSpec's
            # `best_of_n_settings` make the coding tasks ask for one).
            raise ValueError(f"best-of-N returns one pick per prompt; the task asked for "
                             f"{params.num_return_sequences} answers per prompt (set its `best_of_n_settings`)")
        all_candidates = [self.candidates.lookup(p, chat, params) for p in prompts]
        flat_prompts = [_as_messages(p) for p, cands in zip(prompts, all_candidates) for _ in cands]
        flat_cands = [c for cands in all_candidates for c in cands]
        scores = self.scorer.score(flat_prompts, flat_cands) if flat_cands else []
        out, pos = [], 0
        for prompt, cands in zip(prompts, all_candidates):
            cand_scores = scores[pos : pos + len(cands)]
            pos += len(cands)
            ranked = sorted(range(len(cands)), key=lambda j: -cand_scores[j])
            best = ranked[0]
            out.append([cands[best]])
            self.records.append({"prompt": _as_messages(prompt)[-1]["content"], "scores": cand_scores,
                                 "chosen_index": best, "chosen": cands[best]})
        return out


def best_of_n_tasks(
    candidates: Candidates,
    sft_path: str,
    reward: str | Any,
    tasks: list[str],
    out_dir: Path,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    engine: Any = None,
    task_settings: dict[str, Any] | None = None,
    judge: dict[str, Any] | None = None,
    planned: dict[str, dict[str, Any]] | None = None,
) -> dict[str, float]:
    """Run `tasks` on one reward's best-of-N picks among `candidates`; the tasks' own metric names (no
    prefix). `reward` is a reward-model folder or a `harness.reward_source.RewardSource` (an RM, an ensemble
    or a verifier).

    `limit`, `seed`, `batch_size`, `task_settings` ({group: TaskSettings}) and `judge` must be those the
    candidates were sampled with (the stage's config), so that the tasks ask for the same prompts; `engine`
    (`EngineSettings`, the stage's) says what sampled them. `planned` (the plan's task fingerprints) is passed
    to `run_tasks`. Writes the task samples, `results.json` and `bon_selections.jsonl` (candidate scores
    and the pick) under out_dir. Loads the SFT model's tokenizer only: nothing is generated.
    """
    from harness.evaluation import EvalContext, run_tasks
    from harness.models import load_tokenizer
    from harness.reward_source import RewardSource

    source = RewardSource(model_path=reward) if isinstance(reward, str) else reward
    resolved = engine.resolved() if engine is not None else None
    tokenized_prompts = engine.tokenized_prompts if engine is not None and engine.kind != "hf" else True
    generator = BestOfNGenerator(candidates, source.scorer(batch_size=batch_size), load_tokenizer(sft_path),
                                 resolved=resolved, tokenized_prompts=tokenized_prompts)
    ctx = EvalContext(model_path=sft_path, out_dir=out_dir, limit=limit, seed=seed, batch_size=batch_size,
                      reward_model_path=source.model_path, judge=judge, settings=dict(task_settings or {}),
                      engine=engine, _generator=generator)
    metrics = run_tasks(ctx, tasks, planned=planned)
    with (out_dir / "bon_selections.jsonl").open("w") as fh:
        for record in generator.records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return metrics
