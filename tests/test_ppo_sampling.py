"""Rollouts are drawn from exactly logits / tau (issue #20, PPO): the sampling settings a checkpoint ships
in `generation_config.json` must not reach any generation path that trains on its samples or measures
the policy with them: PPO's rollouts (`HFGenerator`, also best-of-N's and every eval's engine), the TRL
online trainers (GRPO, RLOO, online DPO) and `policy_kl`'s sampler.

Each test runs on a tiny Llama whose generation config sets repetition_penalty, min_p,
no_repeat_ngram_size, top_k, top_p, .... Where `generate` samples (TRL, policy_kl), it is only
instrumented to also return its processed scores (what it sampled from) and raw logits, which must
satisfy scores == logits / tau. `HFGenerator` samples each row with its own seeded generator through
`harness.hf_engine.sample_rows` (every batching: inside `generate` for `static`, in its own decode loop
for `compact`); that function is instrumented to record what each row was sampled from, which must be
the policy's teacher-forced logits (PPO's `response_logits`) at temperature tau, nothing else applied."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from harness.algorithms import ALGORITHMS, TrainContext
from harness.algorithms.ppo import PPOConfig, pack_rollouts, response_logits
from harness.generation import SamplingParams
from harness.hf_engine import HFGenerator
from harness.rewards import REWARD_FUNCTIONS

# Sampling settings a checkpoint may ship; each one alone changes the distribution `generate` samples from.
CHECKPOINT_SAMPLING_SETTINGS = {
    "do_sample": True, "temperature": 1.3, "repetition_penalty": 1.5, "min_p": 0.2, "no_repeat_ngram_size": 2,
    "top_k": 5, "top_p": 0.5, "typical_p": 0.5, "epsilon_cutoff": 0.01, "min_new_tokens": 4,
    "suppress_tokens": [5, 6, 7],
}
TAU = 0.7


@pytest.fixture(scope="module")
def opinionated_model(tiny_model: str, tmp_path_factory) -> str:
    """The tiny random Llama with CHECKPOINT_SAMPLING_SETTINGS in its generation_config.json."""
    folder = tmp_path_factory.mktemp("opinionated") / "model"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**config, **CHECKPOINT_SAMPLING_SETTINGS}))
    return str(folder)


@pytest.fixture
def recorded_generate(monkeypatch) -> list:
    """Every `generate` call's output with its processed scores and raw logits (the call itself is real)."""
    from transformers import GenerationMixin

    calls: list = []
    real_generate = GenerationMixin.generate

    def generate(self, *args, **kwargs):
        out = real_generate(self, *args, **kwargs, output_scores=True, output_logits=True, return_dict_in_generate=True)
        calls.append(out)
        return out.sequences

    monkeypatch.setattr(GenerationMixin, "generate", generate)
    return calls


def assert_sampled_from_logits_over(tau: float, calls: list) -> None:
    assert calls, "generate was never called"
    for out in calls:
        for step, (scores, logits) in enumerate(zip(out.scores, out.logits)):
            assert torch.isfinite(scores).all(), f"step {step}: tokens masked out (top-k/top-p/min-p/n-gram/...)"
            assert torch.allclose(scores, logits.float() / tau, rtol=0, atol=1e-5), f"step {step}: scores != logits/tau"


def _prompts() -> list[list[dict[str, str]]]:
    # ascending rendered length: HFGenerator's batch order is the input order
    return [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "The quick brown fox jumps over"}]]


