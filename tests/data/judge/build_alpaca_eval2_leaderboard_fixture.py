"""Builds `alpaca_eval2_leaderboard_annotations.json.gz`: what AlpacaEval 2's length-controlled win rate
needs from the published GPT-4-turbo judge annotations of a few leaderboard models.

Source: the public GitHub repository tatsu-lab/alpaca_eval,
`results/<model>/weighted_alpaca_eval_gpt4_turbo/annotations.json` (805 rows per model, in the order of
the AlpacaEval set). Kept per row: the judge's preference (in [1, 2]; None if unreadable) and the
character lengths of output_1 (the gpt4_1106_preview reference) and output_2 (the model); the row's
position is its instruction index. Nothing else enters alpaca_eval's `length_controlled_v1`.

Usage (a local clone or mirror of the repository, read with git):

    python tests/data/judge/build_alpaca_eval2_leaderboard_fixture.py /path/to/alpaca_eval.git [commit]
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

# Spanning the AE2 leaderboard's LC range (4 to 70), with the models the old "minimal" formula got most
# wrong (gpt-3.5-turbo-1106, alpaca-7b, gpt4_gamed). Only models whose file has all 805 rows in the set's
# order (so a row's position is its instruction index).
MODELS = ["FuseChat-Gemma-2-9B-Instruct", "FuseChat-Llama-3.2-3B-Instruct", "claude-2", "gpt4_0613_concise",
          "gpt-3.5-turbo-1106", "OpenHermes-2.5-Mistral-7B", "Qwen-14B-Chat", "gpt4_gamed", "gemma-7b-it",
          "alpaca-7b", "falcon-7b-instruct"]
REFERENCE = "results/gpt4_1106_preview/model_outputs.json"
OUT = Path(__file__).with_name("alpaca_eval2_leaderboard_annotations.json.gz")


def _git_json(git_dir: str, commit: str, path: str) -> list[dict]:
    blob = subprocess.run(["git", "--git-dir", git_dir, "show", f"{commit}:{path}"], check=True,
                          capture_output=True).stdout
    return json.loads(blob)


def main(git_dir: str, commit: str = "HEAD") -> None:
    commit = subprocess.run(["git", "--git-dir", git_dir, "rev-parse", commit], check=True,
                            capture_output=True, text=True).stdout.strip()
    instructions = [r["instruction"] for r in _git_json(git_dir, commit, REFERENCE)]
    models = {}
    for model in MODELS:
        path = f"results/{model}/weighted_alpaca_eval_gpt4_turbo/annotations.json"
        rows = _git_json(git_dir, commit, path)
        if [r["instruction"] for r in rows] != instructions:
            raise ValueError(f"{path}: rows are not the 805 AlpacaEval instructions in order")
        models[model] = {
            "preference": [None if r["preference"] is None else float(r["preference"]) for r in rows],
            "len_output_1": [len(r["output_1"]) for r in rows],
            "len_output_2": [len(r["output_2"]) for r in rows],
        }
    data = {"source": {"repository": "https://github.com/tatsu-lab/alpaca_eval", "commit": commit,
                       "path": "results/<model>/weighted_alpaca_eval_gpt4_turbo/annotations.json"},
            "models": models}
    with gzip.GzipFile(OUT, "wb", mtime=0) as fh:  # mtime=0: the same input gives the same bytes
        fh.write(json.dumps(data, separators=(",", ":")).encode())
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(models)} models)")


if __name__ == "__main__":
    main(*sys.argv[1:])
