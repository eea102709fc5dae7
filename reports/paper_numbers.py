"""The paper's published numbers (Ivison et al. 2024, Tables 1-5, 7, 11-13), read from
`reports/paper_numbers.yaml`, and the arithmetic that checks them.

    from reports.paper_numbers import paper_numbers
    t2 = paper_numbers().table("table2")
    t2.find({"algorithm.name": "ppo", "dataset.name": "ultrafeedback-fg"}).value("overall")   # 62.2
    t2.match(cell_params)   # the row whose key is a subset of a cell's MLflow params, or None

Rows are found by their `key`: settings named as a cell's MLflow params name them (`algorithm.name`,
`dataset.name`, `reward_model.base`, `reward_model.dataset.name`, `prompts.name`, `model`) with values
in this project's registry names, so a report builder can put the paper's number beside a cell with
the same settings. `consistency_checks()` recomputes every printed average from its printed parts (and
compares the experiments printed in two tables); the YAML's `inconsistencies` list documents each check
that does not hold, and tests/test_paper_numbers.py keeps the two in step.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PAPER_NUMBERS_FILE = Path(__file__).with_name("paper_numbers.yaml")
ROW_KINDS = ("data", "baseline", "reference", "delta")
# A printed number and its recomputation differ by at most this much when only rounding separates them
# (the brief for the transcription check; see `consistency_checks` for the rounding argument).
TOLERANCE = 0.05


class PaperNumbersError(ValueError):
    """The YAML is malformed; the message names the table, row and field."""


@dataclass(frozen=True)
class PaperRow:
    table: str
    label: str
    kind: str
    key: dict[str, Any]
    values: dict[str, float | None]  # column metric -> printed value (None where the paper prints "-")
    source: str | None = None  # Table 1's source type (web / human / synthetic)

    def value(self, column: str) -> float | None:
        if column not in self.values:
            raise KeyError(f"{self.table} has no column {column!r}; columns: {', '.join(self.values)}")
        return self.values[column]

    def matches(self, query: Mapping[str, Any]) -> bool:
        """True when every field of `query` is in this row's key with an equal value (compared as text,
        so a cell's string param "64" matches the key's 64)."""
        return all(k in self.key and str(self.key[k]) == str(v) for k, v in query.items())

    def key_within(self, params: Mapping[str, Any]) -> bool:
        """True when this row's whole key is among `params` (a cell's params) with equal values."""
        return bool(self.key) and all(k in params and str(params[k]) == str(v) for k, v in self.key.items())


@dataclass(frozen=True)
class PaperTable:
    name: str
    title: str
    setting: str
    model_size: str
    columns: tuple[str, ...]
    rows: tuple[PaperRow, ...]

    def row(self, label: str) -> PaperRow:
        for r in self.rows:
            if r.label == label:
                return r
        raise KeyError(f"{self.name} has no row {label!r}; rows: {', '.join(r.label for r in self.rows)}")

    def find(self, query: Mapping[str, Any]) -> PaperRow:
        """The one row whose key has every field of `query`; KeyError when none or several do."""
        hits = self.find_all(query)
        if len(hits) != 1:
            raise KeyError(f"{self.name}: {len(hits)} rows match {dict(query)} (labels: {[r.label for r in hits]})")
        return hits[0]

    def find_all(self, query: Mapping[str, Any]) -> list[PaperRow]:
        return [r for r in self.rows if r.matches(query)]

    def match(self, params: Mapping[str, Any]) -> PaperRow | None:
        """The row for a cell: the most specific row whose whole key is within the cell's params
        (None when no row's settings are all there, e.g. a cell of a setting the paper never ran)."""
        hits = [r for r in self.rows if r.key_within(params)]
        return max(hits, key=lambda r: len(r.key)) if hits else None

    @property
    def baseline(self) -> PaperRow | None:
        return next((r for r in self.rows if r.kind == "baseline"), None)


@dataclass(frozen=True)
class Inconsistency:
    table: str
    row: str
    column: str
    printed: float
    recomputed: float
    note: str


@dataclass(frozen=True)
class Note:
    """A caveat beside a printed number that no arithmetic can check (e.g. a suspected metric mix-up)."""

    table: str
    row: str
    column: str
    note: str


@dataclass(frozen=True)
class PaperNumbers:
    source: str
    policy_model: str
    tables: dict[str, PaperTable]
    inconsistencies: tuple[Inconsistency, ...] = field(default=())
    notes: tuple[Note, ...] = field(default=())

    def table(self, name: str) -> PaperTable:
        if name not in self.tables:
            raise KeyError(f"no paper table {name!r}; transcribed: {', '.join(self.tables)}")
        return self.tables[name]

    def inconsistency(self, table: str, row: str, column: str) -> Inconsistency | None:
        return next((i for i in self.inconsistencies
                     if (i.table, i.row, i.column) == (table, row, column)), None)

    def caveats(self, table: str) -> list[str]:
        """One line per documented inconsistency or note of a table, for a report's notes."""
        lines = [f"Paper, {i.row} / {i.column}: printed {i.printed:g}, its parts give {i.recomputed:g}. "
                 f"{i.note}" for i in self.inconsistencies if i.table == table]
        return lines + [f"Paper, {n.row} / {n.column}: {n.note}" for n in self.notes if n.table == table]


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PaperNumbersError(f"{where}: expected a number or null, got {value!r}")
    return float(value)


def parse(raw: Mapping[str, Any], origin: str = str(PAPER_NUMBERS_FILE)) -> PaperNumbers:
    """Validate and build; every error names the table, row and field."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("tables"), Mapping):
        raise PaperNumbersError(f"{origin}: expected a mapping with a `tables` mapping")
    tables: dict[str, PaperTable] = {}
    for name, spec in raw["tables"].items():
        where = f"{origin}: tables.{name}"
        if not isinstance(spec, Mapping):
            raise PaperNumbersError(f"{where}: expected a mapping")
        for required in ("title", "columns", "rows"):
            if required not in spec:
                raise PaperNumbersError(f"{where}: missing `{required}`")
        columns = tuple(spec["columns"])
        if len(set(columns)) != len(columns):
            raise PaperNumbersError(f"{where}.columns: duplicate column names")
        rows = []
        for i, row in enumerate(spec["rows"]):
            rwhere = f"{where}.rows[{i}] ({row.get('label', '?') if isinstance(row, Mapping) else '?'})"
            if not isinstance(row, Mapping) or "label" not in row or "values" not in row:
                raise PaperNumbersError(f"{rwhere}: a row needs `label` and `values`")
            kind = row.get("kind", "data")
            if kind not in ROW_KINDS:
                raise PaperNumbersError(f"{rwhere}.kind: {kind!r} is not one of {', '.join(ROW_KINDS)}")
            values = row["values"]
            if not isinstance(values, list) or len(values) != len(columns):
                raise PaperNumbersError(f"{rwhere}.values: {len(values) if isinstance(values, list) else '?'} "
                                        f"values for {len(columns)} columns ({', '.join(columns)})")
            key = row.get("key") or {}
            if not isinstance(key, Mapping):
                raise PaperNumbersError(f"{rwhere}.key: expected a mapping")
            rows.append(PaperRow(
                table=name, label=str(row["label"]), kind=kind, key=dict(key), source=row.get("source"),
                values={c: _number(v, f"{rwhere}.values[{c}]") for c, v in zip(columns, values)}))
        labels = [r.label for r in rows]
        if len(set(labels)) != len(labels):
            raise PaperNumbersError(f"{where}.rows: duplicate labels")
        tables[name] = PaperTable(name, str(spec["title"]), str(spec.get("setting", "")),
                                  str(spec.get("model_size", "")), columns, tuple(rows))
    found = []
    for i, item in enumerate(raw.get("inconsistencies") or []):
        iwhere = f"{origin}: inconsistencies[{i}]"
        try:
            entry = Inconsistency(str(item["table"]), str(item["row"]), str(item["column"]),
                                  float(item["printed"]), float(item["recomputed"]), str(item["note"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise PaperNumbersError(f"{iwhere}: needs table, row, column, printed, recomputed, note ({exc})") from exc
        try:
            printed = tables[entry.table].row(entry.row).value(entry.column)
        except KeyError as exc:
            raise PaperNumbersError(f"{iwhere}: {exc}") from exc
        if printed != entry.printed:
            raise PaperNumbersError(f"{iwhere}: printed {entry.printed} but the table holds {printed}")
        found.append(entry)
    notes = []
    for i, item in enumerate(raw.get("notes") or []):
        nwhere = f"{origin}: notes[{i}]"
        try:
            note = Note(str(item["table"]), str(item["row"]), str(item["column"]), str(item["note"]))
            tables[note.table].row(note.row).value(note.column)
        except (KeyError, TypeError) as exc:
            raise PaperNumbersError(f"{nwhere}: needs an existing table, row and column, and a note ({exc})") from exc
        notes.append(note)
    return PaperNumbers(str(raw.get("source", "")), str(raw.get("policy_model", "")), tables, tuple(found),
                        tuple(notes))


@functools.cache
def paper_numbers(path: str | None = None) -> PaperNumbers:
    """The transcription (cached); `path` for a copy elsewhere (tests)."""
    file = Path(path) if path else PAPER_NUMBERS_FILE
    return parse(yaml.safe_load(file.read_text()), str(file))


# ------------------------------------------------------------------------------------------------
# Recomputing the printed averages
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    """One printed number against what its printed parts give."""

    table: str
    row: str
    column: str
    printed: float
    recomputed: float
    rule: str

    @property
    def difference(self) -> float:
        return self.printed - self.recomputed

    @property
    def holds(self) -> bool:
        # The 1e-9 absorbs binary floating point: 57.65 printed as 57.7 is exactly 0.05 off.
        return abs(self.difference) <= TOLERANCE + 1e-9


def _categories() -> tuple[list[str], dict[str, str]]:
    from harness.evaluation.base import CATEGORIES
    from harness.evaluation.paper_suite import PAPER11_CATEGORIES

    return list(CATEGORIES), dict(PAPER11_CATEGORIES)


def category_mean(task_scores: Mapping[str, float]) -> float:
    """The paper's aggregate over benchmarks: mean over categories of the mean of each category's
    benchmarks (App. H for best-of-N; Sec. 2.2 for the suite)."""
    _, task_category = _categories()
    by_category: dict[str, list[float]] = {}
    for task, score in task_scores.items():
        by_category.setdefault(task_category[task], []).append(score)
    return statistics.fmean(statistics.fmean(v) for v in by_category.values())


def _rm_key(row: PaperRow) -> dict[str, Any]:
    return {k: row.key[k] for k in ("reward_model.base", "reward_model.dataset.name")}


def consistency_checks(numbers: PaperNumbers | None = None) -> list[Check]:
    """Every printed number that other printed numbers determine.

    Why 0.05 is the bar: a printed average P rounds the true one, |P - true| <= 0.05, and the mean of
    printed parts also moves by at most 0.05 from the mean of the true parts, so two honest numbers can
    differ by up to 0.1. A difference in (0.05, 0.1] is therefore listed with "rounding" in its note,
    a larger one is a real inconsistency of the paper.
    """
    numbers = numbers or paper_numbers()
    categories, _ = _categories()
    cat_cols = [f"category/{c}" for c in categories]
    checks: list[Check] = []

    # Overall = mean of the six categories, wherever all six are printed.
    for name in ("table1", "table2", "table5", "table7"):
        for row in numbers.table(name).rows:
            parts = [row.value(c) for c in cat_cols]
            if row.kind != "delta" and row.value("overall") is not None and None not in parts:
                checks.append(Check(name, row.label, "overall", row.value("overall"),  # type: ignore[arg-type]
                                    statistics.fmean(parts), "mean of the six categories"))  # type: ignore[arg-type]

    # Table 2's Avg. delta row = mean over datasets of PPO - DPO.
    t2 = numbers.table("table2")
    delta_row = next(r for r in t2.rows if r.kind == "delta")
    datasets = dict.fromkeys(r.key["dataset.name"] for r in t2.rows if r.key.get("algorithm.name") == "dpo")
    pairs = [(t2.find({"algorithm.name": "dpo", "dataset.name": d}), t2.find({"algorithm.name": "ppo", "dataset.name": d}))
             for d in datasets]
    for column in t2.columns:
        diffs = [ppo.value(column) - dpo.value(column) for dpo, ppo in pairs]  # type: ignore[operator]
        checks.append(Check("table2", delta_row.label, column, delta_row.value(column),  # type: ignore[arg-type]
                            statistics.fmean(diffs), "mean over datasets of PPO - DPO"))

    # Table 3's best-of-N average and its delta over SFT, from Table 12's benchmarks.
    t3, t12 = numbers.table("table3"), numbers.table("table12")
    tasks = [c.removesuffix("/score") for c in t12.columns]
    sft = t12.baseline
    sft_mean = category_mean({t: sft.value(f"{t}/score") for t in tasks})  # type: ignore[union-attr,misc]
    for row in t3.rows:
        bon = t12.find(_rm_key(row))
        bon_mean = category_mean({t: bon.value(f"{t}/score") for t in tasks})  # type: ignore[misc]
        checks.append(Check("table3", row.label, "bon/average", row.value("bon/average"),  # type: ignore[arg-type]
                            bon_mean, "category mean of the Table 12 row"))
        checks.append(Check("table3", row.label, "bon/delta_over_sft", row.value("bon/delta_over_sft"),  # type: ignore[arg-type]
                            bon_mean - sft_mean, "category mean of the Table 12 row - that of its SFT row"))

    # Table 13's score = weighted mean of the sections (prior sets 0.5).
    from harness.reward_model import REWARDBENCH_SECTION_WEIGHTS

    t13 = numbers.table("table13")
    for row in t13.rows:
        total = sum(w * row.value(f"rewardbench/{s}") for s, w in REWARDBENCH_SECTION_WEIGHTS.items())  # type: ignore[operator]
        checks.append(Check("table13", row.label, "rewardbench/score", row.value("rewardbench/score"),  # type: ignore[arg-type]
                            total / sum(REWARDBENCH_SECTION_WEIGHTS.values()),
                            "weighted section mean (prior sets 0.5)"))

    # Table 11's relative columns from (B, b, r, g) against the first row, for one epoch of N prompts.
    t11 = numbers.table("table11")
    first = t11.rows[0]

    def shape(row: PaperRow) -> tuple[float, float, float, float]:
        return tuple(row.value(f"algorithm.{k}") for k in (  # type: ignore[return-value]
            "prompt_batch_size", "minibatch_size", "rollouts_per_prompt", "gradient_accumulation_steps"))

    _, b0, r0, g0 = shape(first)
    for row in t11.rows:
        _, b, r, g = shape(row)
        relative = {"relative/training_examples": (r / r0, "rollouts per prompt r"),
                    "relative/gradient_batch": (b * g / (b0 * g0), "gradient batch b*g"),
                    "relative/gradient_updates": ((r / (b * g)) / (r0 / (b0 * g0)), "updates = N*r/(b*g)")}
        for column, (value, rule) in relative.items():
            checks.append(Check("table11", row.label, column, row.value(column), value, rule))  # type: ignore[arg-type]

    # The same experiment printed in two tables.
    tulu, llama = {"model": "allenai/tulu-2-13b"}, {"model": "meta-llama/Llama-2-13b-hf"}
    uf_dpo = {"algorithm.name": "dpo", "dataset.name": "ultrafeedback-fg"}
    uf_ppo = {"algorithm.name": "ppo", "dataset.name": "ultrafeedback-fg"}
    uf_prompts, remix = {"prompts.name": "prompts-ultrafeedback"}, {"prompts.name": "prompts-remix"}
    same: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = [
        ("table1", uf_dpo, "table2", uf_dpo),
        ("table1", {"dataset.name": "chatbot-arena-2023"}, "table2", {"algorithm.name": "dpo", "dataset.name": "chatbot-arena-2023"}),
        ("table1", uf_dpo, "table5", uf_dpo),
        ("table1", uf_dpo, "table7", uf_dpo),
        ("table2", uf_ppo, "table5", {"reward_model.base": "allenai/tulu-2-13b"}),
        ("table2", uf_ppo, "table11", {"algorithm.prompt_batch_size": 64}),
        ("table4", {"reward_model.base": "allenai/tulu-2-70b", "reward_model.dataset.name": "ultrafeedback-fg", **uf_prompts},
         "table5", {"reward_model.base": "allenai/tulu-2-70b", **uf_prompts}),
        ("table4", {"reward_model.base": "allenai/tulu-2-70b", "reward_model.dataset.name": "ultrafeedback-fg", **remix},
         "table5", remix),
        ("table4", tulu, "table12", tulu),
    ]
    for rm_base in ("allenai/tulu-2-13b", "allenai/tulu-2-70b"):
        for rm_data in ("ultrafeedback-fg", "rm-mix"):
            rm = {"reward_model.base": rm_base, "reward_model.dataset.name": rm_data}
            same += [("table3", rm, "table4", {**rm, **uf_prompts}), ("table3", rm, "table13", rm)]
    same += [("table1", tulu, name, tulu) for name in ("table2", "table4", "table5", "table7", "table12")]
    same += [("table1", llama, name, llama) for name in ("table2", "table5", "table7")]
    for ta, ka, tb, kb in same:
        a, b = numbers.table(ta).find(ka), numbers.table(tb).find(kb)
        for column in numbers.table(tb).columns:
            if column in a.values and a.value(column) is not None and b.value(column) is not None:
                checks.append(Check(tb, b.label, column, b.value(column), a.value(column),  # type: ignore[arg-type]
                                    f"same experiment as {ta} row {a.label!r}"))
    return checks
