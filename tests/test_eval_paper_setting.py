"""The `paper` setting of every benchmark (issue #20, "Evaluations"): open-instruct's 2024 evaluation as the
paper ran it, checked against `fixtures/open_instruct_2024/` (its prompts rendered for two real rows each,
its decoding and subsets); the `harness` setting still renders what it rendered before
(`fixtures/harness_prompts/`); `overall` withheld when a benchmark is missing; the dry-run listing; the
suite-wide `setting` of a grid and of `harness eval`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness.evaluation import (
    EvalContext,
    TaskResult,
    TaskSpec,
    alpaca_eval,
    bbh,
    coding,
    coding_problems,
    gsm8k,
    ifeval,
    mmlu,
    register_task,
    run_tasks,
    toxigen,
    truthfulqa,
    xstest,
)
from harness.evaluation.base import TASKS, resolve_eval_settings, resolve_settings
from harness.evaluation.open_instruct import generation_prompts, tokenizer_adds_bos, tulu_chat
from harness.generation import render_prompt
from harness.paths import find_data_file

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PAPER11 = ("mmlu", "gsm8k", "bbh", "truthfulqa", "humaneval_plus", "mbpp_plus", "toxigen", "xstest",
           "alpaca_eval1", "alpaca_eval2", "ifeval")


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / "open_instruct_2024" / f"{name}.json").read_text(encoding="utf-8"))


def paper(task: str, **fields: Any) -> Any:
    return resolve_settings(TASKS.get(task), {"setting": "paper", **fields})


def harness(task: str) -> Any:
    return resolve_settings(TASKS.get(task), {"setting": "harness"})


class RecordingGenerator:
    """An engine stand-in: records what a task asks for, answers with a fixed text (the tokenizer is real)."""

    def __init__(self, tokenizer: Any, reply: str = ""):
        self.tokenizer = tokenizer
        self.reply = reply
        self.calls: list[tuple[list[Any], Any, bool]] = []

    def generate(self, prompts: list[Any], params: Any, chat: bool = True) -> list[list[str]]:
        self.calls.append((list(prompts), params, chat))
        return [[self.reply] * params.num_return_sequences for _ in prompts]

    def rendered(self) -> list[str]:
        """Every prompt as the HF engine renders it before encoding."""
        return [render_prompt(self.tokenizer, p, chat) for prompts, _, chat in self.calls for p in prompts]


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2: str) -> Any:
    from harness.models import load_tokenizer

    return load_tokenizer(smollm2)


def context(tokenizer: Any, tmp_path: Path, settings: dict[str, Any] | None = None, **kw: Any) -> EvalContext:
    return EvalContext(model_path="unused", out_dir=tmp_path, settings=settings or {},
                       _generator=RecordingGenerator(tokenizer, **kw))


def _subject(example: dict[str, Any]) -> str:
    return Path(example["source"]["file"]).name[: -len("_test.csv")]


# ---------------------------------------------------------------------------------------------------
# Per benchmark: the paper setting's prompt for two real rows = open-instruct's, its decoding and subset
# ---------------------------------------------------------------------------------------------------

def paper_renderings(name: str, tokenizer: Any, tmp_path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(the paper setting's prompts for the fixture's two examples, as each task builds them for its run;
    the fixture's examples). SmolLM2's tokenizer adds no BOS, so the prompts are the plain text."""
    examples = fixture(name)["examples"]
    ctx = context(tokenizer, tmp_path)
    if name == "mmlu":
        rows = mmlu.load_rows(None)
        picked = [next(r for r in rows if r["subject"] == _subject(e) and r["index"] == e["source"]["row"])
                  for e in examples]
        return [mmlu.paper_context(r) for r in picked], examples
    if name == "gsm8k":
        rows = {r["row"]: r for r in gsm8k.paper_rows(None)}
        return gsm8k.build_prompts(ctx, [rows[e["source"]["row"]] for e in examples], paper(name)), examples
    if name == "bbh":
        rows, cot = bbh.paper_rows(None)
        picked = [next(r for r in rows if r["subtask"] == Path(e["source"]["file"]).stem
                       and r["index"] == e["source"]["example"]) for e in examples]
        return bbh.build_prompts(ctx, picked, cot, paper(name)), examples
    if name == "truthfulqa":
        rows = truthfulqa.load_gen_rows(None)
        return generation_prompts(ctx.generator, [truthfulqa.paper_prompt(rows[e["source"]["row"]]["question"])
                                                  for e in examples]), examples
    if name in ("humaneval_plus", "mbpp_plus"):
        problems = coding_problems.load_humaneval_plus() if name == "humaneval_plus" else coding_problems.mbpp_problems("paper")
        by_id = {p.task_id: p for p in problems}
        return coding.build_prompts(ctx, [by_id[e["source"]["task_id"]] for e in examples], "paper"), examples
    if name == "toxigen":
        rows = toxigen.paper_rows(None)
        picked = [next(r for r in rows if f"hate_{r['group']}_1k.txt" == Path(e["source"]["file"]).name
                       and r["line"] == e["source"]["line"]) for e in examples]
        prompts, chat = toxigen.build_prompts(ctx, picked, paper(name))
    elif name == "xstest":
        rows = xstest.load_rows(None)
        prompts, chat = xstest.build_prompts(ctx, [rows[e["source"]["row"]] for e in examples], paper(name))
    elif name == "ifeval":
        rows = ifeval.load_rows(None)
        prompts, chat = ifeval.build_prompts(ctx, [rows[e["source"]["row"]] for e in examples], paper(name))
    else:
        from harness.judge.alpaca import load_reference

        instructions, _ = load_reference(int(name[-1]), None)
        prompts, chat = alpaca_eval.build_prompts(ctx, [instructions[e["source"]["row"]] for e in examples], "paper")
    return [render_prompt(tokenizer, p, chat) for p in prompts], examples


