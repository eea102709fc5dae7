"""Mined math and code prompts (App. J): tag unlabelled prompts with an LLM using the task-tag prompt of
Fig. 5, then keep prompts tagged Coding (resp. Math) with as few other tags as possible, dropping any
tagged Unclear or Multilingual.

The tagger is any OpenAI-compatible chat endpoint (`openai_complete`), or any `complete(messages) -> str`
callable. The prompt is Fig. 5's, verbatim. Every answer is cached in SQLite
(`results/tagging/prompt_tags.sqlite`, keyed by tagging template, tagger model and prompt id) before it is used, so a rerun makes no new calls; unparseable answers are cached too and
counted as drops (`tag_parse_failed`), never silently retried.

    harness data tag-prompts --pool prompts-ultrafeedback --pool prompts-wildchat \\
        --model tulu-2-70b --base-url http://host:8000/v1 --api-key-env TAGGER_KEY
    harness data prepare prompts-mined-math
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets_registry.core import row_rng
from datasets_registry.prompts import MINED_PER_DOMAIN, prompt_row
from datasets_registry.spec import DatasetSpec, DropRow, register

Complete = Callable[[list[dict[str, str]]], str]

TAGS = ("Coding", "Math", "Asking for Advice", "Brainstorming", "Classification", "Closed Question Answering",
        "Creative Writing", "Extraction", "Inhabiting a Character/Persona", "Open Question Answering",
        "Rewriting", "Summarization", "Multilingual", "Unclear")
EXCLUDED = ("Unclear", "Multilingual")

# Fig. 5 of the paper, verbatim as printed (its line breaks inside the long tag comments included);
# `{$instruction}` is where the unlabelled prompt goes.
TAG_PROMPT = """# Instruction

Please label the task tags for the user query.

## User Query
'''
{$instruction}
'''

## Tagging the user input

### Task Tags

all_task_tags = [
    "Coding", # Users seek help with writing, reviewing, or fixing code in programming.
    "Math", # Queries related to mathematical concepts, problems, and calculations.
    "Asking for Advice", # Users seek recommendations, suggestions,
    or advice on various topics.
    "Brainstorming", # Involves generating ideas, creative thinking,
    or exploring possibilities.
    "Classification", # Queries require categorizing or organizing information into
    groups or classes.
    "Closed Question Answering", # Users ask questions that require a specific
    answer or a short response.
    "Creative Writing", # Users seek assistance with crafting stories, poems,
    or other creative texts.
    "Extraction", # Involves extracting specific information or details from
    a larger body of text.
    "Inhabiting a Character/Persona", # Users engage in scenarios requiring
    the model to adopt a character or persona.
    "Open Question Answering", # Users ask questions that require detailed
    or elaborate responses.
    "Rewriting", # Users ask for help in rephrasing, summarizing, or rewriting text.
    "Summarization", # Involves condensing information, text, or content
    into a shorter form.
    "Multilingual", # Queries involving non-English natural languages.
    "Unclear", # Queries that are ambiguous, vague, or unclear.
]

## Output Format

Note that you can only select the most relevant task types.
Please use the multilingual tag if the query is in a language other than English.
Add the unclear tag if there is no obvious question to answer in the prompt.
Now, please output your tags below in a json format by filling in the placeholders in []:
'''
{
    "tags": ["[tag 1]", "[tag 2]", ... ]
}
'''
Do not add any additional characters."""
TAG_PLACEHOLDER = "{$instruction}"

# Names the template in both caches' keys (this module's tags table and the judge client's request cache):
# v1 was a paraphrase of Fig. 5; its answers are not reused for the verbatim prompt.
TAG_TEMPLATE_ID = "prompt-task-tags-fig5/v2-verbatim"
_CANONICAL = {tag.lower(): tag for tag in TAGS}
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def tag_messages(prompt_text: str) -> list[dict[str, str]]:
    # str.replace, not str.format: the template's JSON braces are literal.
    return [{"role": "user", "content": TAG_PROMPT.replace(TAG_PLACEHOLDER, prompt_text)}]


def parse_tags(response: str) -> list[str] | None:
    """Tags from the tagger's answer (JSON, possibly fenced or quoted); None when it does not parse."""
    match = _JSON_OBJECT.search(response or "")
    if not match:
        return None
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    tags = data.get("tags") if isinstance(data, dict) else None
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        return None
    # Unknown tags are kept (they count as "other tags"); known ones get their canonical spelling.
    return sorted({_CANONICAL.get(t.strip().lower(), t.strip()) for t in tags if t.strip()})


