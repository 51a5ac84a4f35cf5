"""Which decoder layer of the frozen policy carries the value? Linear heads on each layer's output.

scripts/bench_value_data.py fits the shipped frozen value head (v = tanh(w . h), no bias) on the
policy's LAST hidden state and finds it levelling off at a held-out AUC of about 0.74 (256-448
train trees), under the 0.75 of issue #20. Linear probes of language models often read more from a
middle layer than from the last, which is shaped for next-token prediction. This script fits the
same head, the same way (target, l2 by 4-fold cross-validation over train trees, held-out AUC with
a 95 % bootstrap interval over held-out trees, paired difference to the self-evaluation), on the
output of each decoder layer in --layers after the backbone's final norm: exactly what a value
model whose backbone is cut after that layer would compute (and such a model costs that fraction
of the full forward). `all` concatenates the chosen layers (a head on all of them at once).

Needs bench_value_data's trees (WORK/heldout_trees, the --train-searches folders); one forward per
maximal path and tree group, saved in WORK/layer_features/ (rerun to resume; about 2 s per tree on
2 CPU cores), then the probes (seconds each).

    flock /tmp/mcts_po_cpu.lock .venv/bin/python scripts/probe_value_layers.py --work runs/value_data \\
        --train-searches train_trees,train_trees_768 --sizes 256,448
    .venv/bin/python scripts/probe_value_layers.py --work runs/value_data --report-only --publish   # benchmarks/value_layers.{md,json}
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mcts_po.io_utils import UserError, atomic_write_json  # noqa: E402
from mcts_po.precision import source_commit  # noqa: E402

DEFAULT_LAYERS = "2,6,10,14,18,22,26,30"


@functools.lru_cache(maxsize=1)
def bench_value_data():
    """scripts/bench_value_data.py as a module, loaded once (trees, node table, features, head fit, l2 choice, AUC intervals)."""
    spec = importlib.util.spec_from_file_location("bench_value_data", REPO / "scripts" / "bench_value_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def layer_features(bench, work: Path, model: str, name: str, trees: list[Any], layers: list[int], log) -> dict[str, Any]:
    """{"table", "features": Tensor[nodes, len(layers), hidden] float16} of `trees`, from per-group files
    WORK/layer_features/<name>_<first tree>.pt (bench_value_data.group_features)."""
    table = bench.node_table(trees)
    return {"table": table, "features": bench.group_features(work, "layer_features", name, model, trees, table, log,
                                                             layers=layers)}


def probe(bench, train: dict[str, Any], heldout: dict[str, Any], column, rows: Sequence[int], target: str) -> dict[str, Any]:
    """The shipped frozen head (no bias, no feature scaling) on train[column], fitted on `rows`."""
    import torch

    x = train["features"][:, column].float().flatten(1)
    hx = heldout["features"][:, column].float().flatten(1)
    targets = bench.targets_of(train["table"], target)
    started = time.monotonic()
    w, l2, fit = bench.fit_probe(x, targets, train["table"], rows)
    scores = torch.tanh(hx @ w).tolist()
    return {"features": int(x.shape[1]), "train_nodes": len(fit), "l2": l2, "seconds": round(time.monotonic() - started, 1),
            "heldout": bench.quality(heldout["table"], scores, probability=False),
            "minus_self_eval": bench.auc_difference(heldout["table"], scores),
            "train_auc": bench.quality([train["table"][i] for i in rows], torch.tanh(x[rows] @ w).tolist(),
                                       probability=False)["auc"]}


def report(results: dict[str, Any]) -> str:
    layers = results["layers"]
    lines = ["# Which layer carries the value? Frozen linear heads on each decoder layer", "",
             f"Written by `scripts/probe_value_layers.py` ({results['command']}), commit {results['commit']}; "
             f"{results['machine']}. Trees of `{results['work']}` (scripts/bench_value_data.py: policy 0's searches; "
             f"{results['train_trees']} train trees from {', '.join(results['train_searches'])}, {results['heldout_trees']} "
             f"held-out trees). Each head is the shipped frozen one (tanh(w . x), no bias, l2 by 4-fold CV over train "
             f"trees) on the output of decoder layer k of {results['num_layers']} after the final norm (what a backbone "
             f"cut after layer k computes); `all`: the chosen layers concatenated. Held-out AUC against the subtree "
             f"outcome with a 95 % bootstrap interval over held-out trees; the paired difference to the self-evaluation "
             f"on the same nodes.", ""]
    for key in sorted(results["probes"], key=lambda k: (results["probes"][k]["target"], results["probes"][k]["train_trees"])):
        block = results["probes"][key]
        lines += [f"## Target {block['target']}, first {block['train_trees']} train trees", "",
                  "| layer | features | train nodes | l2 | train AUC | held-out AUC [95 % CI] | minus self-eval [paired CI] | Brier |",
                  "|---|---|---|---|---|---|---|---|"]
        for name in [*map(str, layers), "all"]:
            record = block["layers"].get(name)
            if record is None:
                continue
            q, d = record["heldout"], record.get("minus_self_eval") or {}
            ci, dci = q.get("auc_ci95") or ["-", "-"], d.get("ci95") or ["-", "-"]
            diff = f"{d['difference']:+.3f} [{dci[0]}, {dci[1]}]" if d.get("difference") is not None else "-"
            lines.append(f"| {name} | {record['features']} | {record['train_nodes']} | {record['l2']} | {record['train_auc']} | "
                         f"{q['auc']} [{ci[0]}, {ci[1]}] | {diff} | {q['brier']} |")
        lines.append("")
    lines += [reading(results), ""]
    if results.get("notes"):
        lines += ["## Notes", "", results["notes"], ""]
    return "\n".join(lines)


def reading(results: dict[str, Any]) -> str:
    """What the tables say, from their own numbers."""
    out = []
    for block in results["probes"].values():
        per_layer = {name: r["heldout"]["auc"] for name, r in block["layers"].items() if name != "all"}
        best = max(per_layer, key=per_layer.get)
        last = str(results["num_layers"])
        text = (f"Target {block['target']}, {block['train_trees']} trees: best single layer {best} "
                f"(AUC {per_layer[best]}), the last layer {per_layer.get(last)}")
        if "all" in block["layers"]:
            text += f", all chosen layers together {block['layers']['all']['heldout']['auc']}"
        out.append(text + ".")
    return " ".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="runs/value_data", help="bench_value_data's folder (trees); results go here")
    parser.add_argument("--model", default="smollm2-135m", help="the trees' policy, whose layers are probed")
    parser.add_argument("--train-searches", default="train_trees", help="as bench_value_data: train tree folders under WORK, in order")
    parser.add_argument("--layers", default=DEFAULT_LAYERS, help="decoder layers (1 = first; SmolLM2-135M has 30)")
    parser.add_argument("--sizes", default="256", help="training sizes: the first N train trees")
    parser.add_argument("--targets", default="outcome,q", help="regression targets (bench_value_data's)")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report from WORK/value_layers.json")
    parser.add_argument("--publish", action="store_true", help="write benchmarks/value_layers.md + .json instead of WORK's")
    args = parser.parse_args(argv)
    work = Path(args.work)
    results_path = work / "value_layers.json"
    results: dict[str, Any] = json.loads(results_path.read_text(encoding="utf-8")) if results_path.exists() else {}
    bench = bench_value_data()

    def log(message: str) -> None:
        print(f"[probe_value_layers] {message}", flush=True)

    if not args.report_only:
        layers = sorted({int(s) for s in args.layers.split(",") if s.strip()})
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
        searches, train_trees, heldout_trees = bench.load_tree_sets(work, args.train_searches)
        if max(sizes) > len(train_trees):
            raise UserError(f"--sizes asks for {max(sizes)} train trees; {', '.join(searches)} under {work} hold {len(train_trees)}")
        if results.get("layers", layers) != layers or results.get("train_searches", searches) != searches:
            results = {}  # other layers or trees: the old probes do not belong to these features
        from transformers import AutoConfig

        from mcts_po.models import resolve_model

        num_layers = AutoConfig.from_pretrained(resolve_model(args.model)).num_hidden_layers
        results.update({"command": " ".join(["scripts/probe_value_layers.py", *(argv if argv is not None else sys.argv[1:])]),
                        "commit": source_commit(REPO), "machine": bench.machine(), "work": str(work), "model": args.model,
                        "layers": layers, "num_layers": num_layers, "train_searches": searches,
                        "train_trees": len(train_trees), "heldout_trees": len(heldout_trees)})
        heldout = layer_features(bench, work, args.model, "heldout", heldout_trees, layers, log)
        train = layer_features(bench, work, args.model, "train", train_trees, layers, log)
        probes = results.setdefault("probes", {})
        for size in sizes:
            rows = [i for i, e in enumerate(train["table"]) if e["tree"] < size]
            for target in [t.strip() for t in args.targets.split(",") if t.strip()]:
                block = probes.setdefault(f"{target}_{size}", {"target": target, "train_trees": size, "layers": {}})
                for column, name in [*((i, str(k)) for i, k in enumerate(layers)), (slice(None), "all")]:
                    if name in block["layers"]:
                        continue
                    record = probe(bench, train, heldout, column, rows, target)
                    block["layers"][name] = record
                    atomic_write_json(results_path, results)
                    log(f"{target} {size} trees, layer {name}: AUC {record['heldout']['auc']} {record['heldout']['auc_ci95']} "
                        f"(train {record['train_auc']}, l2 {record['l2']}, {record['seconds']} s)")
        log("all done")
    if not results.get("probes"):
        raise UserError(f"{results_path}: no probes yet; run without --report-only first")
    notes = work / "LAYERS.md"
    if notes.exists():
        results["notes"] = notes.read_text(encoding="utf-8").strip()
    bench.write_report(results, report(results), work, "value_layers", args.publish, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
