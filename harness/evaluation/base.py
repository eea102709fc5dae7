"""Evaluation task contract and registry (lm-eval style: a task is one module and one register line).

A task gets an `EvalContext` (the model, a lazily built shared generator, a limit, a seed, its resolved
settings, where to write) and returns a `TaskResult`: raw metrics (named `<task>/<metric>`), a 0-100
`score` used for category averages (or None with `skipped_reason` when it cannot run: never a made-up
number), and per-example `samples` (saved as a JSONL artifact so any metric can be recomputed without
regenerating).

What a task's result depends on is declared on its `TaskSpec` and resolved once, before anything runs
(`resolve_task`): its `version`, its code, its typed `settings` (defaults, then the environment, then a
grid's `eval.settings` / `harness eval --set`), the sha256 of every file it reads (`data_files`), the
registry datasets it prepares (`datasets`) and the context inputs it `uses` (judge endpoint, reference
model, reward model). That one fingerprint is the task's part of the grid's `evaluate` stage key and of
`harness eval`'s resume key. An input that is absent (`MissingInput`) means the task is not run and
says why; it is retried once the input exists (the key then changes).

Each benchmark of the paper's suite runs under one of two *settings* (`BenchmarkSettings.setting`):
`paper`, open-instruct's 2024 evaluation as the paper's numbers were produced (subset, seed, prompt,
chat format, BOS, decoding, judge; `docs/open-instruct-2024-eval.md`), or `harness`, this project's own
choices (the default, see the evaluation README for why). A grid's `eval.setting` / `harness eval
--setting` picks it for every task at once; `describe` says, before anything runs, what a task will do
under its settings (`harness eval --dry-run`).

Running a list of tasks (`run_tasks`, reusing finished results) is `harness.evaluation.runner`; the
category averages and `overall` are `harness.evaluation.aggregation`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from harness.registry import Registry


class TaskSettings(BaseModel):
    """Base class of a task's typed settings: one field per knob, each with its documented default.

    `env` maps a field to the environment variable that may supply its default (the old CPU knobs such
    as HARNESS_CODING_N_SAMPLES). Settings are resolved once, at plan time (`resolve_settings`), so they
    are in the stage key and the MLflow params; tasks read them from the `EvalContext`, never from the
    environment."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    env: ClassVar[dict[str, str]] = {}


# How a benchmark is run: "paper" = as open-instruct's 2024 eval/ scripts ran it for the paper's tables,
# "harness" = this project's choices (all examples, the model's own chat template, its judges).
EvalSetting = Literal["harness", "paper"]
EVAL_SETTINGS: tuple[str, ...] = get_args(EvalSetting)
DEFAULT_SETTING: EvalSetting = "harness"


class BenchmarkSettings(TaskSettings):
    """Settings of a benchmark of the paper's suite: the base class holds the one field they share.

    `paper_defaults` are the values some other fields take under `setting: paper` when nothing sets them
    (IFEval's budget is 2,048 tokens in open-instruct, 1,280 here); the environment's defaults and a grid's
    or `--set`'s values still win, and `describe` lists them as departures from the paper."""

    setting: EvalSetting = Field(DEFAULT_SETTING, description="'paper': open-instruct's 2024 evaluation as the "
                                 "paper ran it (subset, seed, prompt, Tulu chat format, BOS, decoding, judge); "
                                 "'harness': this project's choices")
    paper_defaults: ClassVar[dict[str, Any]] = {}

    @model_validator(mode="before")
    @classmethod
    def _paper_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("setting") == "paper" and cls.paper_defaults:
            return {**cls.paper_defaults, **data}
        return data

    def departures_from_paper(self) -> list[str]:
        """Fields set away from the paper setting's values (only meaningful under `setting: paper`)."""
        fields = type(self).model_fields
        out = []
        for name, value in self.paper_defaults.items():
            if name in fields and getattr(self, name) != value:
                paper = "unset: open-instruct's value per task" if value is None else repr(value)
                out.append(f"{name} = {getattr(self, name)!r} (paper: {paper})")
        return out


