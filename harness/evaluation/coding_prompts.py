"""The coding tasks' prompts (`coding.py`): the harness setting's chat prompts (HumanEvalPack's
instruction for HumanEval+, a started assistant turn), the paper setting's open-instruct prompts, stop
sequences, and the program checked for a completion (see `coding.py`'s docstring)."""

from __future__ import annotations

import ast
import re
from typing import Any

from harness.evaluation.coding_problems import CodeProblem
from harness.evaluation.open_instruct import tulu_chat

# open-instruct's codex_humaneval / mbpp chat-format prompts (see module docstring).
HUMANEVAL_ANSWER_PREFIX = "Here is the function:\n\n```python\n"
HUMANEVAL_STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint", "\n```")
MBPP_INSTRUCTION = "Complete the following python function.\n\n\n"
MBPP_ANSWER_PREFIX = "Here is the completed function:\n\n\n```python\n"
MBPP_STOP = ("```",)


def _entry_function(problem: CodeProblem, source: str) -> ast.FunctionDef:
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise ValueError(f"{problem.task_id}: source does not parse ({err})") from err
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == problem.entry_point:
            return node
    raise ValueError(f"{problem.task_id}: no function {problem.entry_point!r} in its source")


def _signature(problem: CodeProblem, source: str) -> str:
    """`name(args) -> ret` of the entry point, as written in `source` (the `def` header, no colon)."""
    fn = _entry_function(problem, source)
    lines = source.splitlines()
    header = "\n".join(lines[fn.lineno - 1 : fn.body[0].lineno - 1]) if fn.body[0].lineno > fn.lineno else (
        lines[fn.lineno - 1]
    )
    match = re.search(r"def\s+(" + re.escape(problem.entry_point) + r"\s*\(.*\)[^:]*?)\s*:", header, re.DOTALL)
    if match is None:
        raise ValueError(f"{problem.task_id}: cannot read the signature of {problem.entry_point!r}")
    return match.group(1).strip()


def humaneval_instruction(problem: CodeProblem) -> str:
    """HumanEvalPack's Python synthesis instruction, rebuilt from the HumanEval(+) prompt."""
    # A prompt is a module whose entry point's body is only its docstring, so it parses as it is.
    docstring = ast.get_docstring(_entry_function(problem, problem.prompt), clean=True) or ""
    return f"Write a Python function `{_signature(problem, problem.prompt)}` to solve the following problem:\n{docstring}"


def mbpp_instruction(problem: CodeProblem) -> str:
    # The v0.1.0 prompt is a quoted description; the `def` header goes on its own line after it.
    return f"{MBPP_INSTRUCTION}{problem.prompt}\ndef {_signature(problem, problem.canonical_solution)}"


def mbpp_paper_instruction(problem: CodeProblem) -> str:
    """open-instruct's MBPP+ user turn from the hub row's `prompt` and `code`, rebuilt from the v0.1.0 row:
    the description without its quotes, then the reference code up to its first ':', no separator."""
    description = problem.prompt.strip().strip("'").strip()
    return MBPP_INSTRUCTION + description + problem.canonical_solution.lstrip().split(":")[0]


def paper_prompt(problem: CodeProblem) -> str:
    """The paper setting's prompt text (Tulu chat format, the started assistant turn), before BOS."""
    if problem.dataset == "humaneval":
        return tulu_chat(humaneval_instruction(problem), HUMANEVAL_ANSWER_PREFIX + problem.prompt)
    return tulu_chat(mbpp_paper_instruction(problem), MBPP_ANSWER_PREFIX)


def chat_messages(problem: CodeProblem) -> tuple[list[dict[str, str]], str]:
    """(user message, start of the assistant turn) for a chat model."""
    if problem.dataset == "humaneval":
        return [{"role": "user", "content": humaneval_instruction(problem)}], HUMANEVAL_ANSWER_PREFIX + problem.prompt
    return [{"role": "user", "content": mbpp_instruction(problem)}], MBPP_ANSWER_PREFIX


def render_chat_prompt(tokenizer: Any, problem: CodeProblem) -> str:
    """Chat template + the started assistant turn; generated with chat=False (already templated)."""
    from harness.generation import render_prompt

    messages, answer_start = chat_messages(problem)
    text = render_prompt(tokenizer, messages, chat=True)
    # open-instruct: a space between the template and the answer unless the template ends in whitespace
    return text + ("" if text[-1:] in ("\n", " ") else " ") + answer_start


def stop_sequences(problem: CodeProblem) -> tuple[str, ...]:
    return HUMANEVAL_STOP if problem.dataset == "humaneval" else MBPP_STOP


def program_from_completion(problem: CodeProblem, completion: str) -> str:
    # HumanEval: the prompt was part of the assistant turn, so the model wrote only the body.
    return problem.prompt + completion if problem.dataset == "humaneval" else completion

