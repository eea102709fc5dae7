"""The paper's published numbers as data: the loader, the registry names, and the transcription check
(every printed average recomputes from its printed parts, except the documented inconsistencies)."""

from __future__ import annotations

import copy

import pytest
import yaml

from reports.paper_numbers import (
    PAPER_NUMBERS_FILE,
    TOLERANCE,
    PaperNumbersError,
    category_mean,
    consistency_checks,
    paper_numbers,
    parse,
)


def raw() -> dict:
    return yaml.safe_load(PAPER_NUMBERS_FILE.read_text())


def test_loader_returns_the_printed_numbers():
    numbers = paper_numbers()
    assert set(numbers.tables) == {"table1", "table2", "table3", "table4", "table5", "table7", "table11",
                                   "table12", "table13"}
    t1 = numbers.table("table1")
    uf = t1.find({"dataset.name": "ultrafeedback-fg"})
    assert (uf.label, uf.source) == ("UltraF. (fine-grained)", "synthetic")
    assert uf.values == {"data/kept_rows": 60908.0, "category/factuality": 55.3, "category/reasoning": 50.9,
                         "category/coding": 45.9, "category/truthfulness": 69.3, "category/safety": 91.9,
                         "category/instruction_following": 52.8, "overall": 61.0}
    assert t1.row("Llama 2 base").value("overall") is None  # printed "-"
    assert t1.baseline.value("overall") == 56.8
    assert t1.find({"dataset.name": "chatbot-arena-2024"}).value("category/safety") == 58.1

    t2 = numbers.table("table2")
    ppo = t2.find({"algorithm.name": "ppo", "dataset.name": "ultrafeedback-fg"})
    assert ppo.value("overall") == 62.2
    assert ppo.key["reward_model.dataset.name"] == "ultrafeedback-fg"
    assert t2.row("Avg. Δ b/w PPO & DPO").value("category/coding") == 2.9

    assert numbers.table("table3").row("70B Mix RM").value("alpaca_eval2/score") == 31.6
    assert numbers.table("table4").find({"reward_model.base": "allenai/tulu-2-13b",
                                         "reward_model.dataset.name": "rm-mix",
                                         "prompts.name": "prompts-remix"}).value("category/coding") == 43.8
    assert numbers.table("table5").row("Llama 2 Chat 13B").value("category/truthfulness") == 88.0
    assert numbers.table("table7").find({"dataset.name": "ultrafeedback-src-sharegpt"}).value("category/safety") == 87.5
    assert [r.value("train/hours") for r in numbers.table("table11").rows] == [60, 12, 16, 32]
    assert numbers.table("table12").baseline.value("alpaca_eval2/score") == 5.0
    assert numbers.table("table13").row("13B Mix RM").value("rewardbench/score") == 79.8


def test_a_cell_finds_its_paper_row_by_its_params():
    t2 = paper_numbers().table("table2")
    cell = {"algorithm.name": "ppo", "dataset.name": "hh-rlhf-60k", "reward_model.base": "allenai/tulu-2-13b",
            "reward_model.dataset.name": "hh-rlhf-60k", "seed": "1", "algorithm.kl_coef": "0.05"}
    assert t2.match(cell).label == "HH-RLHF / PPO"
    # the DPO row's key is within these params too, but the PPO row's is more specific... and a cell of
    # another algorithm matches nothing
    assert t2.match({"algorithm.name": "dpo", "dataset.name": "hh-rlhf-60k"}).label == "HH-RLHF / DPO"
    assert t2.match({"algorithm.name": "grpo", "dataset.name": "hh-rlhf-60k"}) is None
    t11 = paper_numbers().table("table11")
    params = {k: str(v) for k, v in t11.row("256 / 64 / 4 / 4").key.items()}
    assert t11.match(params).value("train/hours") == 32


