"""Shared fixtures. Every test gets its own results dir (MLflow store, stage cache); built zoo models
are shared across tests and runs through `HARNESS_MODEL_DIR` (building them is the slow part)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HARNESS_MODEL_DIR", str(REPO / "results" / "models"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated_results(tmp_path, monkeypatch):
    """A fresh results dir per test; MLFLOW_TRACKING_URI unset so the default local store is used."""
    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setenv("HARNESS_RESULTS_DIR", str(results))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return results


@pytest.fixture(scope="session")
def tiny_model() -> str:
    from harness.models import resolve_model

    return resolve_model("tiny-random-llama")


@pytest.fixture(scope="session")
def smollm2() -> str:
    from harness.models import resolve_model

    return resolve_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present on this machine")
    return SHARED_DATA


# Prompts on which the varied model's greedy answers differ (the `varied_prompts` fixture).
VARIED_PROMPTS = ["hello there", "The quick brown fox jumps over the lazy dog and then", "Question: what is 12 plus 7?",
                  "def add(a, b):", "Paris is", "I cannot help", "Natalia sold clips"]


@pytest.fixture(scope="session")
def varied_prompts() -> list[str]:
    return list(VARIED_PROMPTS)


@pytest.fixture(scope="session")
def varied_model(tmp_path_factory, tiny_model: str) -> str:
    """The tiny random Llama with seeded noise on every weight (its greedy answers then vary with the
    prompt), saved with an EOS that some answers reach at different steps and others never do."""
    import torch

    from harness.generation import HFGenerator, SamplingParams
    from harness.models import load_causal_lm

    model, tok = load_causal_lm(tiny_model, dtype="float32")
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=noise) * 0.2)
    answers = [row[0].completion_ids for row in HFGenerator(model, tok, batching="static").generate_samples(
        VARIED_PROMPTS, SamplingParams(max_new_tokens=24), chat=False)]

    def spread(token: int) -> tuple[int, int]:  # (distinct first positions, answers without it)
        firsts = {a.index(token) for a in answers if token in a}
        return len(firsts), sum(token not in a for a in answers)

    eos = max(sorted({t for a in answers for t in a}), key=lambda t: min(spread(t)))
    assert min(spread(eos)) >= 2, "no token splits the answers; change the noise seed"
    tok.eos_token = tok.convert_ids_to_tokens(eos)
    model.config.eos_token_id = model.generation_config.eos_token_id = eos
    model.config.max_position_embeddings = 4096  # GSM8K's 8-shot prompts fit (RoPE has no fixed length)
    out = tmp_path_factory.mktemp("varied") / "model"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)
