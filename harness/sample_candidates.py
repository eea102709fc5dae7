"""Best-of-N candidates sampled once: the `sample_candidates` stage and what reads it (paper App. H).

Best-of-N (`eval.best_of_n`, `harness.best_of_n`) scores N samples of the SFT model per prompt with a reward
model and runs the benchmarks on the top pick. The paper's condition is that "model outputs are identical
between runs": every reward model picks among the very same candidates. So the candidates are one
content-addressed stage, planned once per distinct

    SFT model (its name, which the stage loads, and the sha256 of its folder's files: other weights under the
    same name are another stage; a hub id, whose files are not here, by its name alone),
    n, temperature, top_p, seed, the engine (`ResolvedEngine.key()`), the batch size it samples in,
    the best-of-N tasks' fingerprints (version, code, settings, data: as the evaluate stage plans them),
    their limit, the judge endpoint of judged tasks, and this module's code,

and every cell that shares them (cells of every reward model, every seed, every policy) takes the one stage
as its evaluate stage's input `candidates`; the evaluate stage only picks (`harness.best_of_n`).

How the prompts are known: the stage runs each task as the evaluate stage will run it (same model, limit,
seed, settings), through `RecordingGenerator`, an engine that samples N candidates for every request and
answers the task with the first one(s). So no task needs a second way to list its prompts (a task stays
one module and one register line), and what is sampled is exactly what the task asks for. The tasks then
score those first candidates as they always do; that scoring is a by-product, kept only as the stage's
artifacts/first_sample/<task>/ (a pick with no reward model) and not logged as metrics (the reports read
`<task>/score` of cells); for a judged task it costs one judge pass per stage. A request is identified
by what the task passed (`request_key`: the prompt as given, chat or not, max_new_tokens, stop sequences),
so a task whose prompts differ at pick time finds none and fails, naming the prompt, instead of sampling.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.generation import Messages, SamplingParams

if TYPE_CHECKING:
    from harness.generation import EngineSettings

KIND = "sample_candidates"  # the stage kind
FILE = "candidates.jsonl"  # in the stage folder: one request per line


@dataclass
class BestOfNConfig:
    """How the candidates are sampled (`eval.best_of_n`'s n, temperature, top_p, seed)."""

    n: int = 16  # App. H: 16 samples per prompt
    temperature: float = 0.7  # App. H
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"best-of-N needs n >= 1, got {self.n}")
        if self.temperature <= 0:
            raise ValueError(f"best-of-N samples: temperature must be > 0, got {self.temperature}")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BestOfNConfig:
        return cls(n=config["n"], temperature=config["temperature"], top_p=config["top_p"], seed=config["seed"])


# ---------------------------------------------------------------------------------------------
# Plan time: the stage's config
# ---------------------------------------------------------------------------------------------

def local_model_folder(model: str) -> Path | None:
    """The folder of a model given as a path; None for a zoo name or a hub id.

    A zoo name (tiny-random-llama, smollm2-135m-instruct) stands for its content, as in every other stage key:
    hashing its folder would key a plan made before the harness built the model (no folder yet) differently
    from every later plan, so a re-run, `harness status` or `--dry-run` would not find the published stage."""
    from harness.models import MODEL_BUILDERS

    if model in MODEL_BUILDERS:
        return None
    folder = Path(model).expanduser()
    return folder if (folder / "config.json").is_file() else None