@dataclass(frozen=True)
class TaskProtocol:
    """What a task will do under its settings, stated before anything runs (`harness eval --dry-run`).

    Built by the task's `describe(settings, limit)` from the same functions its run uses (its subset rule,
    its SamplingParams), so the listing cannot drift from what runs."""

    setting: str  # "paper" | "harness"
    subset: str  # which examples, in words (rule and source)
    size: int | None  # how many examples after --limit (None: the data is not there to count)
    seed: int | None  # the seed of the subset draw (None: no random draw)
    prompt: str  # where the prompt comes from and its chat format
    decoding: str  # generation parameters (or the scoring rule when nothing is generated)
    judge: str | None  # who decides correctness when it is not a string rule
    notes: tuple[str, ...] = ()  # where this differs from what open-instruct did, or cannot match it


class MissingInput(FileNotFoundError):
    """An input a task needs is absent (a data file, a classifier, a judge, a reference or reward model):
    the task is not run, its reason is reported, and it is retried once the input exists."""


class TaskUnavailable(RuntimeError):
    """Raised by a task when an input it was planned with fails at run time (a judge endpoint that does
    not answer, a classifier that does not load). Not a result: never cached; `run_tasks` records it as
    skipped (and unavailable) and goes on, and the grid's evaluate stage then fails, keeping the tasks
    that finished, so the next run retries only this one."""


@dataclass
class EvalContext:
    model_path: str
    out_dir: Path
    limit: int | None = None
    seed: int = 0
    batch_size: int = 16
    judge: dict[str, Any] | None = None  # judge endpoint settings, for judge-based tasks
    reference_path: str | None = None  # the SFT/reference policy, for KL-to-reference measurements
    reward_model_path: str | None = None  # a trained RM folder, for reward-of-samples measurements
    # The cell's reward as a whole (`harness.reward_source.RewardSource`: a reward model, an ensemble or a
    # verifier), for reward-of-samples measurements; None = `reward_model_path`'s model, if any.
    reward: Any = None
    # Resolved settings per settings group (`TaskSpec.group`), filled by the caller (the grid's evaluate
    # stage from its planned config, `harness eval` from its flags) or by `run_tasks`.
    settings: dict[str, TaskSettings] = field(default_factory=dict)
    # The engine that generates and scores (`harness.generation.EngineSettings`): a grid's evaluate stage passes
    # its planned (pinned) settings; None = `EngineSettings()` resolved here (this call is the plan time).
    engine: Any = None
    _generator: Any = None

    @property
    def generator(self):
        """The shared generation engine, built on first use (tasks that only score do not pay for it)."""
        if self._generator is None:
            from harness.engines import make_generator

            self._generator = make_generator(self.model_path, batch_size=self.batch_size, engine=self.engine)
        return self._generator

    def engine_key(self) -> dict[str, Any]:
        """What the engine contributes to a task's result (`ResolvedEngine.key()`): the generator's own when it
        was given built, else the settings' (resolved on this machine when they still say "auto")."""
        resolved = getattr(self._generator, "resolved", None)
        if resolved is None:
            from harness.generation import EngineSettings

            resolved = (self.engine or EngineSettings()).resolved()
        return resolved.key()

    def settings_for(self, task: str) -> Any:
        """The settings task `task` runs with (its settings class's instance; None if it has none).

        A context built by hand without them (a test, a notebook) resolves them here, from the defaults
        and the environment: that call is its plan time."""
        spec = TASKS.get(task)
        if spec.group in self.settings:
            return self.settings[spec.group]
        return resolve_settings(spec)


@dataclass
class TaskResult:
    metrics: dict[str, float]
    score: float | None  # 0-100, what enters the category average
    samples: list[dict[str, Any]] = field(default_factory=list)
    skipped_reason: str | None = None
    # What the score is when it is not what the task's `score_rule` says, and why (e.g. AlpacaEval 2's raw
    # win rate when its length-controlled one cannot be computed): in results.json `notes` and the table.
    note: str | None = None


# What a task may read from its context besides the evaluated model (`TaskSpec.uses`).
CONTEXT_INPUTS = ("judge", "reference", "reward_model")