def test_the_fixture_checkpoint_changes_plain_generate(opinionated_model: str, recorded_generate: list):
    """Without the fix (a plain `generate` with PPO's explicit arguments) these settings do leak: the
    fixture is able to catch a regression."""
    from transformers import AutoModelForCausalLM

    from harness.models import load_tokenizer

    tok = load_tokenizer(opinionated_model)
    model = AutoModelForCausalLM.from_pretrained(opinionated_model).eval()
    batch = tok(["hello there"], return_tensors="pt", add_special_tokens=False)
    torch.manual_seed(0)
    model.generate(**batch, do_sample=True, temperature=TAU, top_p=1.0, top_k=0, max_new_tokens=6,
                   pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    with pytest.raises(AssertionError):
        assert_sampled_from_logits_over(TAU, recorded_generate)


@pytest.fixture
def recorded_row_sampling(monkeypatch) -> dict:
    """{row seed: [(logits the row was sampled from, temperature, top_p), ...]}: every call of
    `harness.hf_engine.sample_rows` (the call itself is real); a row is named by its generator's seed."""
    import harness.hf_engine as hf_engine

    rows: dict[int, list] = {}
    real = hf_engine.sample_rows

    def sample_rows(logits, generators, temperature, top_p):
        for row_logits, generator in zip(logits, generators):
            rows.setdefault(generator.initial_seed(), []).append((row_logits.float().clone(), temperature, top_p))
        return real(logits, generators, temperature, top_p)

    monkeypatch.setattr(hf_engine, "sample_rows", sample_rows)
    return rows


def assert_rows_sampled_from_ppo_logits(policy, tok, prompts: list, samples: list, params: SamplingParams,
                                        recorded: dict) -> None:
    """Every completion token was drawn from softmax of exactly PPO's own teacher-forced logits / tau (what
    Eq. 4's KL and Eq. 5's ratio score): no top-k/top-p, penalty or suppression of the checkpoint's."""
    from harness.generation import derive_seed, prompt_seeds_for

    n = params.num_return_sequences
    flat = [s for row in samples for s in row]
    rollouts = pack_rollouts(flat, [p for p in prompts for _ in range(n)], tok.pad_token_id)
    with torch.no_grad():
        ppo_logits = response_logits(policy, rollouts, params.temperature)  # already divided by tau
    seeds = prompt_seeds_for(params.seed, len(prompts))
    for r, sample in enumerate(flat):
        steps = recorded[derive_seed(seeds[r // n], r % n)][: len(sample.completion_ids)]
        assert len(steps) == len(sample.completion_ids), f"row {r}: not every token went through the sampler"
        assert {(t, p) for _, t, p in steps} == {(params.temperature, 1.0)}
        sampled_from = torch.stack([logits for logits, _, _ in steps]) / params.temperature
        assert torch.allclose(sampled_from, ppo_logits[r, : len(steps)], rtol=0, atol=1e-4), f"row {r}: logits altered"


@pytest.mark.parametrize("batching", ["static", "compact"])
def test_rollouts_are_sampled_from_the_logits_ppo_scores(opinionated_model: str, batching: str,
                                                         recorded_row_sampling: dict):
    """HFGenerator (PPO's rollout engine), each batching: every sampled token replays from the logits PPO
    scores at tau. The checkpoint's own generation config is left as it was."""
    from transformers import AutoModelForCausalLM

    from harness.models import load_tokenizer

    tok = load_tokenizer(opinionated_model)
    policy = AutoModelForCausalLM.from_pretrained(opinionated_model).eval()
    params = SamplingParams(max_new_tokens=8, temperature=TAU, num_return_sequences=2, seed=5)
    samples = HFGenerator(policy, tok, batch_size=2, batching=batching).generate_samples(_prompts(), params)
    assert_rows_sampled_from_ppo_logits(policy, tok, _prompts(), samples, params, recorded_row_sampling)
    assert policy.generation_config.repetition_penalty == 1.5 and policy.generation_config.min_p == 0.2


@pytest.mark.parametrize("batching", ["static", "compact"])
def test_ppo_training_rollouts_ignore_the_checkpoint_sampling_settings(
    opinionated_model: str, tmp_path: Path, monkeypatch, batching: str, recorded_row_sampling: dict
):
    """PPO's first rollout batch (drawn before any update, so from the checkpoint's weights) was sampled
    from the checkpoint's logits at tau; fp32, so teacher-forced logits match the sampler's to 1e-4."""
    from transformers import AutoModelForCausalLM

    from datasets_registry import prepare
    from harness.generation import EngineSettings
    from harness.models import load_tokenizer

    calls: list = []
    real = HFGenerator.generate_samples

    def recorded(self, prompts, params, chat=True):
        samples = real(self, prompts, params, chat)
        calls.append((list(prompts), params, samples))
        return samples

    monkeypatch.setattr(HFGenerator, "generate_samples", recorded)
    cfg = PPOConfig(prompt_batch_size=2, minibatch_size=2, max_new_tokens=6, max_steps=2, value_init="policy",
                    generation_batch_size=2, temperature=TAU)
    ctx = TrainContext(policy_path=opinionated_model, train_rows=prepare("smoke-lowercase-eval", seed=0).rows[:4],
                       config=cfg, out_dir=tmp_path, seed=1, reward_function=REWARD_FUNCTIONS.get("lowercase"),
                       engine=EngineSettings(dtype="float32", batching=batching))
    ALGORITHMS.get("ppo").train(ctx)
    assert len(calls) == 2  # one rollout batch per update
    prompts, params, samples = calls[0]
    assert (params.temperature, params.top_p) == (TAU, 1.0)
    policy = AutoModelForCausalLM.from_pretrained(opinionated_model).eval()
    assert_rows_sampled_from_ppo_logits(policy, load_tokenizer(opinionated_model), prompts, samples, params,
                                        recorded_row_sampling)
    saved = json.loads((tmp_path / "model" / "generation_config.json").read_text())
    assert saved["repetition_penalty"] == 1.5 and saved["min_p"] == 0.2  # the checkpoint keeps its own


ONLINE = dict(max_steps=1, learning_rate=1e-3, per_device_train_batch_size=4, gradient_accumulation_steps=1,
              warmup_ratio=0.0, temperature=TAU)


@pytest.mark.parametrize("name,fields", [
    ("grpo", {**ONLINE, "num_generations": 2, "max_completion_length": 6}),
    ("rloo", {**ONLINE, "max_completion_length": 6}),
    ("online-dpo", {**ONLINE, "max_new_tokens": 6, "max_length": 128}),
])
def test_trl_online_rollouts_ignore_the_checkpoint_sampling_settings(
    name: str, fields: dict, opinionated_model: str, recorded_generate: list, tmp_path: Path
):
    """TRL passes its own GenerationConfig, but transformers fills its unset fields (min_p,
    no_repeat_ngram_size, ...) from the checkpoint's: `trl_common.train_and_save` must neutralise them."""
    from datasets_registry import prepare

    spec = ALGORITHMS.get(name)
    ctx = TrainContext(policy_path=opinionated_model, train_rows=prepare("smoke-lowercase", max_rows=4).rows,
                       config=spec.make_config(fields), out_dir=tmp_path, seed=0,
                       reward_function=REWARD_FUNCTIONS.get("lowercase_fraction"))
    spec.train(ctx)
    assert_sampled_from_logits_over(TAU, recorded_generate)
    saved = json.loads((tmp_path / "model" / "generation_config.json").read_text())
    assert saved["repetition_penalty"] == 1.5 and saved["no_repeat_ngram_size"] == 2


def test_policy_kl_samples_from_the_untruncated_policy(opinionated_model: str, recorded_generate: list):
    """policy_kl's Monte Carlo KL is unbiased only for y ~ pi: temperature 1, nothing else applied."""
    from transformers import AutoModelForCausalLM

    from harness.evaluation.policy_metrics import sample_completions
    from harness.models import load_tokenizer

    tok = load_tokenizer(opinionated_model)
    model = AutoModelForCausalLM.from_pretrained(opinionated_model).eval()
    sample_completions(model, tok, _prompts(), n=2, max_new_tokens=6, seed=0, batch_size=2,
                       eos_ids={tok.eos_token_id})
    assert_sampled_from_logits_over(1.0, recorded_generate)
