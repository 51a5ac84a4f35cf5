"""Value model vs training data: does a value model rank held-out steps better with more trees to learn from?

Issue #20 asks for a value model with AUC >= 0.75 against the subtree outcome; the loop's value
models (trained on one round's 32 trees, 40 optimiser steps) scored 0.40-0.57. This script asks
how far more trees and another target carry the same model, cheaply: the policy's backbone is
frozen and only the scalar head is fitted (a linear probe: the head `mcts-po train --method value`
puts on the backbone, without the backbone's training), so one forward pass per path serves every
training-set size and target; a fine-tuned value model of the shipped trainer can be added beside.

    # the trees: policy 0 searches fresh train problems and held-out test problems (loop settings)
    mcts-po search ... --split train --offset 512 --limit 256 --seed 11 --out runs/value_data/train_trees
    mcts-po search ... --split test  --offset 0   --limit 64  --seed 12 --out runs/value_data/heldout_trees
    flock /tmp/mcts_po_cpu.lock .venv/bin/python scripts/bench_value_data.py --work runs/value_data
    # more train trees: search the next problems into another folder and name both (in order)
    mcts-po search ... --split train --offset 768 --limit 256 --seed 13 --out runs/value_data/train_trees_768
    ... scripts/bench_value_data.py --work runs/value_data --train-searches train_trees,train_trees_768 --sizes 32,64,128,256,512
    .venv/bin/python scripts/bench_value_data.py --work runs/value_data --report-only --publish

(the full search commands are in the report). Sections, each saved in WORK when it finishes
(rerun to resume):

- `features`: the frozen policy's last hidden state (bf16 autocast where the CPU has bf16 instructions) at the last token of every step node's step
  (non-terminal, depth >= 1: the nodes the search asks a value model about), the text being what
  the search scores (`node_text.value_path`). One forward per maximal path; the prefix's hidden
  states are the same in a longer path (causal attention), so each node is computed once.
- `probes`: for each training size (the first N train trees) and target, the head w (no bias, as
  the shipped `score` layer) minimising the weighted mean of (tanh(w . h) - y)^2 + l2 |w|^2, l2
  chosen from L2_GRID by 4-fold cross-validation over train trees (AUC); targets: `q` (the node's backed-up
  Q, what `--method value` regresses to) and `outcome` (2 s - 1, s the share of correct among
  the verified terminals below; nodes without any are left out). Scored on the held-out trees:
  AUC with a 95 % bootstrap interval over held-out trees (1,000 resamples), its difference to the
  self-evaluation's AUC on the same nodes with a paired bootstrap interval (the same resampled
  trees for both), Brier.
- Baselines on the same held-out nodes: the stored self-evaluation (the nodes that have one), and
  the depth of the node alone (does a head only learn "deeper is worse"?).
- `finetune` (with --finetune-trees N): the shipped trainer (`train_value_model`, `--method value`,
  backbone and head) on the value rows of the first N train trees, --finetune-epochs epochs at the
  loop's batch size and learning rate, scored on the same held-out nodes.
- `frozen` (with --frozen-trees N,M): the shipped trainer with `--backbone frozen --target
  outcome` (--frozen-target) on the value rows of the first N train trees (its rows also hold
  the terminal steps, which the probes leave out), scored on the same held-out nodes.

Report: WORK/value_data.md + .json; --publish writes benchmarks/value_data.md + .json.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mcts_po.io_utils import UserError, atomic_write_json, atomic_write_text  # noqa: E402
from mcts_po.precision import source_commit  # noqa: E402
from mcts_po.score_quality import auc_interval, paired_auc_difference  # noqa: E402

TARGETS = ("q", "outcome")
L2_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def machine() -> str:
    from mcts_po.precision import machine_summary

    return machine_summary(("torch", "transformers"))


# ---------------------------------------------------------------- nodes and targets (torch-free)


def node_table(trees: Sequence[Any]) -> list[dict[str, Any]]:
    """One entry per step node (non-terminal, depth >= 1) of every tree: keys, targets, baselines."""
    from mcts_po.extract.value_targets import outcome_share, subtree_outcomes as outcome_counts
    from mcts_po.graphs.run_stats import subtree_outcomes
    from mcts_po.score_quality import step_nodes

    counts = [outcome_counts(tree) for tree in trees]  # once per tree, not per node
    labels = [subtree_outcomes(tree) for tree in trees]
    table = []
    for tree_index, node_id in step_nodes(trees):
        node = trees[tree_index].nodes[node_id]
        table.append({"tree": tree_index, "node": node_id, "depth": node.depth, "visits": node.visits,
                      "q": float(node.q), "share": outcome_share(*counts[tree_index][node_id]),
                      "label": labels[tree_index][node_id], "self_eval": node.self_eval})
    return table


def targets_of(table: Sequence[dict[str, Any]], target: str) -> list[float | None]:
    """The regression target in [-1, 1] of each node (None: not trained on)."""
    if target == "q":
        return [entry["q"] if entry["visits"] > 0 else None for entry in table]
    if target == "outcome":
        return [None if entry["share"] is None else 2.0 * entry["share"] - 1.0 for entry in table]
    raise ValueError(f"unknown target {target!r}; one of {', '.join(TARGETS)}")


def auc_of(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    from mcts_po.graphs.run_stats import ranking_auc

    return ranking_auc(list(zip(scores, labels)))


def auc_difference(table: Sequence[dict[str, Any]], values: Sequence[float | None], seed: int = 0,
                   reference: Sequence[float | None] | None = None) -> dict[str, Any] | None:
    """AUC of `values` minus the AUC of `reference` (default: the stored self-evaluation) on the nodes
    that have both and an outcome, with a paired 95 % bootstrap interval over trees
    (`score_quality.paired_auc_difference`)."""
    reference = [e["self_eval"] for e in table] if reference is None else reference
    return paired_auc_difference([(e["tree"], v, r, bool(e["label"])) for e, v, r in zip(table, values, reference)
                                  if v is not None and r is not None and e["label"] is not None], seed)


def quality(table: Sequence[dict[str, Any]], scores: Sequence[float | None], probability: bool,
            seed: int = 0) -> dict[str, Any] | None:
    """AUC (+ 95 % bootstrap interval over trees) and Brier of `scores` against the subtree outcome,
    on the nodes that have both; `probability`: scores are in [0, 1] already (else v -> (v + 1) / 2)."""
    from mcts_po.score_quality import value_probability

    points = [(entry["tree"], s if probability else value_probability(s), bool(entry["label"]))
              for entry, s in zip(table, scores) if s is not None and entry["label"] is not None]
    if not points:
        return None
    labels = [label for _, _, label in points]
    auc = auc_of([p for _, p, _ in points], labels)
    interval = auc_interval(points, seed)
    brier = sum((p - float(label)) ** 2 for _, p, label in points) / len(points)
    return {"nodes": len(points), "good": sum(labels), "bad": len(labels) - sum(labels),
            "auc": None if auc is None else round(auc, 4), "auc_ci95": interval, "brier": round(brier, 4)}


# ---------------------------------------------------------------- features (torch)


@functools.lru_cache(maxsize=1)
def load_backbone(model_name: str):
    """(tokenizer, backbone, bf16) of the policy: the value model's backbone, frozen, in eval mode;
    bf16 where the CPU has bf16 instructions (a probe's ranking, not the shipped scores, is measured).
    Kept for the next call (the held-out and the train features load it once)."""
    from mcts_po.precision import cpu_has_native_bf16
    from mcts_po.train.checkpoints import load_tokenizer
    from mcts_po.train.value_model import head_and_backbone, load_value_model

    tokenizer = load_tokenizer(model_name)
    _, backbone = head_and_backbone(load_value_model(model_name, "cpu", tokenizer.pad_token_id).eval())
    return tokenizer, backbone, cpu_has_native_bf16()


def hidden_states(model, trees: Sequence[Any], table: Sequence[dict[str, Any]], batch_size: int = 16,
                  layers: Sequence[int] | None = None):
    """Tensor[len(table), hidden] float32: the frozen backbone's last hidden state at each node's last
    step token. `model`: a model name or load_backbone's triple. With `layers` (1 = the first decoder
    layer, num_hidden_layers = the last): Tensor[len(table), len(layers), hidden], the output of each
    of those layers after the backbone's final norm (what the backbone cut after that layer outputs)."""
    import contextlib

    import torch

    from mcts_po.train.value_model import last_hidden_states

    tokenizer, backbone, bf16 = load_backbone(model) if isinstance(model, str) else model
    wanted = {(e["tree"], e["node"]): i for i, e in enumerate(table)}
    out = torch.zeros(len(table), *([len(layers)] if layers else []), backbone.config.hidden_size)
    filled = [False] * len(table)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        for chunk, _, _, batch in maximal_path_batches(tokenizer, trees, wanted, batch_size):
            if layers:
                hidden = layer_outputs(backbone, batch.input_ids, batch.attention_mask, layers).float()
            else:
                hidden = last_hidden_states(backbone, batch.input_ids, batch.attention_mask).float()
            for row, (t, n) in enumerate(chunk):
                for step, node in enumerate(trees[t].path(n)):
                    index = wanted.get((t, node.node_id))
                    if index is not None and not filled[index]:
                        out[index] = hidden[row, int(batch.step_ends[row, step])]
                        filled[index] = True
    if not all(filled):
        raise RuntimeError(f"{filled.count(False)} nodes got no hidden state")
    return out