def test_keys_use_this_projects_registry_names():
    from datasets_registry import DATASETS
    from harness.evaluation import TASKS

    numbers = paper_numbers()
    for table in numbers.tables.values():
        for column in table.columns:
            if column.endswith("/score") and not column.startswith(("rewardbench/", "bon/")):
                assert column.removesuffix("/score") in TASKS, f"{table.name}: {column}"
        for row in table.rows:
            for field in ("dataset.name", "reward_model.dataset.name", "prompts.name"):
                if field in row.key:
                    assert row.key[field] in DATASETS, f"{table.name} {row.label}: {row.key[field]}"


def test_every_printed_average_recomputes_except_the_documented_inconsistencies():
    numbers = paper_numbers()
    checks = consistency_checks(numbers)
    assert len(checks) > 150  # every category average, delta, cross-table repeat
    failing = {(c.table, c.row, c.column): c for c in checks if not c.holds}
    documented = {(i.table, i.row, i.column): i for i in numbers.inconsistencies}
    assert set(failing) == set(documented), (
        f"undocumented: {sorted(set(failing) - set(documented))}; no longer off: {sorted(set(documented) - set(failing))}")
    for key, entry in documented.items():
        assert entry.recomputed == pytest.approx(failing[key].recomputed, abs=0.01), key
        # A gap rounding alone can make (<= 0.1) is labelled as such; a larger one is the paper's error.
        assert ("Rounding" in entry.note) == (abs(failing[key].difference) <= 2 * TOLERANCE), key
    # The three the brief names are among them.
    assert ("table3", "70B Mix RM", "bon/average") in documented
    assert ("table11", "64 / 64 / 1 / 1", "overall") in documented
    assert any(n.row == "Tulu 2 13B (SFT)" and n.column == "alpaca_eval2/score" for n in numbers.notes)


def test_recomputation_rules_on_known_rows():
    numbers = paper_numbers()
    checks = {(c.table, c.row, c.column): c for c in consistency_checks(numbers) if not c.rule.startswith("same")}
    # Table 2's Avg. delta of coding: (4.0 + 0.5 + 1.7 + 6.6 + 1.8) / 5
    assert checks[("table2", "Avg. Δ b/w PPO & DPO", "category/coding")].recomputed == pytest.approx(2.92)
    # Table 13: weighted mean with prior sets at 0.5
    assert checks[("table13", "13B Mix RM", "rewardbench/score")].recomputed == pytest.approx(
        (97.2 + 61.2 + 85.9 + 78.1 + 0.5 * 73.7) / 4.5)
    # Best-of-N: categories first (reasoning 2, coding 2, instruction following 3, safety 1), then their mean
    assert category_mean({"gsm8k": 60.0, "bbh": 40.0, "xstest": 90.0}) == pytest.approx(70.0)


def test_malformed_transcription_fails_naming_table_row_and_field():
    bad = copy.deepcopy(raw())
    bad["tables"]["table2"]["rows"][3]["values"].pop()
    with pytest.raises(PaperNumbersError, match=r"table2\.rows\[3\] \(StackExchange / PPO\)\.values: 6 values for 7"):
        parse(bad, "copy.yaml")
    bad = copy.deepcopy(raw())
    bad["tables"]["table13"]["rows"][0]["values"][1] = "49.3"
    with pytest.raises(PaperNumbersError, match=r"table13\.rows\[0\].*rewardbench/chat_hard"):
        parse(bad, "copy.yaml")
    bad = copy.deepcopy(raw())
    bad["inconsistencies"][0]["printed"] = 61.6
    with pytest.raises(PaperNumbersError, match=r"inconsistencies\[0\]: printed 61.6 but the table holds 60.6"):
        parse(bad, "copy.yaml")
    bad = copy.deepcopy(raw())
    bad["notes"][0]["row"] = "no such row"
    with pytest.raises(PaperNumbersError, match=r"notes\[0\]"):
        parse(bad, "copy.yaml")