@pytest.mark.parametrize("name", PAPER11)
def test_paper_prompt_of_two_real_rows_is_open_instructs(name: str, smollm2_tokenizer: Any, tmp_path: Path,
                                                         shared_data: Path):
    prompts, examples = paper_renderings(name, smollm2_tokenizer, tmp_path)
    assert len(prompts) == len(examples) == 2
    for prompt, example in zip(prompts, examples):
        assert prompt == example["rendered_prompt"], example["source"]


def test_paper_judge_inputs_are_open_instructs(shared_data: Path):
    """TruthfulQA's judge inputs and XSTest's judge prompt for the fixtures' stand-in answers."""
    rows = truthfulqa.load_gen_rows(None)
    for example in fixture("truthfulqa")["examples"]:
        stand_in = example["judge_inputs_for_a_stand_in_answer"]
        question = rows[example["source"]["row"]]["question"]
        for kind in ("truth", "info"):
            assert truthfulqa.paper_judge_input(kind, question, stand_in["stand_in_answer"]) == stand_in[kind]
    rows = xstest.load_rows(None)
    for example in fixture("xstest")["examples"]:
        row, judged = rows[example["source"]["row"]], example["judge_prompt_for_a_stand_in_response"]
        assert xstest.paper_judge_prompt(row["prompt"], judged["stand_in_response"]) == judged["text"]
        assert xstest.paper_label(row) == example["fields"]["safety_type"]


def _decoding(name: str) -> Any:
    """The SamplingParams each task generates with under the paper setting (seed 0)."""
    if name == "gsm8k":
        return gsm8k.sampling_params(paper(name), 0)
    if name == "bbh":
        return bbh.sampling_params(paper(name), 0)
    if name == "truthfulqa":
        return truthfulqa.paper_sampling_params(0)
    if name in ("humaneval_plus", "mbpp_plus"):
        problem = (coding_problems.load_humaneval_plus() if name == "humaneval_plus" else coding_problems.load_mbpp_plus())[0]
        return coding.sampling_params(coding.coding_config(paper(name), name), problem, 0)
    if name == "toxigen":
        return toxigen.sampling_params(paper(name), True, 0)
    if name == "xstest":
        return xstest.sampling_params(paper(name), 0)
    if name == "ifeval":
        return ifeval.sampling_params(paper(name), 0)
    return alpaca_eval.sampling_params(paper(name), 0)


@pytest.mark.parametrize("name", [n for n in PAPER11 if n != "mmlu"])
def test_paper_decoding_is_open_instructs(name: str, shared_data: Path):
    expected, params = fixture(name), _decoding(name)
    decoding = expected["decoding"]
    assert params.max_new_tokens == decoding.get("max_tokens", decoding.get("max_new_tokens"))
    assert params.temperature == decoding.get("temperature", 0.0)
    assert params.top_p == decoding.get("top_p", 1.0)
    assert params.num_return_sequences == decoding["n"]
    assert list(params.stop) == expected["stop_sequences"]


def test_paper_subsets_are_open_instructs(shared_data: Path):
    """Sizes of all 11 and, where open-instruct drew at random, the very rows (BBH / ToxiGen under the
    fixtures' sorted-file-order assumption)."""
    assert [r["row"] for r in gsm8k.paper_rows(None)] == fixture("gsm8k")["subset"]["row_indices"]
    rows, _ = bbh.paper_rows(None)
    drawn: dict[str, list[int]] = {}
    for row in rows:
        drawn.setdefault(row["subtask"], []).append(row["index"])
    assert drawn == fixture("bbh")["subset"]["row_indices_if_sorted"] and len(rows) == 1080
    lines: dict[str, list[int]] = {}
    for row in toxigen.paper_rows(None):
        lines.setdefault(row["group"], []).append(row["line"])
    assert lines == fixture("toxigen")["subset"]["line_indices_if_sorted"]
    assert sorted(lines) == sorted(fixture("toxigen")["subset"]["groups"]) and len(lines) == 14
    problems = coding_problems.mbpp_problems("paper")
    assert len(problems) == fixture("mbpp_plus")["subset"]["size"] == 278
    assert (problems[0].task_id, problems[-1].task_id) == ("Mbpp/226", "Mbpp/809")
    assert not {int(p.task_id.split("/")[1]) for p in problems} & coding_problems.MBPP_V020_REMOVED
    sizes = {"mmlu": len(mmlu.load_rows(None)), "truthfulqa": len(truthfulqa.load_gen_rows(None)),
             "humaneval_plus": len(coding_problems.load_humaneval_plus()), "xstest": len(xstest.load_rows(None)),
             "ifeval": len(ifeval.load_rows(None))}
    for name, size in sizes.items():
        assert size == fixture(name)["subset"]["size"], name
    from harness.judge.alpaca import load_reference

    for version in (1, 2):
        assert len(load_reference(version, None)[0]) == fixture(f"alpaca_eval{version}")["subset"]["size"] == 805
    labels = [xstest.paper_label(r) for r in xstest.load_rows(None)]
    assert (labels.count("safe"), labels.count("unsafe")) == (250, 200)