def cache_path() -> Path:
    from harness.paths import results_dir

    return results_dir() / "tagging" / "prompt_tags.sqlite"


def _connect(path: Path | None = None) -> sqlite3.Connection:
    path = path or cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    # `task_tags` replaces the template-less `tags` table of earlier versions (left untouched, never read):
    # answers to another template are other data.
    conn.execute("""CREATE TABLE IF NOT EXISTS task_tags (
        template TEXT NOT NULL, model TEXT NOT NULL, prompt_id TEXT NOT NULL, pool TEXT NOT NULL,
        prompt TEXT NOT NULL, response TEXT NOT NULL, tags TEXT, created REAL NOT NULL,
        PRIMARY KEY (template, model, prompt_id))""")
    return conn


@dataclass
class TagStats:
    called: int = 0
    cached: int = 0
    parse_failed: int = 0


def tag_prompts(rows: Iterable[dict[str, Any]], complete: Complete, *, model: str, pool: str,
                limit: int | None = None, path: Path | None = None) -> TagStats:
    """Tag prompt rows (the prompt-set schema) with `complete`; cached answers are reused, not re-asked."""
    stats = TagStats()
    conn = _connect(path)
    try:
        for index, row in enumerate(rows):
            if limit is not None and index >= limit:
                break
            text = row["prompt"][-1]["content"]
            if conn.execute("SELECT 1 FROM task_tags WHERE template = ? AND model = ? AND prompt_id = ?",
                            (TAG_TEMPLATE_ID, model, row["id"])).fetchone():
                stats.cached += 1
                continue
            response = complete(tag_messages(text))
            tags = parse_tags(response)
            stats.called += 1
            stats.parse_failed += tags is None
            conn.execute("INSERT INTO task_tags VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (TAG_TEMPLATE_ID, model, row["id"], pool, text, response,
                          None if tags is None else json.dumps(tags), time.time()))
            if stats.called % 50 == 0:
                conn.commit()  # a crash loses at most 50 paid calls
        conn.commit()
    finally:
        conn.close()
    return stats


def cached_tags(path: Path | None = None, model: str | None = None) -> list[dict[str, Any]]:
    """One entry per prompt (the first tagger model in name order when several tagged it)."""
    path = path or cache_path()
    if not path.exists():
        return []
    conn = _connect(path)
    try:
        query = "SELECT model, prompt_id, pool, prompt, tags FROM task_tags WHERE template = ?"
        params: tuple[Any, ...] = (TAG_TEMPLATE_ID,)
        if model:
            query, params = query + " AND model = ?", (*params, model)
        records = conn.execute(query + " ORDER BY prompt_id, model", params).fetchall()
    finally:
        conn.close()
    out, seen = [], set()
    for tagger, prompt_id, pool, prompt, tags in records:
        if prompt_id in seen:
            continue
        seen.add(prompt_id)
        out.append({"model": tagger, "prompt_id": prompt_id, "pool": pool, "prompt": prompt,
                    "tags": None if tags is None else json.loads(tags)})
    return out


