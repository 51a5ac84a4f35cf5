"""Subcommands of the `mcts-po` CLI, one module each.

Each module defines `add_arguments(parser)` and `run(args) -> int`. `mcts_po.cli` imports
only the module of the command being run, so `mcts-po extract` never imports torch.
"""

# command name -> (module under mcts_po.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "search": ("search", "build MCTS trees for problems of a task and write them as JSONL"),
    "extract": ("extract", "turn saved trees into preference datasets (step-dpo, step-dpo-repo, step-apo, tpo, dpo, sft)"),
    "show": ("show", "print a tree as text and a run's statistics"),
    "export": ("export", "export trees as GraphML, node-link/tree JSON or an offline HTML viewer"),
    "train": ("train", "train a policy on extracted preference data"),
    "eval": ("evaluate", "greedy accuracy and maj@k of a model on a task split"),
    "loop": ("loop", "AlphaZero-style rounds: search, extract, train, evaluate"),
    "model": ("model", "resolve or convert a model name (e.g. smollm2-135m) to a local HF folder"),
}
