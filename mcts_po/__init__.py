"""mcts_po: step-level preference data for reasoning models by Monte Carlo Tree Search.

The package splits into a pure search core (`mcts_po.search`, no torch), an LLM layer
(`mcts_po.llm`: prompts, step splitting, self-evaluation), backends (`mcts_po.backends`:
vLLM, transformers, OpenAI-compatible HTTP), tasks and verifiers (`mcts_po.tasks`,
`mcts_po.verifiers`), preference-data extraction (`mcts_po.extract`, no torch), training
(`mcts_po.train`) and graphs (`mcts_po.graphs`). The `mcts-po` command is `mcts_po.cli`.

    mcts-po --help
"""

__version__ = "0.1.0"
