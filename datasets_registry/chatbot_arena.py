"""Chatbot Arena preferences (App. B): the 2023 conversations release and the 2024 55k release.

Both: multi-turn battles are removed (the two conversations diverge after the first turn but the user
rates the whole conversation) and ties are removed.
"""

from __future__ import annotations

import json
from typing import Any

from datasets_registry.core import preference_row
from datasets_registry.raw_files import require_fields, where
from datasets_registry.raw_sources import source_spec
from datasets_registry.spec import DataFormatError, DropRow, register


def _conversation(raw: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = raw[key]
    if hasattr(value, "tolist"):  # numpy arrays from parquet via pandas
        value = value.tolist()
    if not isinstance(value, list):
        raise DataFormatError(f"{where(raw)}: field {key!r} should be a list of messages, got {type(value).__name__}")
    return value


def curate_2023(raw: dict[str, Any]) -> dict[str, Any]:
    """lmsys/chatbot_arena_conversations: winner in {model_a, model_b, tie, tie (bothbad)}."""
    require_fields(raw, ["winner", "conversation_a", "conversation_b"], where(raw))
    conv_a, conv_b = _conversation(raw, "conversation_a"), _conversation(raw, "conversation_b")
    turns = raw.get("turn", sum(1 for m in conv_a if isinstance(m, dict) and m.get("role") == "user"))
    if turns != 1 or len(conv_a) != 2 or len(conv_b) != 2:
        raise DropRow("multi_turn")
    winner = raw["winner"]
    if isinstance(winner, str) and winner.startswith("tie"):
        raise DropRow("tie")
    if winner not in ("model_a", "model_b"):
        raise DropRow("invalid_winner")
    if [m.get("role") for m in conv_a] != ["user", "assistant"] or [m.get("role") for m in conv_b] != ["user", "assistant"]:
        raise DropRow("unexpected_roles")
    if conv_a[0].get("content") != conv_b[0].get("content"):
        raise DropRow("prompt_mismatch")
    win, lose = (conv_a, conv_b) if winner == "model_a" else (conv_b, conv_a)
    return preference_row("chatbot-arena-2023", [{"role": "user", "content": conv_a[0].get("content")}],
                          win[1].get("content"), lose[1].get("content"))


def _json_list(raw: dict[str, Any], key: str) -> list[Any]:
    try:
        value = json.loads(raw[key])
    except (TypeError, json.JSONDecodeError):
        raise DropRow("unparseable_json") from None
    if not isinstance(value, list):
        raise DropRow("unparseable_json")
    return value


def _flag(raw: dict[str, Any], key: str) -> int:
    try:
        return int(float(raw[key]))
    except (TypeError, ValueError):
        raise DropRow("invalid_winner") from None


def curate_2024(raw: dict[str, Any]) -> dict[str, Any]:
    """lmsys-arena-human-preference-55k: prompt/response_a/response_b are JSON lists (one item per turn)."""
    require_fields(raw, ["prompt", "response_a", "response_b", "winner_model_a", "winner_model_b", "winner_tie"],
                   where(raw))
    prompts, resp_a, resp_b = _json_list(raw, "prompt"), _json_list(raw, "response_a"), _json_list(raw, "response_b")
    if len(prompts) != 1 or len(resp_a) != 1 or len(resp_b) != 1:
        raise DropRow("multi_turn")
    a_wins, b_wins, tie = _flag(raw, "winner_model_a"), _flag(raw, "winner_model_b"), _flag(raw, "winner_tie")
    if tie == 1:
        raise DropRow("tie")
    if a_wins + b_wins != 1:
        raise DropRow("invalid_winner")
    chosen, rejected = (resp_a[0], resp_b[0]) if a_wins == 1 else (resp_b[0], resp_a[0])
    # null responses (the model errored) stay None: the malformed-row check drops them as empty turns
    return preference_row("chatbot-arena-2024", [{"role": "user", "content": prompts[0]}], chosen, rejected)


register(source_spec(
    name="chatbot-arena-2023",
    kind="preference",
    source_type="human",
    group="table1",
    description="Chatbot Arena conversations (2023), single-turn battles without ties.",
    curate=curate_2023,
    hub_id="lmsys/chatbot_arena_conversations",
    split="train",
    # The id a public project pins this dataset to (found in the stored code corpus); the dataset has had one
    # data release (2023).
    revision="1b6335d42a1d2c7e34870c905d03ab964f7f2bd8",
    license="prompts CC-BY-4.0, outputs CC-BY-NC-4.0",
    paper_size=20_465,
    expected_size=20_465,
    rule="single-turn battles only (turn == 1, one user and one assistant message per side), ties "
         "(tie, tie (bothbad)) removed; chosen = the winner's reply",
    rule_source="App. B (Chatbot Arena Conversations); the authors' script has no branch for it (released split "
                "chatbot_arena_2023, 20,465 rows)",
    released_as="tulu25-chatbot_arena_2023",
    local_files=("lmsys/chatbot_arena_conversations/data/*.parquet", "lmsys/chatbot_arena_conversations/*.jsonl*",
                 "chatbot_arena_conversations/*.jsonl*"),
    how_to_get="accept the terms of the gated hub repo lmsys/chatbot_arena_conversations, then download "
               "data/*.parquet into <data dir>/lmsys/chatbot_arena_conversations/data/",
))

register(source_spec(
    name="chatbot-arena-2024",
    kind="preference",
    source_type="human",
    group="table1",
    description="LMSYS arena-human-preference-55k (2024), single-turn battles without ties.",
    curate=curate_2024,
    hub_id="lmsys/lmsys-arena-human-preference-55k",
    split="train",
    # "Update README.md", 2024-05-17, the last commit listed on the hub (the repo now lives at
    # lmarena-ai/arena-human-preference-55k; the old id redirects).
    revision="18c298340948c0e7f7727399fd459cca6ce0ca6f",
    hub_files=("train.csv",),
    license="Apache-2.0",
    paper_size=34_269,
    expected_size=34_269,
    rule="single-turn battles only (one prompt and one response per side in the JSON lists), ties removed; "
         "chosen = the winner's response",
    rule_source="App. B (Chatbot Arena Preferences); the authors' script has no branch for it (released split "
                "chatbot_arena_2024, 34,269 rows)",
    released_as="tulu25-chatbot_arena_2024",
    local_files=("lmsys/lmsys-arena-human-preference-55k/train.csv", "lmarena-ai/arena-human-preference-55k/train.csv",
                 "preferences/arena_55k/*.csv"),
    how_to_get="download train.csv of the hub repo lmsys/lmsys-arena-human-preference-55k into "
               "<data dir>/lmsys/lmsys-arena-human-preference-55k/",
))
