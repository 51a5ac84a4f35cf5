"""`mcts-po model NAME`: resolve a model name to what the backends load, converting aliases once.

    mcts-po model smollm2-135m      # converts the packaged GGUF (first time), prints the folder
    mcts-po model --list
"""

from __future__ import annotations

import argparse

from mcts_po.models import DEFAULT_MODEL, PACKAGED_MODELS, resolve_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", default=DEFAULT_MODEL, help="alias, local folder or hub id")
    parser.add_argument("--cache-dir", help="where converted aliases live (default: $MCTS_PO_CACHE or ~/.cache/mcts_po)")
    parser.add_argument("--list", action="store_true", help="list the built-in aliases")


def run(args: argparse.Namespace) -> int:
    if args.list:
        for alias, packaged in PACKAGED_MODELS.items():
            print(f"{alias}\t{packaged.hub_id}\t(PyPI package {packaged.package})")
        return 0
    print(resolve_model(args.name, args.cache_dir))
    return 0
