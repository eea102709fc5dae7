"""Anthropic-style transcripts ("\n\nHuman: ...\n\nAssistant: ...") as chat messages.

Used by HH-RLHF (chosen / rejected are whole transcripts) and Nectar (the prompt is a transcript
ending in an empty "Assistant:" turn)."""

from __future__ import annotations

import re

from datasets_registry.spec import DropRow

_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")
_ROLE = {"Human": "user", "Assistant": "assistant"}


def parse_transcript(text: str) -> list[dict[str, str]]:
    """Messages of a transcript; raises DropRow('malformed_transcript') when it does not start with a turn."""
    parts = _TURN.split(text)
    # parts = [preamble, role, content, role, content, ...]
    if parts[0].strip():
        raise DropRow("malformed_transcript")
    if len(parts) < 3:
        raise DropRow("malformed_transcript")
    return [{"role": _ROLE[role], "content": content.strip()}
            for role, content in zip(parts[1::2], parts[2::2])]


def check_alternating(messages: list[dict[str, str]]) -> None:
    """Chat templates (and the reward model's formatting) need user/assistant alternation, user first."""
    for index, message in enumerate(messages):
        expected = "user" if index % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise DropRow("non_alternating_turns")