def maximal_path_batches(tokenizer, trees: Sequence[Any], wanted, batch_size: int):
    """The maximal paths through the `wanted` (tree, node) keys (ending at a wanted node none of whose
    children is wanted), longest first, tokenised as the value model reads them, `batch_size` at a
    time: yields (chunk of (tree, node) ends, the chunk's (prompt, steps), its step delimiter, PathBatch)."""
    from mcts_po.extract.tree_text import step_delimiter
    from mcts_po.llm import node_text
    from mcts_po.train.value_model import DEFAULT_DELIMITER, build_path_batch

    ends = [(t, n) for (t, n) in wanted if not any((t, c) in wanted for c in trees[t].nodes[n].children)]
    ends.sort(key=lambda key: -len(trees[key[0]].path(key[1])))
    for start in range(0, len(ends), batch_size):
        chunk = ends[start:start + batch_size]
        texts = [node_text.value_path(trees[t], n) for t, n in chunk]
        delimiter = step_delimiter(trees[chunk[0][0]]) or DEFAULT_DELIMITER
        yield chunk, texts, delimiter, build_path_batch(tokenizer, [p for p, _ in texts], [s for _, s in texts], delimiter)


def layer_outputs(backbone, input_ids, attention_mask, layers: Sequence[int]):
    """Tensor[B, T, len(layers), H]: each chosen decoder layer's output, passed through the final norm
    (hidden_states[num_hidden_layers] has it already)."""
    import torch

    from mcts_po.train.value_model import position_ids_from_attention_mask

    last = backbone.config.num_hidden_layers
    if not layers or min(layers) < 1 or max(layers) > last:
        raise UserError(f"layers {list(layers)}: each must be in 1..{last} (the backbone's decoder layers)")
    states = backbone(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, use_cache=False,
                      position_ids=position_ids_from_attention_mask(attention_mask)).hidden_states
    return torch.stack([states[k] if k == last else backbone.norm(states[k]) for k in layers], dim=2)