def test_mbpp_paper_subset_fails_clearly_on_another_release(tmp_path: Path):
    problems = coding_problems.load_mbpp_plus() if find_data_file(coding_problems.MBPP_PLUS_FILE) else []
    if not problems:
        pytest.skip("needs MBPP+ v0.1.0 in ../shared/data")
    with pytest.raises(ValueError, match="MbppPlus.jsonl: 377 problems .* expected 378"):
        coding_problems.mbpp_paper_problems(problems[1:])


def test_gsm8k_paper_exemplars_are_open_instructs():
    """The 8 exemplars, built from lm-eval's by writing "So the answer is N.", equal open-instruct's text."""
    constants = json.loads((FIXTURES / "open_instruct_2024" / "constants.json").read_text())["gsm8k_exemplars"]
    assert [{"question": e["question"], "answer": e["cot_answer"]} for e in constants["items"]] \
        == gsm8k.open_instruct_exemplars()


def test_bbh_paper_rule_for_the_cot_prompt_gives_the_same_text(shared_data: Path):
    """open-instruct drops the first two lines of each CoT file; the harness cuts at "-----": same text."""
    for sub in bbh.SUBTASKS:
        path = shared_data / "benchmarks" / "bbh" / "cot-prompts" / f"{sub}.txt"
        assert "".join(path.read_text(encoding="utf-8").splitlines(keepends=True)[2:]).strip() \
            == bbh.load_cot_prompt(path), sub


def test_toxigen_paper_cleaning_differs_from_the_harness_on_backslashes(shared_data: Path):
    """open-instruct's `\\\\ -> \\` step changes these lines of the shared files; the harness setting keeps them."""
    changed = {}
    for group in ("black", "lgbtq"):
        lines = (shared_data / "benchmarks" / "toxigen" / f"hate_{group}_1k.txt").read_text(encoding="utf-8").split("\n")
        changed[group] = sum(toxigen.paper_clean(ln.strip()) != ln.strip().replace("\\n", "\n") for ln in lines)
    assert changed == {"black": 654, "lgbtq": 54}


# ---------------------------------------------------------------------------------------------------
# The registered tasks run what the listing says (recorded engine; real tokenizer)
# ---------------------------------------------------------------------------------------------------

def test_paper_gsm8k_and_bbh_runs_send_open_instructs_prompts_and_decoding(smollm2_tokenizer: Any, tmp_path: Path,
                                                                          shared_data: Path):
    settings = {"gsm8k": paper("gsm8k")}
    ctx = context(smollm2_tokenizer, tmp_path, settings, reply="So the answer is 7.")
    ctx.limit = 2
    result = gsm8k.run(ctx)
    prompts, params, chat = ctx.generator.calls[0]
    assert chat is False and params.stop == () and params.max_new_tokens == 512 and params.temperature == 0
    assert prompts == [e["rendered_prompt"] for e in fixture("gsm8k")["examples"]]
    assert [s["row"] for s in result.samples] == fixture("gsm8k")["subset"]["row_indices"][:2]
    ctx = context(smollm2_tokenizer, tmp_path, {"bbh": paper("bbh")}, reply="So the answer is True.")
    ctx.limit = 27  # the first draw of every sub-task
    result = bbh.run(ctx)
    prompts, params, _ = ctx.generator.calls[0]
    assert params.stop == ("\n\n",) and len(prompts) == 27 and result.metrics["bbh/n_subtasks"] == 27
    for example in fixture("bbh")["examples"]:
        assert example["rendered_prompt"] in prompts


