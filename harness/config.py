"""The resolved configuration of one grid cell (pydantic), validated before any compute starts.

A cell is: a policy model, a preference dataset (or prompt set), an algorithm with its config,
optionally a reward model (trained by the grid, or a given folder) or a verifiable reward function,
the evaluation tasks, optionally the judge, and a seed. `algorithm: null` is the SFT baseline
(evaluate the starting model only).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.config_fields import Seed
from harness.generation import EngineSettings


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetRef(Strict):
    name: str
    max_rows: int | None = Field(default=None, ge=1, description="random subsample after curation")
    seed: Seed | None = Field(default=None, description="subsampling seed; defaults to the cell seed")
    # "released": the authors' published split of this dataset (allenai/tulu-2.5-preference-data); `name`
    # is resolved to its registry name (tulu25-*) here, so the data stage's key and the logged name are its.
    build: Literal["rebuilt", "released"] = "rebuilt"

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        from datasets_registry import DATASETS

        DATASETS.get(name)  # raises UnknownNameError listing valid names
        return name

    @model_validator(mode="after")
    def _resolve_build(self) -> DatasetRef:
        if self.build == "released":
            from datasets_registry import released_name

            self.name = released_name(self.name)  # no released split: ValueError naming those that have one
        return self


class AlgorithmRef(BaseModel):
    """`name` plus any fields of that algorithm's config dataclass (checked against it)."""

    model_config = ConfigDict(extra="allow")
    name: str

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_fields(self) -> AlgorithmRef:
        from harness.algorithms import ALGORITHMS

        spec = ALGORITHMS.get(self.name)
        overrides = dict(self.model_extra or {})
        spec.make_config(overrides)  # unknown field or bad value raises with the valid names
        return self

    def overrides(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def resolved(self) -> dict[str, Any]:
        """Every field of the algorithm's config, defaults included (what gets hashed and logged)."""
        from harness.algorithms import ALGORITHMS
        from harness.config_fields import resolved_fields

        config = ALGORITHMS.get(self.name).make_config(self.overrides())
        return {"name": self.name, **resolved_fields(config)}


class RewardModelRef(Strict):
    """The cell's reward, from exactly one source:

    - `dataset`: a Bradley-Terry RM the grid trains on that data, from `base`, with `train` settings (and
      `seed`, default the cell's);
    - `path`: an already trained sequence-classification RM folder;
    - `verifier`: a verifiable reward (`harness.rewards.VERIFIERS`), plus `format_weight` x its format check;
    - `ensemble`: two or more RM specs (each `dataset` or `path`, each trained once and shared by key), their
      scores combined per sample by `combine` (`harness.reward_ensemble`): `mean`, `wco` (the minimum) or
      `uwo` (mean - `uwo_lambda` x variance), Coste et al. (2024).
    """

    base: str = "smollm2-135m-instruct"
    dataset: DatasetRef | None = None
    path: str | None = None  # an already trained sequence-classification RM folder
    train: dict[str, Any] = Field(default_factory=dict, description="RewardModelConfig overrides")
    seed: Seed | None = Field(default=None, description="RM training seed (None = the cell's seed)")
    verifier: str | None = None
    format_weight: float = Field(default=0.0, ge=0, allow_inf_nan=False,
                                 description="weight of the verifier's format check (0 = none)")
    ensemble: list[RewardModelRef] | None = None
    combine: Literal["mean", "wco", "uwo"] = "mean"
    uwo_lambda: float = Field(default=0.5, ge=0, allow_inf_nan=False,
                              description="UWO's weight of the members' score variance")

    @field_validator("verifier")
    @classmethod
    def _known_verifier(cls, name: str | None) -> str | None:
        if name is not None:
            from harness.rewards import VERIFIERS

            VERIFIERS.get(name)  # raises, listing the valid names
        return name

    @model_validator(mode="after")
    def _one_source(self) -> RewardModelRef:
        sources = [name for name in ("dataset", "path", "verifier", "ensemble") if getattr(self, name) is not None]
        if len(sources) != 1:
            raise ValueError("give exactly one of `dataset` (train a reward model), `path` (use a trained one), "
                             "`verifier` (a verifiable reward) or `ensemble` (several reward models)"
                             + (f"; got {', '.join(sources)}" if sources else ""))
        misplaced = {"format_weight": "verifier", "combine": "ensemble", "uwo_lambda": "ensemble", "seed": "dataset"}
        for field, owner in misplaced.items():
            if field in self.model_fields_set and getattr(self, owner) is None:
                raise ValueError(f"`{field}` applies only to a reward_model with `{owner}`")
        if self.format_weight:
            from harness.rewards import VERIFIERS, format_verifiers

            if VERIFIERS.get(self.verifier).format_check is None:
                raise ValueError(f"format_weight: verifier {self.verifier!r} has no format check; verifiers with "
                                 f"one: {', '.join(format_verifiers())}")
        if self.ensemble is not None:
            self._check_ensemble(self.ensemble)
        problems = self.train_problems(self.train)
        if problems:
            raise ValueError("; ".join(f"train.{field}: {msg}" for field, msg in problems))
        if self.dataset is not None and self.dataset.max_rows is not None and self.dataset.max_rows < 2:
            # Known now; a dataset that curates to fewer rows is caught when train_reward_model starts.
            raise ValueError(
                f"dataset.max_rows={self.dataset.max_rows} leaves at most {self.dataset.max_rows} pair(s), but the "
                "reward model holds some pairs out to measure its accuracy (`heldout_fraction`): it needs at "
                "least 2 (one to train on, one held out)")
        return self

    @staticmethod
    def _check_ensemble(members: list[RewardModelRef]) -> None:
        if len(members) < 2:
            raise ValueError(f"ensemble: needs at least 2 reward models, got {len(members)}")
        seen: dict[str, int] = {}
        for i, member in enumerate(members):
            if member.dataset is None and member.path is None:
                raise ValueError(f"ensemble[{i}]: an ensemble member is a reward model (`dataset` or `path`), "
                                 "not a verifier or another ensemble")
            identity = member.model_dump_json()
            if identity in seen:
                raise ValueError(f"ensemble[{i}] is the same reward model as ensemble[{seen[identity]}] (same data, "
                                 "base, settings and seed), so it would add nothing: give members different `seed`s "
                                 "(or data)")
            seen[identity] = i

    @property
    def is_single_model(self) -> bool:
        """One learned reward model (trained here or given): what PPO's value_init='reward' can copy."""
        return self.dataset is not None or self.path is not None

    @staticmethod
    def train_problems(train: dict[str, Any]) -> list[tuple[str, str]]:
        """(field, problem) of the `train` overrides: unknown fields, values out of range, wrong types."""
        from harness.config_fields import field_problems
        from harness.reward_model import RewardModelConfig

        return field_problems(RewardModelConfig, train, "reward-model training (reward_model.train)")


def _expand_tasks(tasks: list[str]) -> list[str]:
    """Suite names expanded to their tasks; an unknown name raises, listing the valid ones."""
    from harness.evaluation import SUITES, TASKS

    expanded: list[str] = []
    for name in tasks:
        if name in SUITES:
            expanded.extend(SUITES[name])
        else:
            TASKS.get(name)
            expanded.append(name)
    return expanded


# Paper Table 12's best-of-N benchmarks (the evaluation suite `paper-bon`).
BEST_OF_N_SUITE = "paper-bon"


class BestOfNEval(Strict):
    """Best-of-N (paper Sec. 4 "direct evaluation", App. H): N samples per prompt from the cell's SFT
    model (`model`), sampled once by the `sample_candidates` stage that every cell with the same SFT model and
    settings shares, the cell's reward model picks one, `tasks` are scored on the picks. Logged as
    `bon/<task>/<metric>` on the cell run."""

    n: int = Field(default=16, ge=1, description="samples per prompt (App. H: 16)")
    temperature: float = Field(default=0.7, gt=0, description="sampling temperature (App. H: 0.7)")
    top_p: float = Field(default=1.0, gt=0, le=1)
    # Fixed, not the cell seed: cells of every seed and every RM then pick from the same candidates
    # (App. H: "model outputs are identical between runs").
    seed: Seed = 0
    tasks: list[str] = Field(default_factory=lambda: _expand_tasks([BEST_OF_N_SUITE]))
    limit: int | None = Field(default=None, ge=1, description="prompts per task (None = eval.limit)")

    @field_validator("tasks")
    @classmethod
    def _registered(cls, tasks: list[str]) -> list[str]:
        from harness.evaluation import TASKS

        expanded = _expand_tasks(tasks)
        bad = {t: TASKS.get(t).not_best_of_n for t in expanded if TASKS.get(t).not_best_of_n}
        if bad:
            raise ValueError("not a best-of-N task: " + "; ".join(f"{t} ({why})" for t, why in bad.items()))
        if not expanded:
            raise ValueError("best_of_n.tasks is empty")
        return expanded


class EvalConfig(Strict):
    tasks: list[str] = Field(default_factory=lambda: ["smoke_lowercase"])
    limit: int | None = Field(default=None, ge=1, description="examples per task (None = all)")
    batch_size: int = Field(default=16, ge=1)
    best_of_n: BestOfNEval | None = None
    # Paper Figs. 6-7: also evaluate the policy saved every N training steps (PPO: updates), logged as
    # each task metric's history over steps. None = final model only (stage keys as without the field).
    checkpoint_every: int | None = Field(default=None, ge=1, description="evaluate a checkpoint every N steps")
    # Task settings by settings group (`TaskSpec.group`: e.g. coding, ifeval, alpaca_eval, truthfulqa,
    # toxigen), e.g. {coding: {n_samples: 10}}. After validation it holds every group of the cell's tasks
    # fully resolved (defaults, then the environment's HARNESS_* defaults, then these values), so the
    # stage keys and MLflow params carry the settings actually used.
    settings: dict[str, dict[str, Any]] = Field(default_factory=dict, description="task settings by group")
    # Every benchmark's `setting` at once ("paper": open-instruct's 2024 evaluation, as the paper ran it;
    # "harness": the project's own, each task's default); a group's own `settings.<group>.setting` wins.
    # Resolved into `settings` (and so into the stage keys and MLflow params) at load.
    setting: Literal["harness", "paper"] | None = Field(default=None, description="every benchmark's setting")
    # The evaluate stage's engine when it differs from the cell's `engine` (e.g. vLLM for the benchmarks while
    # PPO samples its rollouts in-process, at a paper profile). None = the cell's. Pinned at load as that one.
    engine: EngineSettings | None = Field(default=None, description="the evaluate stage's engine (default: the cell's)")

    @field_validator("tasks")
    @classmethod
    def _registered(cls, tasks: list[str]) -> list[str]:
        if not tasks:  # an evaluate stage with nothing to score would log an empty cell
            raise ValueError("no evaluation task: give at least one task or suite name (e.g. smoke_lowercase)")
        return _expand_tasks(tasks)

    @model_validator(mode="after")
    def _resolve_settings(self) -> EvalConfig:
        from harness.evaluation.base import resolve_eval_settings

        tasks = self.tasks + (self.best_of_n.tasks if self.best_of_n is not None else [])
        self.settings = resolve_eval_settings(tasks, self.settings, setting=self.setting)
        return self

    @field_validator("best_of_n", mode="before")
    @classmethod
    def _switch(cls, value: Any) -> Any:
        """`best_of_n: true` = the paper's settings; `false` = off."""
        if value is True:
            return {}
        return None if value is False else value


class JudgeConfig(Strict):
    model: str = Field(default="gpt-4-0613", min_length=1)
    # OpenAI-compatible endpoint; the key comes from the environment only
    base_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    api_key_env: str = Field(default="OPENAI_API_KEY", pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$",
                             description="name of the environment variable holding the API key")
    prompts: DatasetRef | None = None
    num_prompts: int = Field(default=150, ge=1)
    reference: str = Field(default="sft", min_length=1)


class MonitorConfig(Strict):
    """The over-optimisation monitor (harness/monitor.py): runs at every checkpoint evaluation of a cell
    with `eval.checkpoint_every` (nothing, and no change to any stage key, without it)."""

    enabled: bool = True
    # The held-out gold signal: another reward model (trained by the grid, given, or an ensemble), a
    # verifier, or `judge` (win rate against the SFT model's samples, by the cell's `judge`). None: no gold
    # signal, so the over-optimisation flag stays undetermined (KL, length, refusals are still measured).
    gold: RewardModelRef | Literal["judge"] | None = None
    prompts: DatasetRef | None = Field(default=None, description="prompt set (None = the cell's training prompts)")
    limit: int = Field(default=16, ge=1, description="prompts measured per checkpoint")
    samples_per_prompt: int = Field(default=2, ge=1)
    max_new_tokens: int = Field(default=64, ge=1)
    window: int = Field(default=3, ge=2, description="last k evaluated points the over-optimisation flag reads")
    length_growth: float = Field(default=0.5, gt=0, allow_inf_nan=False,
                                 description="flag when the final mean length exceeds the SFT model's by this fraction")
    refusal_limit: int = Field(default=16, ge=0, description="XSTest prompts for the refusal rates (0 = off)")


class TrainConfig(Strict):
    """How a training stage (policy or reward model) saves its work while it runs (`harness.resume`): a
    resume checkpoint every `checkpoint_minutes` of training and/or every `checkpoint_steps` optimizer
    steps (PPO: updates), so a killed stage goes on from there. Not part of any stage key: when work is
    saved does not change what is computed. Both null: no mid-stage checkpoints (a killed stage restarts)."""

    checkpoint_minutes: float | None = Field(default=30.0, gt=0, allow_inf_nan=False,
                                             description="save a resume checkpoint every M minutes (null = never)")
    checkpoint_steps: int | None = Field(default=None, ge=1, description="save a resume checkpoint every N steps")


class CellConfig(Strict):
    model: str = "smollm2-135m-instruct"
    dataset: DatasetRef | None = None
    algorithm: AlgorithmRef | None = None
    # The reward of online algorithms (and of rm_reward / best-of-N): a trained or given RM, a verifier or an
    # ensemble. `reward_function: NAME` (older grids) is read as `reward_model: {verifier: ...}` (see below).
    reward_model: RewardModelRef | None = None
    prompts: DatasetRef | None = None  # policy-training prompts for online algorithms (PPO, GRPO, ...)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    judge: JudgeConfig | None = None
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    # Engine and precision of every stage that computes with a model (`harness.generation.EngineSettings`;
    # docs/engines.md). "auto" is resolved when the cell is loaded, i.e. on the machine that plans the grid
    # (see `_pin_engine`), so stage keys, MLflow params and the workers all use that one choice.
    engine: EngineSettings = Field(default_factory=EngineSettings)
    train: TrainConfig = Field(default_factory=TrainConfig)
    seed: Seed = 1

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from harness.models import MODEL_BUILDERS, is_known_model

        if not is_known_model(name):
            raise ValueError(
                f"unknown model {name!r}: not a zoo name ({', '.join(MODEL_BUILDERS.names())}), "
                "an existing folder, or a hub id owner/name"
            )
        return name

    @model_validator(mode="before")
    @classmethod
    def _reward_function_is_a_verifier(cls, data: Any) -> Any:
        """`reward_function: NAME` is the older spelling of `reward_model: {verifier: ...}` (one home for the
        reward source, so one grid axis can vary it); names map by `harness.rewards.REWARD_FUNCTION_VERIFIERS`."""
        if not isinstance(data, dict) or "reward_function" not in data:
            return data
        data = dict(data)
        name = data.pop("reward_function")
        if name is None:
            return data
        from harness.rewards import REWARD_FUNCTION_VERIFIERS, REWARD_FUNCTIONS

        if data.get("reward_model") is not None:
            raise ValueError("this cell takes one reward, but both `reward_model` and `reward_function` are set: "
                             "remove one (`reward_function: NAME` means `reward_model: {verifier: ...}`)")
        if not isinstance(name, str):
            raise ValueError(f"reward_function must be a name, got {name!r}")
        REWARD_FUNCTIONS.get(name)  # raises, listing the valid names
        data["reward_model"] = {"verifier": REWARD_FUNCTION_VERIFIERS[name]}
        return data

    @model_validator(mode="after")
    def _best_of_n_needs_reward_model(self) -> CellConfig:
        if self.eval.best_of_n is not None and self.reward_model is None:
            raise ValueError(
                "`eval.best_of_n` needs a reward model to pick the best of the N SFT samples, but this cell "
                "has no `reward_model`: set `reward_model` (dataset or path) or remove `eval.best_of_n`"
            )
        rm = self.reward_model
        if self.eval.best_of_n is not None and rm is not None and rm.verifier is not None:
            from harness.rewards import VERIFIERS

            columns = VERIFIERS.get(rm.verifier).columns
            if columns:
                raise ValueError(f"`eval.best_of_n` picks with the cell's reward, but verifier {rm.verifier!r} reads "
                                 f"per-prompt gold data ({', '.join(columns)}) that best-of-N's benchmark prompts do "
                                 "not carry: use a reward model, an ensemble or a verifier that reads none")
        if rm is not None and rm.verifier is not None and "rm_reward" in self.eval.tasks:
            from harness.rewards import VERIFIERS

            columns = VERIFIERS.get(rm.verifier).columns
            if columns:  # its held-out prompt set (smoke-lowercase-eval by default) has no gold answers
                raise ValueError(f"eval.tasks: `rm_reward` scores held-out answers with the cell's reward, but verifier "
                                 f"{rm.verifier!r} reads per-prompt gold data ({', '.join(columns)}): drop "
                                 "`rm_reward` (the benchmark of that verifier's task measures the same thing)")
        return self

    @model_validator(mode="after")
    def _monitor_judge_needs_a_judge(self) -> CellConfig:
        if self.monitor.gold == "judge" and self.judge is None and self.algorithm is not None \
                and self.eval.checkpoint_every is not None and self.monitor.enabled:
            raise ValueError("monitor.gold: judge compares each checkpoint's samples with the SFT model's by the "
                             "cell's judge, but this cell has no `judge`: set `judge` (e.g. a local `harness "
                             "serve-judge` endpoint) or another gold signal")
        return self

    @model_validator(mode="after")
    def _pin_engine(self) -> CellConfig:
        """"auto" (dtype, batching) becomes what it resolves to here, the planning machine: a worker of another
        kind (a GPU node planned from a CPU laptop) then runs the planned engine instead of choosing its own.
        A cluster whose workers differ from the planning machine should pin `engine.dtype` explicitly."""
        self.engine = self.engine.pinned()
        if self.eval.engine is not None:
            self.eval.engine = self.eval.engine.pinned()
        return self

    @model_validator(mode="after")
    def _algorithm_needs(self) -> CellConfig:
        """Wrong combinations fail at plan time, naming the missing piece."""
        if self.algorithm is None:
            return self
        from datasets_registry import DATASETS
        from harness.algorithms import ALGORITHMS

        spec = ALGORITHMS.get(self.algorithm.name)
        if spec.rollout_engine and self.engine.kind != "hf":
            raise ValueError(f"engine.kind: algorithm {spec.name!r} samples its rollouts in-process (it trains on the "
                             f"sampled token ids and updates the weights between rollouts); use kind 'hf', not "
                             f"{self.engine.kind!r}")
        if spec.needs_reward and self.reward_model is None:
            raise ValueError(
                f"algorithm {spec.name!r} needs a reward: set `reward_model` (dataset, path, verifier or ensemble; "
                "`reward_function: NAME` is the older spelling of a verifier)"
            )
        why = (spec.needs_single_reward_model(self.algorithm.resolved()) if spec.needs_single_reward_model
               and self.reward_model is not None and not self.reward_model.is_single_model else None)
        if why:
            raise ValueError(f"{spec.name.upper()}'s {why[0]}, but this cell's reward is a verifier or an ensemble: "
                             f"{why[1]}")
        if spec.data in ("pairs", "unpaired"):
            if self.dataset is None:
                raise ValueError(f"algorithm {spec.name!r} trains on preference pairs: set `dataset`")
            if DATASETS.get(self.dataset.name).kind != "preference":
                raise ValueError(
                    f"algorithm {spec.name!r} needs a preference dataset, but {self.dataset.name!r} "
                    "is a prompt-only set"
                )
        if spec.data == "prompts" and self.prompts is None and self.dataset is None:
            raise ValueError(f"algorithm {spec.name!r} trains on prompts: set `prompts` (or `dataset`)")
        return self