def fit_head(features, targets: Sequence[float], l2: float):
    """The head `--backbone frozen` fits (`value_model.fit_tanh_head`, each node weighing the same)."""
    from mcts_po.train.value_model import fit_tanh_head

    return fit_tanh_head(features, targets, None, l2)[0]


def choose_l2(features, targets: Sequence[float | None], table: Sequence[dict[str, Any]], rows: Sequence[int]) -> float:
    """The l2 of L2_GRID with the best mean held-in AUC over 4 folds of train trees."""
    import torch

    trees = sorted({table[i]["tree"] for i in rows})
    folds = [set(trees[k::4]) for k in range(4)]
    best, best_auc = L2_GRID[0], -1.0
    for l2 in L2_GRID:
        aucs = []
        for fold in folds:
            fit = [i for i in rows if table[i]["tree"] not in fold and targets[i] is not None]
            test = [i for i in rows if table[i]["tree"] in fold and table[i]["label"] is not None]
            if not fit or not test:
                continue
            w = fit_head(features[fit], [targets[i] for i in fit], l2)
            scores = torch.tanh(features[test] @ w).tolist()
            auc = auc_of(scores, [bool(table[i]["label"]) for i in test])
            if auc is not None:
                aucs.append(auc)
        mean = sum(aucs) / len(aucs) if aucs else -1.0
        if mean > best_auc:
            best, best_auc = l2, mean
    return best