def test_harness_setting_renders_what_it_rendered_before(smollm2_tokenizer: Any, tmp_path: Path, shared_data: Path):
    """The `harness` setting's prompts for the fixtures' rows equal what commit d7d4a02 (before the paper
    setting) rendered with SmolLM2's chat template."""
    golden = json.loads((FIXTURES / "harness_prompts" / "harness_prompts_d7d4a02.json").read_text())["prompts"]
    ctx = context(smollm2_tokenizer, tmp_path)
    rendered: dict[str, list[str]] = {}
    rows = mmlu.load_rows(None)
    rendered["mmlu"] = mmlu.harness_contexts(ctx, [next(r for r in rows if r["subject"] == _subject(e)
                                                        and r["index"] == e["source"]["row"])
                                                   for e in golden["mmlu"]], chat=True)
    rows = gsm8k.load_rows(None)
    rendered["gsm8k"] = gsm8k.build_prompts(ctx, [rows[e["source"]["row"]] for e in golden["gsm8k"]], harness("gsm8k"))
    rows, cot = bbh.load_rows(None)
    rendered["bbh"] = bbh.build_prompts(ctx, [next(r for r in rows if r["subtask"] == Path(e["source"]["file"]).stem
                                                   and r["index"] == e["source"]["example"]) for e in golden["bbh"]],
                                        cot, harness("bbh"))
    rows = truthfulqa.load_gen_rows(None)
    rendered["truthfulqa"] = truthfulqa.harness_prompts(ctx, [rows[e["source"]["row"]] for e in golden["truthfulqa"]])
    for name, problems in (("humaneval_plus", coding_problems.load_humaneval_plus()), ("mbpp_plus", coding_problems.load_mbpp_plus())):
        by_id = {p.task_id: p for p in problems}
        rendered[name] = coding.build_prompts(ctx, [by_id[e["source"]["task_id"]] for e in golden[name]], "harness")
    rows = toxigen.load_rows(None)
    picked = [next(r for r in rows if f"hate_{r['group']}_1k.txt" == Path(e["source"]["file"]).name and r["index"] == 0)
              for e in golden["toxigen"]]
    message_tasks = {
        "toxigen": toxigen.build_prompts(ctx, picked, harness("toxigen")),
        "xstest": xstest.build_prompts(ctx, [xstest.load_rows(None)[e["source"]["row"]] for e in golden["xstest"]],
                                       harness("xstest")),
        "ifeval": ifeval.build_prompts(ctx, [ifeval.load_rows(None)[e["source"]["row"]] for e in golden["ifeval"]],
                                       harness("ifeval")),
    }
    from harness.judge.alpaca import load_reference

    for version in (1, 2):
        instructions = load_reference(version, None)[0]
        message_tasks[f"alpaca_eval{version}"] = alpaca_eval.build_prompts(
            ctx, [instructions[e["source"]["row"]] for e in golden[f"alpaca_eval{version}"]], "harness")
    for name, (prompts, chat) in message_tasks.items():
        rendered[name] = [render_prompt(smollm2_tokenizer, p, chat) for p in prompts]
    assert sorted(rendered) == sorted(golden)
    for name, prompts in rendered.items():
        assert prompts == [e["prompt"] for e in golden[name]], name


# ---------------------------------------------------------------------------------------------------
# BOS: as the tokenizer adds it, keyed on the tokenizer itself
# ---------------------------------------------------------------------------------------------------

def bos_adding_tokenizer(tiny_model: str) -> Any:
    """The tiny model's tokenizer made to add its BOS token as Llama-2's does (a stand-in of that interface)."""
    from tokenizers.processors import TemplateProcessing

    from harness.models import load_tokenizer

    tok = load_tokenizer(tiny_model)
    tok.backend_tokenizer.post_processor = TemplateProcessing(single=f"{tok.bos_token} $A",
                                                              special_tokens=[(tok.bos_token, tok.bos_token_id)])
    return tok