@dataclass
class TaskSpec:
    name: str
    category: str  # one of CATEGORIES, or "custom" for tasks outside the paper's suite
    run: Callable[[EvalContext], TaskResult]
    description: str = ""
    score_rule: str = ""  # how `score` is derived from the metric, as in the paper's tables
    # Bump when what the task computes changes through code its code fingerprint does not cover (the
    # generation engine, an upgraded package such as lm-eval); its module and the harness.evaluation /
    # harness.judge / datasets_registry code it imports are fingerprinted anyway.
    version: int = 1
    # Default settings (an instance of the task's TaskSettings subclass, whose fields document them);
    # None = the task has no settings. Grids set them under `eval.settings.<group>`.
    settings: TaskSettings | None = None
    # Name of the settings under `eval.settings` (default: the task name); tasks that share settings
    # share it (humaneval_plus and mbpp_plus: "coding"; alpaca_eval1/2: "alpaca_eval").
    settings_group: str | None = None
    # data_files(settings) -> the files the task reads (benchmark files, a classifier's or judge's folder
    # content), each fingerprinted by sha256 at plan time. Raises MissingInput (common.MissingDataError)
    # naming what is absent: the task is then not run.
    data_files: Callable[[Any], list[Path]] | None = None
    # datasets(settings) -> registry datasets the task prepares (fingerprinted by their source).
    datasets: Callable[[Any], list[str]] | None = None
    # Context inputs (CONTEXT_INPUTS) the task reads: each is in its key, and only in its key. None = not
    # declared: all of them are (the safe default for a task that did not say).
    uses: tuple[str, ...] | None = None
    # Of `uses`, those without which the task cannot run (it is then not run, and says why).
    requires: tuple[str, ...] = ()
    # describe(settings, limit) -> TaskProtocol: what the task will do, without running a model (for
    # `harness eval --dry-run`); None = the task says nothing beyond its description.
    describe: Callable[[Any, int | None], TaskProtocol] | None = None
    # Why the task cannot score best-of-N picks (`eval.best_of_n`), or "" when it scores whatever text it is
    # given: a task that scores the model itself (log-likelihoods, KL, its own generations) would measure the
    # SFT model through best-of-N and be mislabelled as the reward model's. Set, `best_of_n.tasks` refuses it.
    not_best_of_n: str = ""
    # Settings the task runs under when it scores best-of-N picks (one answer per prompt, App. H), over the
    # cell's: e.g. the coding tasks' {n_samples: 1, score_k: 1} (pass@1 of the pick, not pass@10 of samples).
    # In the best-of-N fingerprints, so in the sample_candidates and evaluate keys.
    best_of_n_settings: dict[str, Any] = field(default_factory=dict)

    @property
    def group(self) -> str:
        return self.settings_group or self.name

    @property
    def used_inputs(self) -> tuple[str, ...]:
        return CONTEXT_INPUTS if self.uses is None else self.uses


# The paper's six categories (Sec. 2.2, App. D).
CATEGORIES = ("factuality", "reasoning", "truthfulness", "coding", "safety", "instruction_following")

TASKS: Registry[TaskSpec] = Registry("eval task")
SUITES: dict[str, list[str]] = {}


# A judge that fails to answer in the expected format on more than this share of its verdicts is not
# usable for the task (e.g. a 135M model as judge): the score is withheld instead of being computed on
# the few verdicts it did give (measured: XSTest refusal F1 read 100 from 4 parsed verdicts of 20).
MAX_UNPARSED_FRACTION = 0.1


def unparsed_reason(task: str, n_unparsed: int, n_verdicts: int, judge_model: str) -> str | None:
    """Why a judged score is withheld (too many unreadable verdicts), or None when it stands."""
    if n_verdicts and n_unparsed / n_verdicts > MAX_UNPARSED_FRACTION:
        return (f"{task}: the judge ({judge_model}) gave {n_unparsed} of {n_verdicts} verdicts in no readable "
                f"form (over {MAX_UNPARSED_FRACTION:.0%}): no score; its verdicts and the responses are saved, "
                "use a stronger judge")
    return None


def register_task(spec: TaskSpec) -> TaskSpec:
    unknown = set(spec.used_inputs) - set(CONTEXT_INPUTS)
    if unknown or not set(spec.requires) <= set(spec.used_inputs):
        raise ValueError(f"task {spec.name!r}: uses {spec.uses} / requires {spec.requires} must be among "
                         f"{CONTEXT_INPUTS}, and what it requires must be among what it uses")
    for _, other in TASKS.items():
        if other.group == spec.group and type(other.settings) is not type(spec.settings):
            raise ValueError(f"task {spec.name!r}: settings group {spec.group!r} is {type(other.settings).__name__} "
                             f"in task {other.name!r}; tasks sharing a group share one settings class")
    TASKS.register(spec.name, spec)
    return spec