def fit_probe(features, targets: Sequence[float | None], table: Sequence[dict[str, Any]], rows: Sequence[int]):
    """The frozen head on `features` fitted on `rows` (those with a target), its l2 chosen by
    choose_l2: (w, l2, the rows it was fitted on)."""
    l2 = choose_l2(features, targets, table, rows)
    fit = [i for i in rows if targets[i] is not None]
    return fit_head(features[fit], [targets[i] for i in fit], l2), l2, fit


# ---------------------------------------------------------------- sections


def load_trees(path: Path) -> list[Any]:
    from mcts_po.tree_io import read_tree_file

    if not path.exists():
        raise UserError(f"{path}: no trees (run the searches first; see the module doc)")
    return read_tree_file(path)


def per_group_files(work: Path, folder: str, name: str, tree_count: int, valid, compute, describe, log,
                    group: int = 32) -> list[Any]:
    """What `compute(first, stop)` gives for trees first..stop-1, `group` trees at a time, each kept in
    WORK/<folder>/<name>_<first tree>.pt (written atomically) so that an interrupted run resumes: a
    group is computed again when its file is missing or `valid(saved, first, stop)` is false. Logs
    `describe(payload)` and the time of each group computed."""
    import torch

    payloads = []
    for first in range(0, tree_count, group):
        stop = min(first + group, tree_count)
        part = work / folder / f"{name}_{first:04d}.pt"
        payload = torch.load(part) if part.exists() else None
        if payload is None or not valid(payload, first, stop):
            started = time.monotonic()
            payload = compute(first, stop)
            part.parent.mkdir(parents=True, exist_ok=True)
            torch.save(payload, part.with_suffix(".tmp"))
            part.with_suffix(".tmp").replace(part)
            log(f"{folder} {name} trees {first}-{stop - 1}: {describe(payload)} in {time.monotonic() - started:.0f} s")
        payloads.append(payload)
    return payloads


def load_tree_sets(work: Path, train_searches: str) -> tuple[list[str], list[Any], list[Any]]:
    """(the search folders of the comma list `train_searches`, their trees in that order as the train
    trees, WORK/heldout_trees' trees)."""
    searches = [s.strip() for s in train_searches.split(",") if s.strip()]
    train_trees = [tree for folder in searches for tree in load_trees(work / folder / "trees.jsonl")]
    return searches, train_trees, load_trees(work / "heldout_trees" / "trees.jsonl")


def group_features(work: Path, folder: str, name: str, model, trees: list[Any], table: Sequence[dict[str, Any]], log,
                   layers: Sequence[int] | None = None, group: int = 32):
    """hidden_states of `table`'s nodes (`trees`), `group` trees at a time, each group kept in
    WORK/<folder>/<name>_<first tree>.pt so that an interrupted run resumes: a group is computed again
    when its file is missing, holds another node count (a last group that has grown since) or, with
    `layers`, other layers (those files hold {"layers", "features"} in float16). `model`: a model name
    or load_backbone's triple (loaded once, only if some group needs computing)."""
    import torch

    def rows(first: int, stop: int) -> list[dict[str, Any]]:
        return [e for e in table if first <= e["tree"] < stop]

    def features_of(saved) -> Any:
        return saved if layers is None else saved["features"]

    def valid(saved, first: int, stop: int) -> bool:
        return (layers is None or saved["layers"] == list(layers)) and len(features_of(saved)) == len(rows(first, stop))

    def compute(first: int, stop: int):
        features = hidden_states(load_backbone(model) if isinstance(model, str) else model, trees, rows(first, stop),
                                 layers=layers)
        return features if layers is None else {"layers": list(layers), "features": features.half()}

    shape = f" x {len(layers)} layers" if layers is not None else ""
    saved = per_group_files(work, folder, name, len(trees), valid, compute,
                            lambda payload: f"{len(features_of(payload))} nodes{shape}", log, group)
    return torch.cat([features_of(payload) for payload in saved])