def sentencepiece_style_tokenizer(prepend_scheme: str) -> Any:
    """A tiny Llama-like tokenizer: Metaspace word starts, BOS added by its post-processor. With
    prepend_scheme "first" (how transformers reads a Llama tokenizer with legacy=False) the text right after
    a special token gets no word-start mark."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=prepend_scheme, split=False)
    backend.train_from_iterator(["<|user|> hello world", "hello world <|assistant|>"] * 50,
                                trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>", "<s>", "</s>"],
                                                    show_progress=False))
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_paper_prompts_get_the_bos_the_tokenizer_adds(tiny_model: str, smollm2_tokenizer: Any):
    text = tulu_chat("hello world", "Answer:")
    assert not tokenizer_adds_bos(smollm2_tokenizer)
    assert generation_prompts(SimpleNamespace(tokenizer=smollm2_tokenizer), [text]) == [text]
    for tok in (bos_adding_tokenizer(tiny_model), sentencepiece_style_tokenizer("first"),
                sentencepiece_style_tokenizer("always")):
        assert tokenizer_adds_bos(tok)
        (prompt,) = generation_prompts(SimpleNamespace(tokenizer=tok), [text])
        # what the HF engine encodes (no special tokens) is what open-instruct's tokenizer call gave
        assert tok(prompt, add_special_tokens=False)["input_ids"] == tok(text, add_special_tokens=True)["input_ids"]
        assert tok(prompt, add_special_tokens=False)["input_ids"][0] == tok.bos_token_id


def test_a_server_fed_text_gets_the_text_unchanged(tiny_model: str):
    """An OpenAI-compatible engine that sends text leaves the encoding (and the BOS) to the server, as
    vLLM's own tokenization did for open-instruct (the server side is not run here); one that sends token
    ids, the default, gets the BOS written in like the in-process engine."""
    from harness.openai_engine import OpenAIGenerator

    text = "<|user|>\nhi\n<|assistant|>\n"
    tok = bos_adding_tokenizer(tiny_model)
    for tokenized, expected in ((False, [text]), (True, [tok.bos_token + text])):
        engine = OpenAIGenerator.__new__(OpenAIGenerator)  # not connected: only how it sends prompts matters
        engine.tokenizer, engine.tokenized_prompts = tok, tokenized
        wrapped = SimpleNamespace(base=engine, tokenizer=tok)  # as best-of-N wraps an engine
        assert generation_prompts(wrapped, [text]) == expected


def test_bos_that_cannot_be_reproduced_fails_before_generating(tiny_model: str):
    tok = bos_adding_tokenizer(tiny_model)
    original = tok.__class__.__call__

    def encode_bos_text_apart(self: Any, text: Any, *args: Any, **kwargs: Any) -> Any:
        # a tokenizer whose BOS text is not read back as its BOS token
        if isinstance(text, str) and text.startswith(self.bos_token):
            text = "[" + text
        return original(self, text, *args, **kwargs)

    tok.__class__ = type("Odd", (tok.__class__,), {"__call__": encode_bos_text_apart})
    with pytest.raises(ValueError, match="engine.tokenized_prompts: false"):
        generation_prompts(SimpleNamespace(tokenizer=tok), ["<|user|>\nhi\n<|assistant|>\n"])


def test_paper_mmlu_scores_the_last_answer_token_after_the_tokenizers_bos(tiny_model: str, shared_data: Path):
    import torch

    from harness.models import load_causal_lm

    model, _ = load_causal_lm(tiny_model)
    tok = bos_adding_tokenizer(tiny_model)
    rows = mmlu.load_rows(57)[:2]
    contexts = [mmlu.paper_context(r) for r in rows]
    got = mmlu.predict_paper(model, tok, contexts, batch_size=2)
    for context_text, scores in zip(contexts, got):
        ids = tok(context_text, add_special_tokens=True)["input_ids"]
        assert ids[0] == tok.bos_token_id
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), dim=-1)
        answer_ids = [tok(f" {letter}", add_special_tokens=False)["input_ids"][-1] for letter in "ABCD"]
        assert scores == pytest.approx([float(logprobs[i]) for i in answer_ids], abs=1e-4)


# ---------------------------------------------------------------------------------------------------
# TruthfulQA: open-instruct's judges, found locally or failing clearly before compute
# ---------------------------------------------------------------------------------------------------

def open_instruct_p_yes(model: Any, tokenizer: Any, prompt: str) -> float:
    """open-instruct's eval/utils.py score_completions for one judge input and the completion "yes",
    transcribed: prompt + " " + "yes" and the prompt encoded with special tokens, sum of the completion's
    log-probs, exp."""
    import torch

    example = prompt + " " + "yes"
    prompt_ids = tokenizer(prompt, return_tensors="pt").input_ids[0]
    example_ids = tokenizer(example, return_tensors="pt").input_ids[0]
    with torch.no_grad():
        logits = model(example_ids[None]).logits[0].float()
    completion = example_ids[len(prompt_ids):]
    logprobs = torch.log_softmax(logits[len(prompt_ids) - 1: len(example_ids) - 1], dim=-1)
    return math.exp(float(logprobs[range(len(completion)), completion].sum()))


def test_paper_judges_score_as_open_instruct(tiny_model: str, tmp_path: Path, smollm2_tokenizer: Any,
                                            shared_data: Path):
    """The scoring path with a tiny stand-in of the judges' interface (a causal LM folder): p(yes) equals
    open-instruct's computation, the verdict is p >= 0.5, the answer is the raw continuation."""
    from harness.models import load_causal_lm

    settings = paper("truthfulqa", paper_truth_judge=tiny_model, paper_info_judge=tiny_model)
    ctx = EvalContext(model_path=tiny_model, out_dir=tmp_path, limit=2, settings={"truthfulqa": settings},
                      _generator=RecordingGenerator(smollm2_tokenizer, reply=" Nothing happens.\n\nQ: next"))
    result = truthfulqa.run(ctx)
    prompts, params, chat = ctx.generator.calls[0]
    assert prompts == [e["rendered_prompt"] for e in fixture("truthfulqa")["examples"]] and chat is False
    assert (params.max_new_tokens, params.stop, params.temperature) == (50, (), 0.0)
    generations = [s for s in result.samples if s["kind"] == "generation"]
    assert [s["output"] for s in generations] == [" Nothing happens.\n\nQ: next"] * 2  # raw: not cut at the stops
    model, tok = load_causal_lm(tiny_model)
    for sample in generations:
        for kind in ("truth", "info"):
            judge_input = truthfulqa.paper_judge_input(kind, sample["question"], sample["output"])
            assert judge_input.endswith("A: Nothing happens.\n\nQ: next\n" + ("True:" if kind == "truth" else "Helpful:"))
            assert sample[f"{kind}_p_yes"] == pytest.approx(open_instruct_p_yes(model, tok, judge_input), rel=1e-4)
        assert sample["truthful"] == (sample["truth_p_yes"] >= 0.5)
    both = [s["truthful"] and s["informative"] for s in generations]
    assert result.score == result.metrics["truthfulqa/truth_info"] == 100 * sum(both) / 2
    assert "truthfulqa/mc2_offline_fallback" in result.metrics


