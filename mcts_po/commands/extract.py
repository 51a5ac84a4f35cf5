"""`mcts-po extract`: turn saved trees into datasets (step-dpo, step-dpo-repo, step-apo, tpo, dpo, sft; value, ppm).

    mcts-po extract --trees runs/x --format step-dpo --out data/x
    mcts-po extract --trees runs/x --format step-dpo-repo --out data/x   # for the Step-DPO repo's train.py
    mcts-po extract --trees runs/x runs/y.jsonl --format step-dpo --format tpo --out data/x \\
        --min-q-margin 0.5 --scope correct_paths --max-pairs-per-tree 8
    mcts-po extract --trees runs/x --format all --out data/x --push-to-hub me/my-steps
    mcts-po extract --trees runs/x --format value --format ppm --out data/x --ppm-min-q-margin 0.5

Writes OUT/<format>/ (datasets.load_from_disk), OUT/<format>.jsonl, OUT/<format>.parquet and
OUT/stats.json, and prints the stats. Selection flags come from `ExtractConfig`
(mcts_po/extract/selection.py); `--config FILE` reads them from YAML (top level or under an
`extract:` section), flags override the file. No model and no torch are needed.
"""

from __future__ import annotations

import argparse
import sys

from mcts_po.config_utils import add_dataclass_arguments, build_dataclass, load_yaml, section
from mcts_po.extract import FORMATS, POLICY_FORMATS, ExtractConfig
from mcts_po.io_utils import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    job = parser.add_argument_group("job")
    job.add_argument("--trees", nargs="+", required=True, metavar="RUN",
                     help="run directories (their trees.jsonl) or .jsonl files of trees")
    job.add_argument("--format", action="append", required=True, metavar="NAME", dest="formats",
                     help=f"output format, repeatable: {', '.join(FORMATS)} or all (= {', '.join(POLICY_FORMATS)})")
    job.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
    job.add_argument("--config", metavar="FILE", help="YAML file of selection options; flags override it")
    job.add_argument("--push-to-hub", metavar="REPO", help="also upload each format as a config of this hub dataset")
    job.add_argument("--no-progress", action="store_true", help="no progress bar while reading trees")
    add_dataclass_arguments(parser, ExtractConfig, "selection rules")


def format_names(requested: list[str]) -> list[str]:
    names: list[str] = []
    for item in requested:
        for name in item.split(","):
            name = name.strip()
            if name == "all":
                names.extend(POLICY_FORMATS)
            elif name in FORMATS:
                names.append(name)
            else:
                raise UserError(f"unknown extraction format {name!r}; valid: {', '.join(FORMATS)}, all")
    return list(dict.fromkeys(names))


def build_config(args: argparse.Namespace) -> ExtractConfig:
    source = args.config or "command line"
    file_values = section(load_yaml(args.config), "extract", source) if args.config else {}
    return build_dataclass(ExtractConfig, file_values, args, source)


def run(args: argparse.Namespace) -> int:
    from mcts_po.extract.pipeline import extract_to_disk
    from mcts_po.tree_io import read_trees
    from mcts_po.extract.stats import format_stats

    formats = format_names(args.formats)
    config = build_config(args)
    trees = read_trees(args.trees, show_progress=not args.no_progress)
    if not trees:
        raise UserError(f"no trees in {', '.join(args.trees)}")
    stats = extract_to_disk(trees, formats, args.out, config, push_to_hub=args.push_to_hub, sources=args.trees)
    print(format_stats(stats))
    print(f"\nwritten: {', '.join(f'{args.out}/{name}' for name in formats)} (+ .jsonl, .parquet), "
          f"{args.out}/stats.json", file=sys.stderr)
    return 0