# ---------------------------------------------------------------------------------------------
# Settings: defaults, then the environment, then the grid / command line; resolved at plan time
# ---------------------------------------------------------------------------------------------

def settings_groups() -> dict[str, TaskSettings]:
    """Settings group -> the default settings of its (first registered) task."""
    groups: dict[str, TaskSettings] = {}
    for _, spec in TASKS.items():
        if spec.settings is not None:
            groups.setdefault(spec.group, spec.settings)
    return groups


def _env_defaults(settings: TaskSettings, group: str) -> dict[str, Any]:
    """Field values the environment supplies; a bad value fails naming the variable."""
    cls = type(settings)
    values: dict[str, Any] = {}
    for name, var in cls.env.items():
        raw = os.environ.get(var, "").strip()
        if not raw:
            continue
        info = cls.model_fields[name]
        try:
            target = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
            values[name] = TypeAdapter(target).validate_python(raw)
        except ValidationError as err:
            error = err.errors()[0]
            expected = {"int_parsing": "an integer", "float_parsing": "a number"}.get(error["type"])
            if expected is None and error["type"] in ("greater_than_equal", "greater_than") and info.annotation is int:
                bound = error["ctx"].get("ge", error["ctx"].get("gt"))
                expected = "a positive integer" if bound in (0, 1) else f"an integer >= {bound}"
            raise ValueError(f"{var} must be {expected or 'valid'}, got {raw!r} (the default of task setting "
                             f"{group}.{name}: {error['msg']})") from None
    return values


def resolve_settings(spec: TaskSpec, overrides: dict[str, Any] | None = None) -> TaskSettings | None:
    """A task's settings: its declared defaults, then the environment's (`TaskSettings.env`), then
    `overrides` (a grid's `eval.settings.<group>`, `harness eval --set`). ValueError on a bad value,
    naming the variable or the field."""
    if spec.settings is None:
        if overrides:
            raise ValueError(f"task {spec.name!r} has no settings; got {sorted(overrides)}")
        return None
    values = {**_declared(spec.settings), **_env_defaults(spec.settings, spec.group), **(overrides or {})}
    try:
        return type(spec.settings).model_validate(values)
    except ValidationError as err:
        raise ValueError("; ".join(f"{path}: {msg}" for path, msg in _settings_error_lines(spec.group, err))) from None


def _declared(settings: TaskSettings) -> dict[str, Any]:
    """The values a task's default settings were declared with (a variant's own defaults); the class's
    defaults, and a setting's defaults (`BenchmarkSettings.paper_defaults`), fill in the rest."""
    return settings.model_dump(exclude_unset=True)


def _settings_error_lines(group: str, err: ValidationError) -> list[tuple[str, str]]:
    return [(".".join([group, *(str(p) for p in e["loc"])]), e["msg"].removeprefix("Value error, ")) for e in err.errors()]


def settings_errors(overrides: dict[str, Any]) -> list[tuple[str, str]]:
    """(path under eval.settings, message) for every problem in a grid's `eval.settings` block: an
    unknown group (listing the valid ones), an unknown field or a bad value (the settings class's own
    validation, environment defaults included)."""
    groups = settings_groups()
    problems: list[tuple[str, str]] = []
    for group, values in overrides.items():
        if group not in groups:
            problems.append((group, f"no task has settings named {group!r}; settings groups: {', '.join(sorted(groups))}"))
            continue
        if not isinstance(values, dict):
            problems.append((group, f"expected a mapping of setting -> value, got {values!r}"))
            continue
        default = groups[group]
        try:
            type(default).model_validate({**_declared(default), **_env_defaults(default, group), **values})
        except ValidationError as err:
            problems.extend(_settings_error_lines(group, err))
        except ValueError as err:  # an environment default that does not parse
            problems.append((group, str(err)))
    return problems


