"""The `mcts-po` command line: dispatches to one module per subcommand in mcts_po.commands.

    mcts-po --help
    mcts-po search --task gsm8k --split test --limit 20 --model smollm2-135m --backend vllm --out runs/x

Errors a user can fix (bad input files, unknown names) are printed as one line without a
traceback and exit with status 2; set MCTS_PO_DEBUG=1 to see the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from mcts_po import __version__
from mcts_po.commands import COMMANDS


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcts-po", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mcts_po {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:  # import only the command being run
            module = importlib.import_module(f"mcts_po.commands.{module_name}")
            module.add_arguments(sub_parser)
            sub_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage and the error (or the help)
        return int(exc.code or 0)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0 if command is None else 2
    from mcts_po.io_utils import InputError, UserError

    try:
        return int(args._run(args) or 0)
    except (UserError, InputError) as exc:
        if os.environ.get("MCTS_PO_DEBUG"):
            raise
        print(f"mcts-po {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mcts-po {command}: interrupted; finished work is saved, rerun the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