def features_section(work: Path, model: str, train_trees: list[Any], heldout_trees: list[Any], log) -> None:
    """WORK/features_{heldout,train}.pt ({"table", "features"}), built from group_features' files
    (WORK/features/)."""
    import torch

    for name, trees in (("heldout", heldout_trees), ("train", train_trees)):
        path = work / f"features_{name}.pt"
        table = node_table(trees)
        if path.exists() and len(torch.load(path)["table"]) == len(table):
            continue  # (a search folder added to --train-searches changes the table: rebuilt from the group files)
        features = group_features(work, "features", name, model, trees, table, log)
        tmp = path.with_suffix(".tmp")
        torch.save({"table": table, "features": features}, tmp)
        tmp.replace(path)
        log(f"features {name}: {len(table)} nodes of {len(trees)} trees")


def probes_section(work: Path, sizes: Sequence[int], results: dict[str, Any], log) -> None:
    import torch

    train = torch.load(work / "features_train.pt")
    heldout = torch.load(work / "features_heldout.pt")
    table, features = train["table"], train["features"]
    h_table, h_features = heldout["table"], heldout["features"]
    probes = results.setdefault("probes", {})
    for size in sizes:
        for target in TARGETS:
            key = f"{target}_{size}"
            if key in probes:
                continue
            targets = targets_of(table, target)
            rows = [i for i, e in enumerate(table) if e["tree"] < size]
            started = time.monotonic()
            w, l2, fit = fit_probe(features, targets, table, rows)
            scores = torch.tanh(h_features @ w).tolist()
            probes[key] = {"target": target, "train_trees": size, "train_nodes": len(fit), "l2": l2,
                           "seconds": round(time.monotonic() - started, 1),
                           "heldout": quality(h_table, scores, probability=False),
                           "minus_self_eval": auc_difference(h_table, scores),
                           "train": quality([table[i] for i in rows], torch.tanh(features[rows] @ w).tolist(),
                                            probability=False)}
            log(f"probe {key}: held-out AUC {probes[key]['heldout']['auc']} {probes[key]['heldout']['auc_ci95']} "
                f"(train AUC {probes[key]['train']['auc']}, l2 {l2}; minus self-eval {probes[key]['minus_self_eval']})")
    results["baselines"] = {
        "self_eval": quality(h_table, [e["self_eval"] for e in h_table], probability=True),
        "depth_deeper_is_better": quality(h_table, [min(1.0, e["depth"] / 10) for e in h_table], probability=True),
    }