def with_setting(task_names: list[str], overrides: dict[str, Any], setting: str | None) -> dict[str, Any]:
    """`overrides` with a suite-wide `setting` (a grid's `eval.setting`, `harness eval --setting`) filled in
    for every settings group of `task_names` that has the field (`BenchmarkSettings`) and does not set it
    itself: the group's own value wins. None = nothing to fill in."""
    if setting is None:
        return overrides
    if setting not in EVAL_SETTINGS:
        raise ValueError(f"setting must be one of {', '.join(map(repr, EVAL_SETTINGS))}, got {setting!r}")
    out = {group: dict(values) if isinstance(values, dict) else values for group, values in overrides.items()}
    for name in task_names:
        spec = TASKS.get(name)
        if isinstance(spec.settings, BenchmarkSettings):
            values = out.setdefault(spec.group, {})
            if isinstance(values, dict):  # anything else is reported by settings_errors
                values.setdefault("setting", setting)
    return out


def resolve_eval_settings(task_names: list[str], overrides: dict[str, Any],
                          setting: str | None = None) -> dict[str, dict[str, Any]]:
    """Every settings group of `task_names` (and of `overrides`) fully resolved, as JSON values: what a
    grid cell's `eval.settings` becomes at load time, so the keys and MLflow params hold it. `setting`
    (paper / harness) applies to every benchmark whose group does not choose its own (`with_setting`)."""
    overrides = with_setting(task_names, overrides, setting)
    problems = settings_errors(overrides)
    if problems:
        raise ValueError("; ".join(f"settings.{path}: {msg}" for path, msg in problems))
    specs = {TASKS.get(n).group: TASKS.get(n) for n in task_names if TASKS.get(n).settings is not None}
    for group in overrides:
        specs.setdefault(group, next(s for _, s in TASKS.items() if s.group == group))
    return {group: resolve_settings(spec, overrides.get(group)).model_dump(mode="json")  # type: ignore[union-attr]
            for group, spec in sorted(specs.items())}


def settings_from_config(groups: dict[str, dict[str, Any] | None], task_names: list[str]) -> dict[str, TaskSettings]:
    """Resolved settings (JSON, as a plan wrote them) back into settings objects, per group; no
    environment is read."""
    out: dict[str, TaskSettings] = {}
    for name in task_names:
        spec = TASKS.get(name)
        values = groups.get(spec.group)
        if spec.settings is not None and values is not None:
            out[spec.group] = type(spec.settings).model_validate(values)
    return out


# ---------------------------------------------------------------------------------------------
# What a task's result depends on, resolved before it runs
# ---------------------------------------------------------------------------------------------

def judge_endpoint(judge: dict[str, Any] | None) -> dict[str, Any] | None:
    """The judge fields that decide verdicts (model, base_url): never the API key or its variable, never
    the prompt-set or reference choices of the after-the-fact `harness judge` step."""
    if not judge:
        return None
    return {"model": judge.get("model"), "base_url": judge.get("base_url")}


def folder_files(folder: Path) -> list[Path]:
    """Every file under a model/classifier/judge folder (for `data_files`)."""
    return sorted(p for p in Path(folder).expanduser().rglob("*") if p.is_file())


def resolve_task(spec: TaskSpec, settings: TaskSettings | None, *, judge: dict[str, Any] | None = None,
                 has_reference: bool = True, has_reward_model: bool = True) -> dict[str, Any]:
    """The task's fingerprint: version, code, resolved settings, sha256 of every data file it reads,
    the source of every registry dataset it prepares, and the judge endpoint when it uses one.

    One function for the grid (the `evaluate` stage key holds it per task, from `plan_cell`) and for
    `harness eval` (its resume key adds the model, see `task_fingerprint`). Raises MissingInput when
    an input the task needs is absent."""
    from datasets_registry.core import source_fingerprint
    from harness.cache import code_fingerprint, file_sha256
    from harness.paths import data_label

    present = {"judge": bool(judge and judge.get("model")), "reference": has_reference,
               "reward_model": has_reward_model}
    for needed in spec.requires:
        if not present[needed]:
            raise MissingInput(f"{spec.name}: needs {_REQUIRED_HOW[needed]}")
    data = {data_label(p): file_sha256(p) for p in (spec.data_files(settings) if spec.data_files else [])}
    datasets = {}
    for name in spec.datasets(settings) if spec.datasets else []:
        datasets[name] = source_fingerprint(name)
        if datasets[name]["raw"].get("unavailable"):
            raise MissingInput(f"{spec.name}: dataset {name!r} has no local raw file and the hub is not used")
    module = inspect.getmodule(inspect.unwrap(spec.run))
    fingerprint: dict[str, Any] = {
        "task": spec.name, "version": spec.version,
        "code": code_fingerprint(module.__name__ if module else spec.name, CODE_PACKAGES, exclude=CODE_NOT_DEPENDED_ON),
        "settings": settings.model_dump(mode="json") if settings is not None else None,
        "data": data, "datasets": datasets,
    }
    if "judge" in spec.used_inputs:
        fingerprint["judge"] = judge_endpoint(judge)
    return fingerprint