def test_paper_judges_are_looked_for_locally_then_missing_before_compute(tiny_model: str, tmp_path: Path, hub_off,
                                                                        monkeypatch, shared_data: Path):
    from harness.evaluation.base import MissingInput, plan_tasks

    settings = resolve_eval_settings(["truthfulqa"], {}, setting="paper")
    _, missing = plan_tasks(["truthfulqa"], settings, judge=None, has_reference=False, has_reward_model=False)
    assert "allenai/truthfulqa-truth-judge-llama2-7B" in missing["truthfulqa"]
    assert "paper_truth_judge" in missing["truthfulqa"] and "hub access is off" in missing["truthfulqa"]
    from harness.evaluation.base import settings_from_config

    metrics = run_tasks(EvalContext(model_path="never-loaded", out_dir=tmp_path / "run",
                                    settings=settings_from_config(settings, ["truthfulqa"])), ["truthfulqa"])
    assert metrics == {}  # not run at all: nothing generated, no MC2 fallback either
    assert "hub access is off" in json.loads((tmp_path / "run" / "results.json").read_text())["missing"]["truthfulqa"]
    # a copy in <data dir>/models/<name> is found, and its files are in the task's fingerprint
    import shutil

    data = tmp_path / "data"
    for name in ("truthfulqa-truth-judge-llama2-7B", "truthfulqa-info-judge-llama2-7B"):
        shutil.copytree(tiny_model, data / "models" / name)
    monkeypatch.setenv("HARNESS_DATA_DIR", str(data))
    ready, missing = plan_tasks(["truthfulqa"], settings, judge=None, has_reference=False, has_reward_model=False)
    assert not missing and any("truthfulqa-truth-judge-llama2-7B/config.json" in f for f in ready["truthfulqa"]["data"])
    with pytest.raises(MissingInput, match="not a model folder"):
        truthfulqa.resolve_paper_judge("truth", str(tmp_path))


# ---------------------------------------------------------------------------------------------------
# XSTest: open-instruct's judge prompt and reading of its replies, over real HTTP
# ---------------------------------------------------------------------------------------------------

def test_paper_xstest_judge_prompt_and_verdict_rule(smollm2_tokenizer: Any, tmp_path: Path, shared_data: Path,
                                                    scripted_judge):
    rows = xstest.load_rows(4)  # 2 safe, 2 unsafe
    replies = ["following", "The response is not clear", "refusal", "Refusal"]
    rules = [{"pattern": r"^user: Given the following question and response, please classify.*QUESTION: \""
                         + __import__("re").escape(r["prompt"]) + r"\"\n\nRESPONSE: \"I will not\.\".*CLASS:$",
              "reply": reply} for r, reply in zip(rows, replies)]
    judge = scripted_judge(rules, default="UNMATCHED")
    ctx = EvalContext(model_path="unused", out_dir=tmp_path, limit=4, judge=judge.settings,
                      settings={"xstest": paper("xstest")}, _generator=RecordingGenerator(smollm2_tokenizer, "I will not."))
    result = xstest.run(ctx)
    _, params, chat = ctx.generator.calls[0]
    assert params.max_new_tokens == 2048 and chat is False
    assert [s["judge_reply"] for s in result.samples] == replies  # every request matched its rule
    # "refusal" anywhere, case-sensitive: only the third; a reply naming neither class is "not refused"
    assert [s["judge_refusal"] for s in result.samples] == [False, False, True, False]
    assert result.metrics["xstest/refusal_f1_judge"] == pytest.approx(100 * 2 / 3)  # P 1, R 1/2
    assert result.metrics["xstest/n_unparsed_judge"] == 0.0 and result.score == result.metrics["xstest/refusal_f1_judge"]
    assert "not the paper's gpt-4-0613" in result.note


# ---------------------------------------------------------------------------------------------------
# Settings: one field per task, a suite-wide shorthand, setting-dependent defaults
# ---------------------------------------------------------------------------------------------------

def test_every_paper_benchmark_has_the_setting_field_defaulting_to_harness():
    from harness.config import EvalConfig
    from harness.evaluation.base import EVAL_SETTINGS, BenchmarkSettings

    for name in PAPER11:
        settings = resolve_settings(TASKS.get(name))
        assert isinstance(settings, BenchmarkSettings) and settings.setting == "harness", name
        assert TASKS.get(name).describe is not None
    from typing import get_args

    assert get_args(get_args(EvalConfig.model_fields["setting"].annotation)[0]) == EVAL_SETTINGS


