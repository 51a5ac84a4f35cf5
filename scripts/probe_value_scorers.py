"""Value-model scorers side by side: transformers and vLLM's pooling runner, float32 and bfloat16,
on the same stored paths: seconds per path and each one's difference from transformers float32.

    flock /tmp/mcts_po_cpu.lock .venv/bin/python scripts/probe_value_scorers.py \\
        --value-model runs/bench_loop_s0/step-dpo-value/round_0/value_model \\
        --trees runs/bench_value_arith32/arithmetic/mcts_value/trees.jsonl --paths 200 --publish

The paths are every node of the trees after the root, in file order, the first --paths of them
(each scored as the search scores it: `ValueGuide.texts`, the last step's tanh(head)). Each
scorer scores them all in one call, after a warm-up call on the first 8 (the engine's start and
first-call compilation are timed apart, as `load_seconds`); the vLLM engines start with an empty
prefix cache, so their time includes computing every shared prefix once. Writes
runs/probe_value_scorers.json, or with --publish benchmarks/value_scorers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mcts_po.io_utils import UserError, atomic_write_json  # noqa: E402
from mcts_po.precision import source_commit  # noqa: E402


def compare(scores: list[float], reference: list[float]) -> dict[str, float]:
    """Max and mean |difference| and Pearson correlation of two score lists."""
    diffs = [abs(a - b) for a, b in zip(scores, reference)]
    return {"max_abs_diff": round(max(diffs), 6), "mean_abs_diff": round(sum(diffs) / len(diffs), 6),
            "correlation": round(statistics.correlation(scores, reference), 6) if len(set(scores)) > 1 else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--value-model", required=True)
    parser.add_argument("--trees", required=True, help="a trees.jsonl whose nodes are scored")
    parser.add_argument("--paths", type=int, default=200)
    parser.add_argument("--publish", action="store_true")
    args = parser.parse_args(argv)
    import torch

    from mcts_po.llm.value_guide import ValueGuide
    from mcts_po.tree_io import read_tree_file

    if not Path(args.value_model).is_dir():
        raise UserError(f"--value-model {args.value_model} is not a folder")
    trees = read_tree_file(args.trees)
    keys = [(t, n) for t, tree in enumerate(trees) for n in range(1, len(tree.nodes))][: args.paths]
    if not keys:
        raise UserError(f"{args.trees}: no nodes to score")
    pairs = ValueGuide.texts(trees, keys)
    prompts, step_lists = [p for p, _ in pairs], [s for _, s in pairs]

    def transformers_scorer(dtype):
        from mcts_po.train.value_model import ValueScorer

        scorer = ValueScorer(args.value_model, device="cpu", batch_size=16)
        scorer.model = scorer.model.to(dtype)
        return scorer, lambda: [s[-1] for s in scorer.score_paths(prompts, step_lists)], lambda: None

    def vllm_scorer(dtype):
        from mcts_po.backends.vllm_value import VLLMValueScorer

        scorer = VLLMValueScorer(args.value_model, dtype=dtype)
        def run():
            scorer.llm.reset_prefix_cache()
            return scorer.score_last_steps(prompts, step_lists)
        return scorer, run, scorer.close

    results: dict[str, dict] = {}
    reference = None
    for name, build in (("transformers_float32", lambda: transformers_scorer(torch.float32)),
                        ("transformers_bfloat16", lambda: transformers_scorer(torch.bfloat16)),
                        ("vllm_float32", lambda: vllm_scorer("float32")),
                        ("vllm_bfloat16", lambda: vllm_scorer("bfloat16"))):
        started = time.perf_counter()
        scorer, run, close = build()
        if hasattr(scorer, "score_last_steps"):
            scorer.score_last_steps(prompts[:8], step_lists[:8])
        else:
            scorer.score_paths(prompts[:8], step_lists[:8])
        load = time.perf_counter() - started
        started = time.perf_counter()
        scores = run()
        seconds = time.perf_counter() - started
        close()
        entry = {"load_seconds": round(load, 1), "seconds": round(seconds, 2),
                 "ms_per_path": round(1000 * seconds / len(keys), 2)}
        if reference is None:
            reference = scores
        else:
            entry.update(compare(scores, reference))
            entry["speedup_vs_transformers_float32"] = round(results["transformers_float32"]["seconds"] / seconds, 2)
        results[name] = entry
        print(name, entry, file=sys.stderr, flush=True)
    commit = source_commit(REPO)
    from mcts_po.precision import cpu_has_native_bf16

    report = {"command": "scripts/probe_value_scorers.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "commit": commit, "machine": {"processor": platform.machine(), "cores": os.cpu_count(),
                                            "bf16_instructions": cpu_has_native_bf16()},
              "value_model": args.value_model, "trees": args.trees, "paths": len(keys),
              "path_characters_mean": round(sum(len(p) + sum(map(len, s)) for p, s in pairs) / len(pairs), 1),
              "reference": "transformers_float32", "scorers": results}
    target = REPO / "benchmarks" / "value_scorers.json" if args.publish else REPO / "runs" / "probe_value_scorers.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(target, report)
    print(f"wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