# A task's code fingerprint: its module and what it imports (anywhere in its body) from these packages,
# except this contract, the runner and the category aggregation (they compute no task's numbers) and package
# __init__s that only re-export. harness.loglikelihood: the option scoring of MMLU and TruthfulQA
# (in-process), part of their results.
CODE_PACKAGES = ("harness.evaluation", "harness.judge", "datasets_registry", "harness.loglikelihood")
CODE_NOT_DEPENDED_ON = ("harness.evaluation", __name__, "harness.evaluation.runner", "harness.evaluation.aggregation",
                        "harness.judge", "datasets_registry")

_REQUIRED_HOW = {
    "judge": "an LLM judge (set the grid's `judge: {model, base_url}` or `harness eval --judge-model`); no "
             "offline substitute",
    "reference": "a reference model (ctx.reference_path)",
    "reward_model": "a reward (a reward model, an ensemble or a verifier), and this cell has none (set `reward_model`)",
}


def plan_tasks(task_names: list[str], settings: dict[str, dict[str, Any] | None], *, judge: dict[str, Any] | None,
               has_reference: bool, has_reward_model: bool) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """({task: fingerprint} of the tasks whose inputs resolve now, {task: reason} of the others)."""
    resolved = settings_from_config(settings, task_names)
    ready: dict[str, dict[str, Any]] = {}
    missing: dict[str, str] = {}
    for name in task_names:
        spec = TASKS.get(name)
        try:
            ready[name] = resolve_task(spec, resolved.get(spec.group), judge=judge, has_reference=has_reference,
                                       has_reward_model=has_reward_model)
        except FileNotFoundError as err:  # MissingInput, common.MissingDataError, a folder that is not there
            missing[name] = task_reason(name, str(err))
    return ready, missing


def task_reason(task: str, reason: str) -> str:
    """A reason that starts with its task's name (as the tasks' own skipped reasons do)."""
    return reason if reason.startswith(f"{task}:") else f"{task}: {reason}"


def task_fingerprint(ctx: EvalContext, spec: TaskSpec) -> dict[str, Any]:
    """What a finished task's result depends on: `resolve_task`'s fingerprint plus the evaluated model's
    content, the context's limit / seed / batch size, the reference and reward models it uses and the engine
    that generates and scores (kind, precision, batching: `EvalContext.engine_key`). A finished result (a
    `harness eval --out` checkpoint, the grid's task store) is reused only when all of it is unchanged;
    shared code (the generation engine's code) is not part of it."""
    from harness.cache import model_fingerprint

    used = spec.used_inputs
    # The reward (`ctx.reward`, a RewardSource; this module does not import it: harness.rewards imports tasks), or
    # a bare reward-model folder of a context built by hand.
    reward, reward_path = ctx.reward, ctx.reward_model_path if ctx.reward is None else ctx.reward.model_path
    return {
        **resolve_task(spec, ctx.settings_for(spec.name), judge=ctx.judge,
                       has_reference=ctx.reference_path is not None,
                       has_reward_model=reward is not None or reward_path is not None),
        "model": model_fingerprint(ctx.model_path),
        "limit": ctx.limit, "seed": ctx.seed, "batch_size": ctx.batch_size,
        "reference": model_fingerprint(ctx.reference_path) if ctx.reference_path and "reference" in used else None,
        # A reward model's content as before; an ensemble or a verifier by `RewardSource.fingerprint`.
        "reward_model": (None if "reward_model" not in used or (reward is None and reward_path is None)
                         else model_fingerprint(reward_path) if reward_path else reward.fingerprint()),
        "engine": ctx.engine_key(),
    }