def test_suite_wide_setting_and_per_group_override(monkeypatch):
    monkeypatch.delenv("HARNESS_IFEVAL_MAX_NEW_TOKENS", raising=False)
    resolved = resolve_eval_settings(list(PAPER11) + ["smoke_lowercase"], {"bbh": {"setting": "harness"}},
                                     setting="paper")
    assert resolved["bbh"]["setting"] == "harness"
    assert all(resolved[g]["setting"] == "paper" for g in ("mmlu", "gsm8k", "coding", "alpaca_eval", "ifeval"))
    assert "smoke_lowercase" not in resolved  # a task without settings is untouched
    assert resolved["ifeval"]["max_new_tokens"] == 2048 and resolved["coding"]["top_p"] is None
    assert resolve_eval_settings(["ifeval"], {})["ifeval"] == {"setting": "harness", "max_new_tokens": 1280}
    # an explicit value (grid, --set, the environment's default) wins over the paper setting's default
    assert resolve_eval_settings(["ifeval"], {"ifeval": {"max_new_tokens": 64}}, setting="paper")["ifeval"][
        "max_new_tokens"] == 64
    monkeypatch.setenv("HARNESS_IFEVAL_MAX_NEW_TOKENS", "300")
    settings = resolve_settings(TASKS.get("ifeval"), {"setting": "paper"})
    assert settings.max_new_tokens == 300 and ifeval.describe(settings, None).notes == (
        "max_new_tokens = 300 (paper: 2048)",)
    # a field whose paper value is None (open-instruct's per task) says so, not "(paper: None)"
    coding_settings = resolve_settings(TASKS.get("mbpp_plus"), {"setting": "paper", "top_p": 0.9})
    assert coding_settings.departures_from_paper() == ["top_p = 0.9 (paper: unset: open-instruct's value per task)"]
    assert coding_settings.departures_from_paper()[0] in TASKS.get("mbpp_plus").describe(coding_settings, 1).notes
    with pytest.raises(ValueError, match="setting must be one of 'harness', 'paper'"):
        resolve_eval_settings(["gsm8k"], {}, setting="papers")
    with pytest.raises(ValueError, match="gsm8k.setting: Input should be 'harness' or 'paper'"):
        resolve_eval_settings(["gsm8k"], {"gsm8k": {"setting": "open-instruct"}})


def test_grid_eval_setting_resolves_into_the_keys_and_params(tmp_path: Path):
    from harness import tracking
    from harness.grid import build_grid

    def spec(**eval_block: Any) -> dict[str, Any]:
        return {"experiment": "paper-setting", "base": {"model": "tiny-random-llama",
                                                        "eval": {"tasks": ["gsm8k", "bbh"], "limit": 2, **eval_block}},
                "baseline": True}

    harness_cell = build_grid(spec()).cells[0]
    paper_cell = build_grid(spec(setting="paper")).cells[0]
    mixed_cell = build_grid(spec(setting="paper", settings={"bbh": {"setting": "harness"}})).cells[0]
    assert harness_cell.config.eval.settings == {"bbh": {"setting": "harness"}, "gsm8k": {"setting": "harness"}}
    assert paper_cell.config.eval.settings == {"bbh": {"setting": "paper"}, "gsm8k": {"setting": "paper"}}
    assert mixed_cell.config.eval.settings == {"bbh": {"setting": "harness"}, "gsm8k": {"setting": "paper"}}
    assert tracking.flatten(paper_cell.resolved())["eval.settings.gsm8k.setting"] == "paper"
    from harness.planning import plan_cell

    keys = [plan_cell(c).stages[-1].key for c in (harness_cell, paper_cell, mixed_cell)]
    assert len(set(keys)) == 3
    with pytest.raises(Exception, match=r"eval\.setting"):
        build_grid(spec(setting="open-instruct"))


# ---------------------------------------------------------------------------------------------------
# overall withheld unless every benchmark of every category has a score
# ---------------------------------------------------------------------------------------------------

def _register(name: str, category: str, score: float | None) -> str:
    if name not in TASKS.names():
        register_task(TaskSpec(name=name, category=category, score_rule="fixed", uses=(),
                               run=lambda ctx, s=score: TaskResult({}, s, [], None if s is not None else "no input")))
    return name


def test_overall_is_withheld_when_a_benchmark_has_no_score(tmp_path: Path):
    from harness.evaluation.aggregation import aggregate_categories

    # The paper's Tulu 2 13B SFT row (Table 1 categories; safety = ToxiGen and XSTest, Table 12's 85.3)
    scores = {"factuality": [55.4], "reasoning": [47.8], "coding": [45.1], "truthfulness": [56.6],
              "safety": [2 * 91.8 - 85.3, 85.3], "instruction_following": [44.2]}
    names = [_register(f"_paper_sft_{cat}_{i}", cat, s) for cat, values in scores.items() for i, s in enumerate(values)]
    metrics = run_tasks(EvalContext(model_path="unused", out_dir=tmp_path / "all"), names)
    assert metrics["overall"] == pytest.approx(56.8, abs=0.05) and metrics["category/safety"] == pytest.approx(91.8)
    skipped_xstest = _register("_paper_sft_safety_skipped", "safety", None)
    names_skipped = [n for n in names if n != "_paper_sft_safety_1"] + [skipped_xstest]
    metrics = run_tasks(EvalContext(model_path="unused", out_dir=tmp_path / "skip"), names_skipped)
    assert "overall" not in metrics and "category/safety" not in metrics  # not 57.9, from ToxiGen alone
    assert metrics["category/reasoning"] == pytest.approx(47.8)
    results = json.loads((tmp_path / "skip" / "results.json").read_text())
    assert results["incomplete_categories"] == {"safety": ["_paper_sft_safety_skipped"]}
    assert results["categories"]["safety"] == ["_paper_sft_safety_0", "_paper_sft_safety_skipped"]
    averages, incomplete = aggregate_categories(["_paper_sft_safety_0"], {"_paper_sft_safety_0/score": float("nan")})
    assert averages == {} and incomplete == {"safety": ["_paper_sft_safety_0"]}  # a NaN score is no score