def model_sha256(folder: Path) -> str:
    """sha256 over every file of a model folder (relative name and content: config, weights, tokenizer,
    chat template); each file's hash is remembered per (path, size, mtime) by `cache.file_sha256`."""
    from harness.cache import file_sha256

    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if not any(part.startswith(".") for part in Path(relative).parts):  # .cache/ lock files and the like
            digest.update(f"{relative}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def model_identity(model: str) -> str | None:
    """The SFT model folder's content hash, or None for a zoo name or a hub id (the name stands for it)."""
    folder = local_model_folder(model)
    return model_sha256(folder) if folder is not None else None


def stage_config(model: str, sampling: dict[str, Any], tasks: dict[str, dict[str, Any]], limit: int | None,
                 batch_size: int, judge: dict[str, Any] | None, engine_key: dict[str, Any]) -> dict[str, Any]:
    """The `sample_candidates` config for the SFT `model`, `sampling` ({n, temperature, top_p, seed}), the
    best-of-N `tasks` ({task: `resolve_task` fingerprint}, as planned for the evaluate stage) on `limit`
    prompts each, sampled in batches of `batch_size` by the engine `engine_key` (`ResolvedEngine.key()`)."""
    from harness.cache import code_fingerprint

    return {"model": model, "model_sha256": model_identity(model),
            **{name: sampling[name] for name in ("n", "temperature", "top_p", "seed")},
            "tasks": tasks, "limit": limit, "batch_size": batch_size, "judge": judge,
            "code": code_fingerprint(__name__, (__name__,)), "engine": engine_key}


# ---------------------------------------------------------------------------------------------
# The stored candidates
# ---------------------------------------------------------------------------------------------

def request_key(prompt: Messages | str, chat: bool, params: SamplingParams) -> str:
    """A generation request's identity: what the task passed that decides the candidates (the sampling
    settings themselves are the stage's)."""
    blob = json.dumps([prompt, chat, params.max_new_tokens, list(params.stop)], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class MissingCandidates(RuntimeError):
    """A best-of-N pick was asked for a request the candidates stage did not sample."""


@dataclass
class Candidates:
    """The N candidates of every request the best-of-N tasks made, by `request_key`; each entry also says
    which tasks asked for it (AlpacaEval 1 and 2 ask for the same instructions) and the request itself
    (prompt, chat, max_new_tokens, stop)."""

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = ""  # where they were read from, for messages

    def save(self, folder: Path) -> None:
        with (folder / FILE).open("w", encoding="utf-8") as fh:
            for key, entry in self.entries.items():
                fh.write(json.dumps({"key": key, **entry}, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Candidates:
        entries: dict[str, dict[str, Any]] = {}
        with (folder / FILE).open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    entry = json.loads(line)
                    entries[entry.pop("key")] = entry
        return cls(entries, source=f"{KIND} stage {folder}")

    def per_task(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self.entries.values():
            for task in entry["tasks"]:
                counts[task] = counts.get(task, 0) + 1
        return counts

    def lookup(self, prompt: Messages | str, chat: bool, params: SamplingParams) -> list[str]:
        entry = self.entries.get(request_key(prompt, chat, params))
        if entry is None:
            shown = json.dumps(prompt, ensure_ascii=False)
            held = ", ".join(f"{task} ({n} prompts)" for task, n in sorted(self.per_task().items())) or "nothing"
            raise MissingCandidates(
                f"best-of-N: no candidates for the prompt {shown[:300]}{'...' if len(shown) > 300 else ''} "
                f"(chat={chat}, max_new_tokens={params.max_new_tokens}, stop={list(params.stop)}) in "
                f"{self.source or 'the candidates'}, which holds {held}: the task asked for other prompts than it "
                "did when they were sampled (its data, settings or limit differ); nothing is generated here: "
                "re-run the grid so the stage is re-planned")
        return list(entry["candidates"])


# ---------------------------------------------------------------------------------------------
# Execution: the tasks' requests, sampled N times each
# ---------------------------------------------------------------------------------------------

class RecordingGenerator:
    """The stage's generation engine: N candidates per request from `base` at the best-of-N sampling
    settings (the request's max_new_tokens and stop sequences kept), recorded under the current `task`; the
    task gets the first candidate(s), so it runs to its end as it will at pick time."""

    def __init__(self, base: Any, config: BestOfNConfig):
        self.base = base
        self.config = config
        self.tokenizer = getattr(base, "tokenizer", None)  # tasks render and count tokens with it
        self.resolved = getattr(base, "resolved", None)
        self.task = ""
        self.candidates = Candidates()
        self.requested: dict[str, set[str]] = {}  # task -> the keys of its requests

    def generate(self, prompts: Sequence[Messages | str], params: SamplingParams, chat: bool = True) -> list[list[str]]:
        keys = [request_key(p, chat, params) for p in prompts]
        self.requested.setdefault(self.task, set()).update(keys)
        todo: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in self.candidates.entries:
                todo.setdefault(key, i)  # a prompt asked twice is sampled once
        if todo:
            sampling = SamplingParams(max_new_tokens=params.max_new_tokens, temperature=self.config.temperature,
                                      top_p=self.config.top_p, num_return_sequences=self.config.n,
                                      stop=params.stop, seed=self.config.seed)
            generated = self.base.generate([prompts[i] for i in todo.values()], sampling, chat=chat)
            for (key, i), candidates in zip(todo.items(), generated, strict=True):
                self.candidates.entries[key] = {"tasks": [], "prompt": prompts[i], "chat": chat,
                                                "max_new_tokens": params.max_new_tokens, "stop": list(params.stop),
                                                "candidates": list(candidates)}
        for key in keys:
            tasks = self.candidates.entries[key]["tasks"]
            if self.task not in tasks:
                tasks.append(self.task)
        keep = max(1, params.num_return_sequences)
        return [self.candidates.entries[key]["candidates"][:keep] for key in keys]


def check_model(config: dict[str, Any], model_path: str) -> None:
    """The SFT model here must be the one the stage key was computed from."""
    planned = config["model_sha256"]
    if planned is None:
        return  # a zoo name or a hub id: its name is its identity
    found = model_sha256(Path(model_path))
    if found != planned:
        raise RuntimeError(f"{KIND}: model {config['model']!r} ({model_path}) has other content than the plan saw "
                           f"(planned sha256 {planned[:16]}..., found {found[:16]}...); re-run the grid so the stage "
                           "is re-planned")


def sample(config: dict[str, Any], task_settings: dict[str, Any], engine: EngineSettings,
           out: Path) -> tuple[dict[str, float], Any]:
    """Run the stage: every planned task through a `RecordingGenerator` over the SFT model; writes FILE and
    each task's first-candidate results under artifacts/first_sample/<task>/. Returns (metrics, the engine's
    resolved settings)."""
    from harness.engines import make_generator
    from harness.evaluation import EvalContext, run_tasks
    from harness.models import resolve_model

    sft_path = resolve_model(config["model"])
    check_model(config, sft_path)
    base = make_generator(sft_path, batch_size=config["batch_size"], engine=engine)
    recorder = RecordingGenerator(base, BestOfNConfig.from_config(config))
    metrics: dict[str, float] = {}
    try:
        for name, fingerprint in config["tasks"].items():
            recorder.task = name
            ctx = EvalContext(model_path=sft_path, out_dir=out / "artifacts" / "first_sample" / name,
                              limit=config["limit"], seed=config["seed"], batch_size=config["batch_size"],
                              judge=config.get("judge"), settings=dict(task_settings), _generator=recorder)
            run_tasks(ctx, [name], planned={name: fingerprint})
            requests = len(recorder.requested.get(name, ()))
            if requests == 0:
                results = json.loads((ctx.out_dir / "results.json").read_text())
                why = results["skipped"].get(name) or "it generated nothing"
                raise RuntimeError(f"{KIND}: task {name!r} made no generation request ({why}): there is nothing "
                                   "for a reward model to pick among")
            metrics[f"candidates/{name}/prompts"] = float(requests)
    finally:
        close = getattr(base, "close", None)
        if close is not None:
            close()
    recorder.candidates.save(out)
    metrics["candidates/prompts"] = float(len(recorder.candidates.entries))
    metrics["candidates/per_prompt"] = float(config["n"])
    return metrics, recorder.resolved


def sample_tasks(model: str, tasks: list[str], config: BestOfNConfig, out: Path, limit: int | None = None,
                 batch_size: int = 16, judge: dict[str, Any] | None = None,
                 engine: EngineSettings | None = None) -> tuple[Candidates, dict[str, float]]:
    """The stage's work outside a grid (tests, notebooks): `tasks` planned now with their default settings,
    then `sample`d into `out`. Pick with `harness.best_of_n.best_of_n_tasks` and the same limit, seed
    (`config.seed`), batch size and judge."""
    from dataclasses import asdict

    from harness.evaluation.base import plan_tasks, resolve_eval_settings, settings_from_config
    from harness.generation import EngineSettings

    engine = engine or EngineSettings()
    settings = resolve_eval_settings(tasks, {})
    ready, missing = plan_tasks(tasks, settings, judge=judge, has_reference=True, has_reward_model=False)
    if missing:
        raise ValueError(f"{KIND}: task(s) cannot run: {'; '.join(missing.values())}")
    stage = stage_config(model, asdict(config), ready, limit, batch_size, judge, engine.resolved().key())
    out.mkdir(parents=True, exist_ok=True)
    metrics, _ = sample(stage, settings_from_config(settings, list(ready)), engine, out)
    return Candidates.load(out), metrics
