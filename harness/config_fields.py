"""Valid ranges of the config dataclasses' fields, checked when a config is built (so when a grid loads).

The algorithm configs (harness/algorithms/*.py) and the reward-model config (harness/reward_model.py) are
plain dataclasses whose defaults are the paper's. Their annotations carry each field's valid range or set
of values (`PositiveFloat`, `MaxSteps`, a `Literal` of names, ...) and they derive from `CheckedConfig`,
whose `__post_init__` checks every field against its annotation, then the class's cross-field rules
(`cross_field_problems`). So `beta: -0.1` or `loss_type: sigmoidd` fails at load with the field's name,
not after an hour of compute, and a config built in code (benchmarks, tests) is checked the same way.

Types are checked strictly: YAML already gives typed values, and a value that is only coercible (the
string "0.1", `true` for a number, 2.0 for an integer) would otherwise reach the trainer unconverted,
because the dataclass keeps the values as written (that is what is hashed into stage keys).
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model

Problem = tuple[str, str]  # (field, message); the message starts with the field's name


def requirement(holds: Callable[[Any], bool], text: str) -> AfterValidator:
    """A check whose message says why (`text`, e.g. "must be >= 2: KTO estimates its KL term in a batch")."""

    def check(value: Any) -> Any:
        if not holds(value):
            raise ValueError(text)
        return value

    return AfterValidator(check)


PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0, le=1)]
# A share of the training steps (warm-up): transformers reads a float in [0, 1) as a ratio of total steps.
WarmupRatio = Annotated[float, Field(ge=0, lt=1)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
# transformers' max_steps: > 0 is a step budget, -1 (its default) runs num_train_epochs; 0 and < -1 are typos.
MaxSteps = Annotated[int, requirement(lambda v: v >= 1 or v == -1,
                                      "must be >= 1 (optimizer steps), or -1 to run the configured epochs")]
# numpy's seed range (np.random.seed rejects anything outside [0, 2**32)).
Seed = Annotated[int, Field(ge=0, lt=2**32)]

# transformers 5.23 `SchedulerType` values that run with what the harness passes to the trainer (no
# `lr_scheduler_kwargs`, no evaluation during training). Left out, each failing only once training starts:
# cosine_with_min_lr and cosine_warmup_with_min_lr (need min_lr in lr_scheduler_kwargs), warmup_stable_decay
# (needs num_decay_steps), reduce_lr_on_plateau and greedy (need an eval strategy). tests/test_config_fields.py
# checks this list against the installed transformers.
LRSchedulerType = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                          "constant_with_warmup", "inverse_sqrt"]


class ConfigError(ValueError):
    """A config with bad values; `problems` are (field, message) pairs, the message naming the field."""

    def __init__(self, owner: str, problems: list[Problem]):
        self.problems = problems
        super().__init__(f"invalid {owner}: " + "; ".join(message for _, message in problems))


class CheckedConfig:
    """Mixin for config dataclasses: building one checks each field against its annotation, then the
    class's `cross_field_problems` (run only when every field is valid on its own).

    `OMITTED_AT_DEFAULT`: fields added after configs were first cached (e.g. `peft`, the GRPO switches),
    left out of `resolved_fields` while they hold their default, so the stage keys (and logged params) of
    every config that does not use them stay what they were."""

    OMITTED_AT_DEFAULT: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        problems = annotation_problems(type(self), values)
        if not problems:
            # Strict validation returns the values unchanged, except where an annotation completes a block
            # (e.g. `peft: {r: 16}` gets its default alpha, dropout, ...): keep what it returned.
            validated = _fields_model(type(self)).model_validate(values)
            for name in values:
                setattr(self, name, getattr(validated, name))
            problems = self.cross_field_problems()
        if problems:
            raise ConfigError(type(self).__name__, problems)

    def cross_field_problems(self) -> list[Problem]:
        return []


def resolved_fields(config: Any) -> dict[str, Any]:
    """Every field of a config dataclass (what is hashed into stage keys and logged), except the
    `OMITTED_AT_DEFAULT` ones that hold their default."""
    values = dataclasses.asdict(config)
    for f in dataclasses.fields(config):
        if f.name in getattr(config, "OMITTED_AT_DEFAULT", ()) and values[f.name] == f.default:
            del values[f.name]
    return values


@functools.cache
def _fields_model(config_cls: type) -> type[BaseModel]:
    """A strict pydantic model with the dataclass's fields and annotations (built once per class)."""
    hints = typing.get_type_hints(config_cls, include_extras=True)
    fields = {f.name: (hints[f.name], None) for f in dataclasses.fields(config_cls)}
    return create_model(f"{config_cls.__name__}Fields", __config__=ConfigDict(strict=True), **fields)


_TYPE_NAMES = {"float_type": "a valid number", "int_type": "a valid integer", "bool_type": "true or false",
               "string_type": "a string", "int_from_float": "a valid integer"}


def _describe(field: str, error: dict[str, Any]) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    bounds = {"greater_than": ("> ", "gt"), "greater_than_equal": (">= ", "ge"), "less_than": ("< ", "lt"),
              "less_than_equal": ("<= ", "le")}
    if kind in bounds:
        bound = ctx[bounds[kind][1]]
        text = f"must be {bounds[kind][0]}{bound:g}" if isinstance(bound, float) else f"must be {bounds[kind][0]}{bound}"
    elif kind == "literal_error":
        text = f"must be one of {ctx['expected']}"
    elif kind == "finite_number":
        text = "must be a finite number"
    elif kind == "extra_forbidden":
        text = "is not a known setting"
    elif kind in ("dict_type", "model_type") and isinstance(value, (int, float, str, bool)):
        text = "must be a mapping of settings (or null)"
    elif kind in _TYPE_NAMES:
        text = f"must be {_TYPE_NAMES[kind]}"
        if kind == "float_type" and isinstance(value, str) and _is_number(value):
            # YAML 1.1 reads `1e-6` (no dot) as a string; `1.0e-6` is a number.
            text += " (YAML reads an exponent without a dot as text: write e.g. 1.0e-6)"
    else:
        text = error["msg"].removeprefix("Value error, ")
    return f"{field} {text} (got {value!r})"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def annotation_problems(config_cls: type, values: dict[str, Any]) -> list[Problem]:
    """(field, message) for each value outside its field's annotated range or of the wrong type."""
    try:
        _fields_model(config_cls).model_validate(values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            # A block field (e.g. `peft: {r: 0}`): the message names the key inside it, `peft.r`.
            where = ".".join(str(p) for p in error["loc"] if not str(p).startswith(("function-", "typed-dict")))
            problems.append((field, _describe(where or field, error)))
        return problems
    return []


def field_problems(config_cls: type, overrides: dict[str, Any], owner: str) -> list[Problem]:
    """(field, message) for each unknown field of `overrides`, then for each value the config rejects."""
    valid = [f.name for f in dataclasses.fields(config_cls)]
    problems = [(key, f"unknown field for {owner}; valid fields: {', '.join(sorted(valid))}")
                for key in sorted(set(overrides) - set(valid))]
    known = {k: v for k, v in overrides.items() if k in valid}
    problems += annotation_problems(config_cls, known)
    if problems:
        return problems
    try:
        config_cls(**known)
    except ConfigError as exc:
        return exc.problems
    except ValueError as exc:  # a config class outside this scheme
        return [("", str(exc))]
    return []
