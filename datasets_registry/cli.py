"""`harness data ...`: list, show, prepare registered datasets; tag prompts for the mined prompt sets.

    harness data list [--group table1|variant|mix|prompts|built-in|released|other] [--available] [--unpinned]
    harness data show NAME [-n 3] [--seed 0] [--file RAW ...] [--no-rows]
    harness data prepare NAME [--seed 0] [--max-rows N] [--file RAW ...] [--out DIR]
    harness data tag-prompts --pool NAME [--pool NAME ...] --model M --base-url URL [--api-key-env VAR] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.cli_errors import print_error
from harness.registry import UnknownNameError

if TYPE_CHECKING:
    from datasets_registry.spec import DatasetSpec

_ERRORS: tuple[type[BaseException], ...] = (UnknownNameError, FileNotFoundError, ValueError)


def _fmt_size(size: int | None) -> str:
    return f"{size:,}" if size else "-"


def cmd_list(args: argparse.Namespace) -> int:
    from datasets_registry import DATASETS

    header = ("name", "group", "type", "kind", "paper size", "local", "expected", "pinned", "licence")
    rows = []
    unpinned = []
    for name, spec in DATASETS.items():
        if args.group and spec.group != args.group:
            continue
        if args.unpinned and spec.pinned:
            continue
        available = spec.is_available()
        if args.available and not available:
            continue
        if not spec.pinned:
            unpinned.append(name)
        rows.append((name, spec.group, spec.source_type, spec.kind, _fmt_size(spec.paper_size),
                     "yes" if available else "no", _fmt_size(spec.expected_size), _pin_status(spec),
                     spec.license or "-"))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) + "  " + str(row[-1]))
    print(f"\n{len(rows)} dataset(s); 'local' = raw data found under the local data dirs (HARNESS_DATA_DIR, "
          "../shared/data); 'expected' = rows after curation at full scale; 'pinned' = hub source pinned to a "
          "commit ('local' = no hub source)")
    if unpinned:
        print(f"UNPINNED hub sources ({len(unpinned)}): {', '.join(unpinned)} (`harness data show NAME` says why)")
    return 0


def _pin_status(spec: DatasetSpec) -> str:
    if spec.hub_id is None:
        return "local"
    return spec.revision[:7] if spec.revision else "UNPINNED"


def print_card(spec: DatasetSpec) -> None:
    """What a dataset is and where its rule comes from: printed before any data is read."""
    print(f"{spec.name} ({spec.group}, {spec.kind}, {spec.source_type}): {spec.description}")
    if spec.rule:
        print(f"  rule:      {spec.rule}")
    if spec.rule_source:
        print(f"  source:    {spec.rule_source}")
    if spec.deviation:
        print(f"  deviation: {spec.deviation}")
    if spec.hub_id:
        where = f"{spec.hub_id} split={spec.split}"
        if spec.revision:
            print(f"  hub:       {where} revision={spec.revision}")
        else:
            print(f"  hub:       {where} UNPINNED (no commit revision): {spec.unpinned_reason or 'no reason recorded'}")
    if spec.components:
        parts = [f"{component} ({_fmt_size(count) if count else 'all'})" for component, count in spec.components]
        print(f"  components: {', '.join(parts)}")
    sizes = [f"paper {_fmt_size(spec.paper_size)}" if spec.paper_size else "",
             f"expected at full scale {_fmt_size(spec.expected_size)}" if spec.expected_size else "",
             f"downsampled to {_fmt_size(spec.downsample_to)}" if spec.downsample_to else ""]
    if any(sizes):
        print(f"  size:      {'; '.join(s for s in sizes if s)}")
    if spec.released_as:
        print(f"  released:  {spec.released_as} (the authors' split as published; `build: released` in a grid)")
    print(f"  licence:   {spec.license or '-'}")


def _print_counts(split: Any) -> None:
    print(f"{split.name}: raw {split.raw_count:,}  kept {split.kept:,}  dropped {sum(split.dropped.values()):,}"
          f"  (seed {split.seed}, fingerprint {split.fingerprint})")
    for reason, count in sorted(split.dropped.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  dropped {reason}: {count:,}")
    for source in split.sources:
        print(f"  from {source}")


def _short(text: Any, width: int) -> str:
    text = str(text).replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 3] + "..."


def cmd_show(args: argparse.Namespace) -> int:
    from datasets_registry import DATASETS, prepare

    print_card(DATASETS.get(args.name))
    if args.no_rows:
        return 0
    print()
    split = prepare(args.name, seed=args.seed, files=[Path(f) for f in args.file] if args.file else None)
    _print_counts(split)
    for row in split.rows[: args.n]:
        print(f"\n[{row['id']}] source={row['source']}")
        for message in row["prompt"]:
            print(f"  {message['role']:>9}: {_short(message['content'], args.width)}")
        for key in ("chosen", "rejected"):
            if key in row:
                print(f"  {key:>9}: {_short(row[key][-1]['content'], args.width)}")
        extras = {k: v for k, v in row.items() if k not in ("id", "prompt", "chosen", "rejected", "source")}
        if extras:
            print(f"  {'extra':>9}: {_short(extras, args.width)}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from datasets_registry import prepare, write_prepared

    split = prepare(args.name, seed=args.seed, max_rows=args.max_rows,
                    files=[Path(f) for f in args.file] if args.file else None)
    path = write_prepared(split, Path(args.out) if args.out else None)
    _print_counts(split)
    print(f"written: {path} (+ {path.with_suffix('.meta.json').name})")
    return 0


def cmd_tag_prompts(args: argparse.Namespace) -> int:
    from datasets_registry import DATASETS, prepare
    from datasets_registry.tagging import cache_path, openai_complete, tag_prompts

    for pool in args.pool:
        if DATASETS.get(pool).kind != "prompts":
            print(f"error: {pool!r} is not a prompt set", file=sys.stderr)
            return 2
    complete = openai_complete(args.model, args.base_url, args.api_key_env)
    for pool in args.pool:
        split = prepare(pool, seed=args.seed)
        stats = tag_prompts(split.rows, complete, model=args.model, pool=pool, limit=args.limit)
        print(f"{pool}: {stats.called:,} tagged now, {stats.cached:,} from cache, "
              f"{stats.parse_failed:,} unparseable answers")
    print(f"cache: {cache_path()}")
    return 0


def _guard(func):
    """Known user errors (unknown name, missing data, bad file) print one clear message, exit code 2."""
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except _ERRORS as exc:
            print_error(exc, args)
            return 2
    return run


def add_commands(subparsers: Any) -> None:
    from datasets_registry.spec import GROUPS

    data = subparsers.add_parser("data", help="preference datasets and prompt sets (list, show, prepare)")
    sub = data.add_subparsers(dest="data_command", required=True)

    p = sub.add_parser("list", help="registered datasets: group, source type, sizes, pin, licence, local availability")
    p.add_argument("--group", choices=list(GROUPS))
    p.add_argument("--available", action="store_true", help="only datasets whose raw data is local")
    p.add_argument("--unpinned", action="store_true", help="only datasets whose hub source has no commit revision")
    p.set_defaults(func=_guard(cmd_list))

    p = sub.add_parser("show", help="a dataset's rule, its source (paper / authors' script), hub pin, and a few rows")
    p.add_argument("name")
    p.add_argument("-n", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=160, help="truncate texts to this many characters")
    p.add_argument("--file", action="append", help="raw file(s) in the dataset's hub format instead of the lookup")
    p.add_argument("--no-rows", action="store_true", help="print the rule and its source only (reads no data)")
    p.set_defaults(func=_guard(cmd_show))

    p = sub.add_parser("prepare", help="curate, count drops, write the prepared split to the local cache")
    p.add_argument("name")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-rows", type=int, default=None)
    p.add_argument("--file", action="append", help="raw file(s) in the dataset's hub format instead of the lookup")
    p.add_argument("--out", default=None, help="output folder (default results/prepared/<name>)")
    p.set_defaults(func=_guard(cmd_prepare))

    p = sub.add_parser("tag-prompts", help="tag prompt pools with an LLM (App. J) for the mined math/code sets")
    p.add_argument("--pool", action="append", required=True, help="a registered prompt set, e.g. prompts-wildchat")
    p.add_argument("--model", required=True)
    p.add_argument("--base-url", required=True, help="OpenAI-compatible endpoint, e.g. http://host:8000/v1")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    p.add_argument("--limit", type=int, default=None, help="tag at most this many prompts per pool")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_guard(cmd_tag_prompts))


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m datasets_registry.cli data list`) until `harness` lists this module."""
    parser = argparse.ArgumentParser(prog="harness")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