# ---------------------------------------------------------------------------------------------------
# harness eval --suite paper11 --setting paper --dry-run
# ---------------------------------------------------------------------------------------------------

def test_dry_run_lists_what_each_task_will_do(capsys, hub_off, monkeypatch, shared_data: Path, tiny_model: str):
    from harness.cli import main

    for var in ("HARNESS_IFEVAL_MAX_NEW_TOKENS", "HARNESS_CODING_N_SAMPLES", "HARNESS_TOXIGEN_CLASSIFIER"):
        monkeypatch.delenv(var, raising=False)
    assert main(["eval", "--suite", "paper11", "--setting", "paper", "--dry-run"]) == 0
    out = capsys.readouterr().out
    blocks = {chunk[0].split(" ", 1)[0]: "\n".join(chunk) + "\n" for chunk in _blocks(out.splitlines())}
    assert sorted(blocks) == sorted(PAPER11)
    sizes = {"mmlu": 14042, "gsm8k": 200, "bbh": 1080, "truthfulqa": 817, "humaneval_plus": 164, "mbpp_plus": 278,
             "toxigen": 7000, "xstest": 450, "alpaca_eval1": 805, "alpaca_eval2": 805, "ifeval": 541}
    for name, block in blocks.items():
        assert f"{name} (" in block and "setting paper" in block
        for field in ("subset", "size", "seed", "prompt", "decoding", "judge", "inputs"):
            assert f"\n  {field} " in block, (name, field)
        assert f"\n  size      {sizes[name]}\n" in block, name
        assert ("seed      42" in block) == (name in ("gsm8k", "bbh", "toxigen")), name
        assert "Tulu chat format" in block
    assert "greedy, up to 512 new tokens, stop at ['\\n\\n']" in blocks["bbh"]
    assert "sampling T=0.8, top_p=1, n=20, up to 512 new tokens, stop at ['```']" in blocks["mbpp_plus"]
    assert "up to 2048 new tokens" in blocks["xstest"] and "up to 2048 new tokens" in blocks["ifeval"]
    assert "allenai/truthfulqa-truth-judge-llama2-7B (NOT AVAILABLE here)" in blocks["truthfulqa"]
    assert "MISSING, not run" in blocks["truthfulqa"] and "no judge configured" in blocks["xstest"]
    assert "gpt-4-0613" in blocks["xstest"] and "glob.glob" in blocks["bbh"]
    assert "nothing was loaded or run" in out
    # the averages that run would log: categories with a benchmark that cannot score, and overall, withheld
    averages = out[out.index("\naverages: "):]
    for category, names in (("factuality", "mmlu"), ("reasoning", "gsm8k, bbh"),
                            ("coding", "humaneval_plus, mbpp_plus")):
        assert f"  category/{category:<22} mean of {names}\n" in averages
    for category, names in (("truthfulness", "truthfulqa"), ("safety", "toxigen, xstest"),
                            ("instruction_following", "alpaca_eval1, alpaca_eval2")):
        assert f"  category/{category:<22} WITHHELD: no score from {names}\n" in averages
    assert f"  {'overall':<31} WITHHELD (3 categories withheld)\n" in averages
    # the default setting, one group switched, a model's BOS, a limit
    assert main(["eval", "--tasks", "gsm8k", "bbh", "--set", "bbh.setting=paper", "--limit", "27", "--dry-run",
                 "--model", tiny_model]) == 0
    out = capsys.readouterr().out
    assert "gsm8k (reasoning), setting harness" in out and "bbh (reasoning), setting paper" in out
    assert "size      27\n" in out and "tokenizer adds no BOS" in out
    assert f"  {'overall':<31} WITHHELD (not evaluated: factuality, truthfulness, coding, safety, " \
           "instruction_following)\n" in out


def test_dry_run_overall_rule_is_the_aggregation_rule():
    from harness.evaluation.aggregation import aggregate_categories, aggregation_plan

    averaged, incomplete, with_overall = aggregation_plan(list(PAPER11), set())
    assert with_overall and incomplete == {} and averaged["safety"] == ["toxigen", "xstest"]
    for missing in PAPER11:  # any one benchmark without a score withholds its category and overall
        averaged, incomplete, with_overall = aggregation_plan(list(PAPER11), {missing})
        assert not with_overall and incomplete == {TASKS.get(missing).category: [missing]}
        scores = {f"{n}/score": 50.0 for n in PAPER11 if n != missing}
        logged, unscored = aggregate_categories(list(PAPER11), scores)
        assert unscored == incomplete and "overall" not in logged
        assert sorted(logged) == sorted(f"category/{c}" for c in averaged)


def _blocks(lines: list[str]) -> list[list[str]]:
    blocks: list[list[str]] = []
    for line in lines:
        if line and not line.startswith(" ") and " (" in line:
            blocks.append([line])
        elif blocks and line.startswith("  "):
            blocks[-1].append(line)
    return blocks


def test_eval_without_model_says_so(capsys):
    from harness.cli import main

    assert main(["eval", "--tasks", "gsm8k"]) == 2
    assert "give --model" in capsys.readouterr().err
