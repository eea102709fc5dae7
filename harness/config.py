"""The resolved configuration of one grid cell (pydantic), validated before any compute starts.

A cell is: a policy model, a preference dataset (or prompt set), an algorithm with its config,
optionally a reward model (trained by the grid, or a given folder) or a verifiable reward function,
the evaluation tasks, optionally the judge, and a seed. `algorithm: null` is the SFT baseline
(evaluate the starting model only).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetRef(Strict):
    name: str
    max_rows: int | None = Field(default=None, ge=1, description="random subsample after curation")
    seed: int | None = Field(default=None, description="subsampling seed; defaults to the cell seed")

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

        config = ALGORITHMS.get(self.name).make_config(self.overrides())
        return {"name": self.name, **dataclasses.asdict(config)}


class RewardModelRef(Strict):
    """Train a Bradley-Terry RM on `dataset` starting from `base` (or use a trained one at `path`)."""

    base: str = "smollm2-135m-instruct"
    dataset: DatasetRef | None = None
    path: str | None = None  # an already trained sequence-classification RM folder
    train: dict[str, Any] = Field(default_factory=dict, description="RewardModelConfig overrides")

    @model_validator(mode="after")
    def _one_source(self) -> RewardModelRef:
        if (self.dataset is None) == (self.path is None):
            raise ValueError("give exactly one of `dataset` (train a reward model) or `path` (use a trained one)")
        if self.train:
            from harness.reward_model import RewardModelConfig

            valid = {f.name for f in dataclasses.fields(RewardModelConfig)}
            unknown = sorted(set(self.train) - valid)
            if unknown:
                raise ValueError(f"unknown reward-model training field(s) {unknown}; valid: {sorted(valid)}")
        return self


class EvalConfig(Strict):
    tasks: list[str] = Field(default_factory=lambda: ["smoke_lowercase"])
    limit: int | None = Field(default=None, ge=1, description="examples per task (None = all)")
    batch_size: int = Field(default=16, ge=1)

    @field_validator("tasks")
    @classmethod
    def _registered(cls, tasks: list[str]) -> list[str]:
        from harness.evaluation import SUITES, TASKS

        expanded: list[str] = []
        for name in tasks:
            if name in SUITES:
                expanded.extend(SUITES[name])
            else:
                TASKS.get(name)
                expanded.append(name)
        return expanded


class JudgeConfig(Strict):
    model: str = "gpt-4-0613"
    base_url: str | None = None  # OpenAI-compatible endpoint; the key comes from the environment only
    api_key_env: str = "OPENAI_API_KEY"
    prompts: DatasetRef | None = None
    num_prompts: int = 150
    reference: str = "sft"


class CellConfig(Strict):
    model: str = "smollm2-135m-instruct"
    dataset: DatasetRef | None = None
    algorithm: AlgorithmRef | None = None
    reward_model: RewardModelRef | None = None
    reward_function: str | None = None
    prompts: DatasetRef | None = None  # policy-training prompts for online algorithms (PPO, GRPO, ...)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    judge: JudgeConfig | None = None
    seed: int = 1

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

    @field_validator("reward_function")
    @classmethod
    def _known_reward_function(cls, name: str | None) -> str | None:
        if name is not None:
            from harness.rewards import REWARD_FUNCTIONS

            REWARD_FUNCTIONS.get(name)
        return name

    @model_validator(mode="after")
    def _algorithm_needs(self) -> CellConfig:
        """Wrong combinations fail at plan time, naming the missing piece."""
        if self.algorithm is None:
            return self
        from datasets_registry import DATASETS
        from harness.algorithms import ALGORITHMS

        spec = ALGORITHMS.get(self.algorithm.name)
        if spec.needs_reward and self.reward_model is None and self.reward_function is None:
            raise ValueError(
                f"algorithm {spec.name!r} needs a reward: set `reward_model` (dataset or path) "
                "or `reward_function`"
            )
        if spec.needs_reward and self.reward_model is not None and self.reward_function is not None:
            raise ValueError(
                f"algorithm {spec.name!r} takes one reward, but both `reward_model` and `reward_function` "
                "are set: remove one"
            )
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