def select_mined(records: list[dict[str, Any]], domain: str, quota: int) -> Iterator[Any]:
    """Rows tagged `domain`, fewest tags first, at most `quota`; every other record is a counted drop."""
    candidates = []
    for record in records:
        tags = record["tags"]
        if tags is None:
            yield DropRow("tag_parse_failed")
        elif "Unclear" in tags:
            yield DropRow("unclear")
        elif "Multilingual" in tags:
            yield DropRow("multilingual")
        elif domain not in tags:
            yield DropRow(f"not_{domain.lower()}")
        else:
            candidates.append(record)
    # "as few other tags as possible": fewest tags first; among equals a fixed pseudo-random order.
    candidates.sort(key=lambda r: (len(r["tags"]), row_rng("mined", domain, r["prompt_id"])))
    for rank, record in enumerate(candidates):
        yield record if rank < quota else DropRow("over_quota")


def _mined_spec(name: str, domain: str, label: str) -> DatasetSpec:
    def load_raw(seed: int) -> Iterator[Any]:
        del seed
        return select_mined(cached_tags(model=os.environ.get("HARNESS_TAGGER_MODEL") or None), domain,
                            MINED_PER_DOMAIN)

    def curate(record: dict[str, Any]) -> dict[str, Any]:
        return prompt_row(name, record["prompt"], pool=record["pool"], tags=record["tags"])

    spec = DatasetSpec(
        name=name, kind="prompts", source_type="mixed", group="prompts",
        description=f"Mined {label} prompts (App. J): tagged {domain}, fewest other tags, no Unclear/Multilingual; 20k.",
        load_raw=load_raw, curate=curate, paper_size=MINED_PER_DOMAIN, expected_size=MINED_PER_DOMAIN,
        license="per pool",
        rule=f"prompts tagged {domain} with the Fig. 5 prompt (verbatim), fewest tags first, Unclear / Multilingual "
             "dropped, at most 20,000",
        rule_source="App. J and Fig. 5; §3.4 (20K math and 20K code prompts)",
        how_to_get="run `harness data tag-prompts --pool prompts-ultrafeedback --pool prompts-wildchat "
                   "--pool prompts-lmsys-chat-1m --model M --base-url URL --api-key-env VAR` first",
    )
    spec.is_available = lambda: cache_path().exists() and bool(cached_tags())
    spec.raw_inputs = _tag_cache_identity
    return spec


def _tag_cache_identity() -> dict[str, Any]:
    """What the mined sets read: the tag cache (its bytes) and which tagger's tags are used."""
    from harness.cache import file_sha256

    path = cache_path()
    return {"tag_cache": file_sha256(path) if path.exists() else None,
            "tagger_model": os.environ.get("HARNESS_TAGGER_MODEL") or None}


register(_mined_spec("prompts-mined-math", "Math", "math"))
register(_mined_spec("prompts-mined-code", "Coding", "code"))


def openai_complete(model: str, base_url: str, api_key_env: str, *, max_tokens: int = 128) -> Complete:
    """`complete(messages)` against an OpenAI-compatible chat endpoint, greedy decoding.

    Uses the project's judge client (`harness.judge.JudgeClient`: retries, its own request cache) when
    it is installed, otherwise the `openai` client directly; this module caches the answers either way."""
    try:
        from harness.judge import JudgeClient
    except ImportError:
        JudgeClient = None  # noqa: N806
    if JudgeClient is not None:
        client = JudgeClient(model, base_url=base_url, api_key_env=api_key_env,
                             cache_path=cache_path().with_name("judge_cache.sqlite"))

        def complete_via_judge(messages: list[dict[str, str]]) -> str:
            return client.complete(messages, template=TAG_TEMPLATE_ID, temperature=0.0, max_tokens=max_tokens)

        return complete_via_judge

    from openai import OpenAI

    api = OpenAI(base_url=base_url, api_key=os.environ.get(api_key_env) or "not-needed")

    def complete(messages: list[dict[str, str]]) -> str:
        reply = api.chat.completions.create(model=model, messages=messages, temperature=0.0, max_tokens=max_tokens)
        return reply.choices[0].message.content or ""

    return complete
