"""Shared fixtures. Every test gets its own results dir (MLflow store, stage cache); built zoo models
are shared across tests and runs through `HARNESS_MODEL_DIR` (building them is the slow part)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HARNESS_MODEL_DIR", str(REPO / "results" / "models"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

SHARED_DATA = REPO.parent / "shared" / "data"
# Every test skipped for want of the real data says so with this in its reason; the summary counts them.
SHARED_DATA_REASON = "../shared/data"


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    return str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """How many tests did not run because this machine lacks ../shared/data (a suite that passes with
    most of them skipped has not tested the benchmarks)."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if SHARED_DATA_REASON in _skip_reason(r)]
    terminalreporter.write_line(f"{len(skipped)} test(s) skipped because they need the real data in "
                                f"{SHARED_DATA_REASON} (absent on this machine)" if skipped else
                                f"no test skipped for want of {SHARED_DATA_REASON}")


@pytest.fixture(autouse=True)
def isolated_results(tmp_path, monkeypatch):
    """A fresh results dir per test; MLFLOW_TRACKING_URI unset so the default local store is used."""
    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setenv("HARNESS_RESULTS_DIR", str(results))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return results


def use_results(monkeypatch: pytest.MonkeyPatch, results: Path) -> Path:
    """Point the harness (stage store, MLflow) at `results`. MLFLOW_TRACKING_URI is unset because
    `mlflow.set_tracking_uri` (called by tracking.client) exports it: it would keep naming the store of
    whichever test ran before."""
    monkeypatch.setenv("HARNESS_RESULTS_DIR", str(results))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return results


def run_grids_in(results: Path, *specs: dict) -> list:
    """Run grid specs into the stores under `results` (one thread for torch), returning their summaries:
    a module-wide runner-made store that a module's tests then read."""
    from harness.grid import build_grid
    from harness.runner import run_grid

    with pytest.MonkeyPatch.context() as mp:
        use_results(mp, results)
        mp.setenv("OMP_NUM_THREADS", "1")
        return [run_grid(build_grid(spec), echo=lambda _: None) for spec in specs]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one thread for the test: with the 2-layer tiny model more threads only contend (measured: a
    tiny GRPO grid ran 5x slower with the default threads on a busy 2-core machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
        pytest.skip(f"needs the real data in {SHARED_DATA_REASON}, not present on this machine")
    return SHARED_DATA


@pytest.fixture
def data_dir_without_shared(tmp_path, monkeypatch) -> Path:
    """A machine without the real data: HARNESS_DATA_DIR is an empty folder (the test puts in it what it
    needs) and the sibling ../shared/data is out of reach. Returns the folder."""
    import harness.paths

    monkeypatch.setattr(harness.paths, "PROJECT_ROOT", tmp_path / "elsewhere" / "repo")
    data = tmp_path / "data-dir"
    data.mkdir()
    monkeypatch.setenv("HARNESS_DATA_DIR", str(data))
    return data


@pytest.fixture
def broken_helpsteer(tmp_path, monkeypatch) -> Path:
    """HelpSteer in its hub layout under HARNESS_DATA_DIR, line 3 holding a cp1252 byte (a re-saved export)."""
    import gzip

    fixture = Path(__file__).parent / "fixtures" / "datasets" / "helpsteer_train.jsonl"
    lines = fixture.read_text(encoding="utf-8").splitlines()[:2]
    lines.append('{"prompt": "Caf\xe9?", "response": "r", "helpfulness": 1, "correctness": 1, "coherence": 1, '
                 '"complexity": 1, "verbosity": 1}')
    path = tmp_path / "data" / "nvidia" / "HelpSteer" / "train.jsonl.gz"  # the first of its local layouts
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wb") as fh:
        fh.write(("\n".join(lines) + "\n").encode("cp1252"))
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    return path


@pytest.fixture
def hub_off(tmp_path, monkeypatch) -> Path:
    """The Hugging Face hub unreachable (offline mode) with an empty hub cache, whatever this machine's
    settings; returns the cache folder."""
    import huggingface_hub.constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@dataclass
class ScriptedJudge:
    """The project's scripted judge server (harness.judge.server), serving over real HTTP on loopback."""

    server: Any  # harness.judge.server.JudgeServer

    @property
    def settings(self) -> dict[str, Any]:
        """Judge settings as a task reads them (EvalContext.judge): the real client, the real server."""
        return {"model": self.server.state.served_model, "base_url": self.server.base_url}

    def stats(self) -> dict[str, Any]:
        return self.server.stats()


@pytest.fixture
def scripted_judge() -> Iterator[Callable[..., ScriptedJudge]]:
    """Starts scripted judge servers: `scripted_judge(rules, default=...)` with rules [{"pattern": regex,
    "reply": text}] matched against each request's "role: content" lines (first match wins). Stopped
    after the test."""
    from harness.judge.server import JudgeServer
    from harness.judge.server_backends import ScriptedBackend

    servers: list[Any] = []

    def start(rules: list[dict[str, str]], default: str = "A") -> ScriptedJudge:
        server = JudgeServer(ScriptedBackend(rules, default), "scripted-judge", faults=[]).start()
        servers.append(server)
        return ScriptedJudge(server)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def truthful_uninformative_judge(scripted_judge, shared_data) -> ScriptedJudge:
    """TruthfulQA's endpoint judge, scripted over HTTP: the answers to the first 2 generation questions
    (a task run with limit=2) are true and not informative; a request about any other question gets no
    label (an unparsed verdict)."""
    import re

    from harness.evaluation.truthfulqa import load_gen_rows

    rules = []
    for row in load_gen_rows(2):
        question = re.escape(row["question"])
        rules.append({"pattern": rf"Question: {question}\nAnswer: .*Is the answer true\?", "reply": "yes"})
        rules.append({"pattern": rf"Question: {question}\nAnswer: .*Is the answer informative\?", "reply": "no"})
    return scripted_judge(rules, default="unsure")


@pytest.fixture
def root_only_canary():
    """A root-only file (0600) in /tmp holding a fresh secret, and the strings sandboxed code must never
    leak: that secret and the lines of /etc/shadow (when this process can read it)."""
    import secrets

    secret = secrets.token_hex(16)
    path = Path(f"/tmp/prefharness-canary-{secrets.token_hex(4)}")
    path.write_text(secret)
    path.chmod(0o600)
    try:
        shadow = [line for line in Path("/etc/shadow").read_text().splitlines() if ":" in line]
    except OSError:
        shadow = []
    yield path, [secret, *shadow]
    path.unlink()


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