def trained_section(work: Path, model: str, train_trees: list[Any], heldout_trees: list[Any], size: int,
                    results: dict[str, Any], log, epochs: int = 0, target: str = "") -> None:
    """A value model of the shipped trainer (`train_value_model`, as `mcts-po train --method value`) on
    the value rows of the first `size` train trees, scored on the held-out nodes: fine-tuned
    (`epochs` > 0: backbone and head, target q, the loop's batch size and learning rate) or with the
    backbone frozen (`target`: q or outcome, the default head_l2)."""
    import torch

    from mcts_po.extract.config import ExtractConfig
    from mcts_po.extract.value_targets import rows_from_trees
    from mcts_po.llm.value_guide import ValueGuide
    from mcts_po.train.config import TrainConfig, ValueConfig
    from mcts_po.train.value_model import train_value_model

    key = f"finetune_{size}_{epochs}ep" if epochs else f"frozen_{size}_{target}"
    section = "finetune" if epochs else "frozen"
    if key in results.get(section, {}):
        return
    rows = rows_from_trees(train_trees[:size], ExtractConfig())
    # the loop's value settings (configs/loop_arithmetic_value_cpu.yaml); fine-tuning: whole epochs
    config = TrainConfig(num_epochs=max(1, epochs), max_steps=0, batch_size=4, learning_rate=1e-5, max_length=384,
                         seed=20, progress=True)
    value_config = ValueConfig() if epochs else ValueConfig(backbone="frozen", target=target)
    out = work / key
    if not (out / "training_log.json").exists():
        train_value_model(model, rows, "value", config, out, value_config)
    h_table = torch.load(work / "features_heldout.pt")["table"]
    h_table = [e for e in h_table if e["label"] is not None]  # the nodes AUC and Brier are over
    guide = ValueGuide(str(out), device="cpu")
    scores = guide.score(heldout_trees, [(e["tree"], e["node"]) for e in h_table])
    record = json.loads((out / "training_log.json").read_text(encoding="utf-8"))
    results.setdefault(section, {})[key] = {
        "train_trees": size, "rows": len(rows), "epochs": epochs, "target": target or "q",
        "optimizer_steps": record.get("optimizer_steps"), "train_seconds": record.get("seconds"),
        "steps_trained": record.get("steps_trained"), "model": str(out), "score_seconds": round(guide.seconds, 1),
        "heldout": quality(h_table, scores, probability=False), "minus_self_eval": auc_difference(h_table, scores)}
    log(f"{key}: held-out AUC {results[section][key]['heldout']['auc']} {results[section][key]['heldout']['auc_ci95']}")


# ---------------------------------------------------------------- report


def fmt_quality(q: dict[str, Any] | None, difference: dict[str, Any] | None = None) -> str:
    if not q:
        return "| - | - | - | - |"
    ci = q.get("auc_ci95")
    auc = f"{q['auc']} [{ci[0]}, {ci[1]}]" if ci else f"{q['auc']}"
    diff = "-"
    if difference and difference.get("difference") is not None:
        dci = difference.get("ci95")
        diff = f"{difference['difference']:+.3f}" + (f" [{dci[0]:+.3f}, {dci[1]:+.3f}]" if dci else "")
    return f"| {q['nodes']} ({q['good']} good) | {auc} | {diff} | {q['brier']} |"


def report(results: dict[str, Any]) -> str:
    lines = ["# Value model vs training data: a frozen-backbone head on more trees", "",
             f"Written by `scripts/bench_value_data.py` from {results.get('work')}; its last invocation ran at commit {results.get('commit')} (the Notes say which sections ran when); "
             f"{results.get('machine')}. Policy and backbone: `{results.get('model')}` (policy 0, frozen). "
             "AUC against the subtree outcome (a correct terminal at or below the node) on the step nodes of "
             f"{results.get('heldout_trees')} held-out trees (test problems no training tree saw), with a 95 % bootstrap "
             "interval over held-out trees; Brier with a value v read as p = (v + 1) / 2.", "",
             "Trees: " + results.get("trees_note", ""), "",
             "| scores | trained on | held-out nodes | AUC [95 % CI] | AUC minus self-evaluation's [paired 95 % CI] | Brier |",
             "|---|---|---|---|---|---|"]
    base = results.get("baselines", {})
    lines.append("| self-evaluation (stored verdicts) | - " + fmt_quality(base.get("self_eval")))
    lines.append("| depth alone (deeper = better) | - " + fmt_quality(base.get("depth_deeper_is_better")))
    for key, probe in sorted(results.get("probes", {}).items(), key=lambda kv: (kv[1]["target"], kv[1]["train_trees"])):
        lines.append(f"| frozen backbone + head, target {probe['target']} (l2 {probe['l2']}) | {probe['train_trees']} trees, "
                     f"{probe['train_nodes']} nodes " + fmt_quality(probe["heldout"], probe.get("minus_self_eval")))
    for key, tune in sorted(results.get("finetune", {}).items()):
        lines.append(f"| fine-tuned (`--method value`, target q), {tune['epochs']} epochs, {tune['optimizer_steps']} steps, "
                     f"{tune['train_seconds']:.0f} s | {tune['train_trees']} trees, {tune['rows']} rows "
                     + fmt_quality(tune["heldout"], tune.get("minus_self_eval")))
    for key, fit in sorted(results.get("frozen", {}).items()):
        lines.append(f"| `--method value --backbone frozen --target {fit['target']}` (shipped trainer, its rows include "
                     f"terminal steps), {fit['train_seconds']:.0f} s | {fit['train_trees']} trees, {fit['rows']} rows "
                     + fmt_quality(fit["heldout"], fit.get("minus_self_eval")))
    lines += ["", "## Notes", "", results.get("notes", "(none yet)"), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="runs/value_data", help="folder with train_trees/ and heldout_trees/; results go here")
    parser.add_argument("--model", default="smollm2-135m", help="the policy whose backbone is probed (the trees' policy)")
    parser.add_argument("--sizes", default="32,64,128,256", help="training sizes: the first N train trees")
    parser.add_argument("--train-searches", default="train_trees",
                        help="comma list of search folders under WORK whose trees, in this order, are the train trees "
                             "(add a folder to grow the training set; the first trees stay the first)")
    parser.add_argument("--finetune-trees", type=int, default=0, help="also fine-tune the shipped value model on the first N trees (0: no)")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--frozen-trees", default="", help="also fit `--backbone frozen` value models with the shipped trainer on the first N trees (comma list)")
    parser.add_argument("--frozen-target", default="outcome", help="their target: q or outcome")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report from WORK/value_data.json")
    parser.add_argument("--publish", action="store_true", help="write benchmarks/value_data.md + .json instead of WORK's")
    args = parser.parse_args(argv)
    work = Path(args.work)
    results_path = work / "value_data.json"
    results: dict[str, Any] = json.loads(results_path.read_text(encoding="utf-8")) if results_path.exists() else {}

    def log(message: str) -> None:
        print(f"[bench_value_data] {message}", flush=True)

    if not args.report_only:
        searches, train_trees, heldout_trees = load_tree_sets(work, args.train_searches)
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
        if max(sizes) > len(train_trees):
            raise UserError(f"--sizes asks for {max(sizes)} train trees; {', '.join(searches)} under {work} hold {len(train_trees)}")
        results.update({"train_searches": searches, "work": str(work), "model": args.model, "commit": source_commit(REPO), "machine": machine(),
                        "train_trees": len(train_trees), "heldout_trees": len(heldout_trees)})
        features_section(work, args.model, train_trees, heldout_trees, log)
        probes_section(work, sizes, results, log)
        atomic_write_json(results_path, results)
        if args.finetune_trees:
            trained_section(work, args.model, train_trees, heldout_trees, args.finetune_trees, results, log,
                            epochs=args.finetune_epochs)
            atomic_write_json(results_path, results)
        for size in [int(s) for s in args.frozen_trees.split(",") if s.strip()]:
            trained_section(work, args.model, train_trees, heldout_trees, size, results, log, target=args.frozen_target)
            atomic_write_json(results_path, results)
        log("all done")
    notes = work / "NOTES.md"
    if notes.exists():
        results["notes"] = notes.read_text(encoding="utf-8").strip()
    searches = work / "SEARCHES.md"
    if searches.exists():
        results["trees_note"] = searches.read_text(encoding="utf-8").strip()
    write_report(results, report(results), work, "value_data", args.publish, log)
    return 0


def write_report(results: dict[str, Any], markdown: str, work: Path, name: str, publish: bool, log) -> None:
    """WORK/<name>.md, or with `publish` benchmarks/<name>.md + .json."""
    target = REPO / "benchmarks" / name if publish else work / name
    atomic_write_text(target.with_suffix(".md"), markdown)
    if publish:
        atomic_write_json(target.with_suffix(".json"), results)
    log(f"report: {target.with_suffix('.md')}")


if __name__ == "__main__":
    sys.exit(main())
