"""Past a linear head on the frozen last token: pooled step features, and the top decoder layers trained.

The shipped value model (`mcts-po train --method value`, `backbone: frozen`) is tanh(w . h) with h
the frozen policy's last hidden state at a step's last token; on bench_value_data's trees it levels
off at a held-out AUC of about 0.74 (benchmarks/value_data.md), and no other single layer does
better (benchmarks/value_layers.md). This script measures the two next candidates on the same trees
and held-out nodes, so that a value model is only changed where a measurement says it ranks better:

- `pooled`: the same head (tanh, no bias, l2 by 4-fold CV over train trees) on the last hidden
  state averaged over the node's own step tokens (`step_mean`), over all its path's step tokens
  (`path_mean`), and on the last token and the step mean side by side (`last+step_mean`);
- `top K`: the last K decoder layers, the final norm and the head trained together (AdamW, bf16
  autocast, the head started from the frozen fit), everything below frozen. Fitted on the first
  `--fit-trees` train trees; the epoch is chosen by the AUC on the remaining train trees
  (validation), never on the held-out ones; every epoch's held-out AUC is reported too.

Inputs: the frozen policy's residual stream entering its last `--top` layers, for every maximal
path through the step nodes that have an outcome, computed once and kept in WORK/top_states/ (per
32 trees; rerun to resume). One node counts once (on the first path that holds it). A check at
the first batch: the stored states run through the frozen top layers reproduce the backbone's last
hidden state (else the script stops).

    flock /tmp/mcts_po_cpu.lock .venv/bin/python scripts/probe_value_top_layers.py --work runs/value_data \\
        --train-searches train_trees,train_trees_768
    .venv/bin/python scripts/probe_value_top_layers.py --work runs/value_data --report-only --publish   # benchmarks/value_top_layers.{md,json}
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from mcts_po.io_utils import UserError, atomic_write_json  # noqa: E402
from mcts_po.precision import source_commit  # noqa: E402
from probe_value_layers import bench_value_data  # noqa: E402

POOLINGS = ("last", "step_mean", "path_mean", "last+step_mean")


# ---------------------------------------------------------------- states (torch)


def path_states(backbone_triple, trees: Sequence[Any], table: Sequence[dict[str, Any]], rows: Sequence[int], top: int,
                batch_size: int = 16) -> list[dict[str, Any]]:
    """One entry per maximal path through `rows`' nodes: {"states": Tensor[T, H] bfloat16, the residual
    stream entering the last `top` decoder layers, "nodes": [(row, step_start, steps_start, end)]}: each
    node of `rows` once, with the token span of its own step, of all its path's steps, and its last token."""
    import contextlib

    import torch

    from mcts_po.train.logprobs import position_ids_from_attention_mask, tokenize_segments

    bench = bench_value_data()
    tokenizer, backbone, bf16 = backbone_triple
    num_layers = backbone.config.num_hidden_layers
    wanted = {(table[i]["tree"], table[i]["node"]): i for i in rows}
    taken: set[int] = set()
    out = []
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        for number, (chunk, texts, delimiter, batch) in enumerate(bench.maximal_path_batches(tokenizer, trees, wanted, batch_size)):
            output = backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True,
                              use_cache=False, position_ids=position_ids_from_attention_mask(batch.attention_mask))
            states = output.hidden_states[num_layers - top]
            if number == 0:
                check_top_layers(backbone, states, output.hidden_states[num_layers], batch.attention_mask, top)
            for row, ((t, n), (prompt, steps)) in enumerate(zip(chunk, texts)):
                length = int(batch.attention_mask[row].sum())
                _, segment_of_token = tokenize_segments(tokenizer, [prompt, *[x for s in steps for x in (delimiter, s)][1:]])
                steps_start = sum(1 for segment in segment_of_token if segment == 0)
                nodes, previous_end = [], steps_start - 1
                for step, node in enumerate(trees[t].path(n)):
                    end = int(batch.step_ends[row, step])
                    index = wanted.get((t, node.node_id))
                    if index is not None and index not in taken and end >= 0:
                        nodes.append((index, previous_end + 1, steps_start, end))
                        taken.add(index)
                    previous_end = end
                if nodes:
                    out.append({"states": states[row, :length].to(torch.bfloat16).clone(), "nodes": nodes})
    missing = set(rows) - taken
    if missing:
        raise RuntimeError(f"{len(missing)} nodes got no state")
    return out


class TopLayers:
    """The last `top` decoder layers, the final norm and a head w on states[B, T, H], the residual
    stream entering those layers (right-padded rows: causal attention alone keeps padding out of every
    real position). Copies: the backbone is never changed. Of the `top` layers, the last `trained`
    (default all) are trainable with the norm and w (`parameters()`), the ones below run frozen."""

    def __init__(self, backbone, top: int, w, trained: int | None = None):
        import torch

        trained = top if trained is None else trained
        if not 1 <= trained <= top:
            raise ValueError(f"trained {trained}: between 1 and top {top}")
        layers = list(backbone.layers[-top:])
        self.frozen = torch.nn.ModuleList(copy.deepcopy(layers[: top - trained])).requires_grad_(False)
        self.layers = torch.nn.ModuleList(copy.deepcopy(layers[top - trained:]))
        self.norm = copy.deepcopy(backbone.norm)
        self.rotary = backbone.rotary_emb
        self.w = torch.nn.Parameter(w.clone().float())
        for module in (self.frozen, self.layers, self.norm):
            module.float()

    def parameters(self):
        return [*self.layers.parameters(), *self.norm.parameters(), self.w]

    def train(self, mode: bool = True) -> None:
        self.layers.train(mode)
        self.norm.train(mode)

    @staticmethod
    def _run(layer, hidden, positions, embeddings):
        hidden = layer(hidden, attention_mask=None, position_ids=positions, position_embeddings=embeddings)
        return hidden[0] if isinstance(hidden, tuple) else hidden

    def hidden(self, states):
        import torch

        positions = torch.arange(states.shape[1]).unsqueeze(0).expand(states.shape[0], -1)
        embeddings = self.rotary(states, positions)
        hidden = states
        with torch.no_grad():
            for layer in self.frozen:
                hidden = self._run(layer, hidden, positions, embeddings)
        for layer in self.layers:
            hidden = self._run(layer, hidden, positions, embeddings)
        return self.norm(hidden)


def check_top_layers(backbone, states, last_hidden, attention_mask, top: int) -> None:
    """TopLayers on the stored states must give the backbone's own last hidden state at real tokens."""
    import torch

    with torch.autocast("cpu", enabled=False):
        runner = TopLayers(backbone, top, torch.zeros(states.shape[-1]))
        mine = runner.hidden(states.float())
    real = attention_mask.bool()
    cosine = torch.nn.functional.cosine_similarity(mine[real].float(), last_hidden[real].float(), dim=-1)
    if float(cosine.min()) < 0.98:
        raise RuntimeError(f"the top {top} layers on the stored states do not reproduce the backbone's last hidden "
                           f"state (lowest cosine {float(cosine.min()):.4f}): the layer call or the mask is wrong")


def padded(entries: Sequence[dict[str, Any]]):
    import torch

    width = max(len(e["states"]) for e in entries)
    batch = torch.zeros(len(entries), width, entries[0]["states"].shape[-1])
    for row, entry in enumerate(entries):
        batch[row, : len(entry["states"])] = entry["states"].float()
    return batch


def entry_hidden(runner: TopLayers, entries: Sequence[dict[str, Any]], batch_size: int = 16):
    """(entry, its hidden states Tensor[T', H] float32) for each entry: the top layers without gradients
    in bf16 autocast, `batch_size` padded entries at a time."""
    import torch

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for start in range(0, len(entries), batch_size):
            chunk = entries[start:start + batch_size]
            hidden = runner.hidden(padded(chunk)).float()
            yield from zip(chunk, hidden)


def pooled_features(runner: TopLayers, entries: Sequence[dict[str, Any]], count: int):
    """{pooling: Tensor[count, features]} from the frozen top layers (rows not on any entry stay 0)."""
    import torch

    hidden_size = entries[0]["states"].shape[-1]
    out = {name: torch.zeros(count, hidden_size * (2 if "+" in name else 1)) for name in POOLINGS}
    for entry, hidden in entry_hidden(runner, entries):
        for index, step_start, steps_start, end in entry["nodes"]:
            last = hidden[end]
            step_mean = hidden[step_start:end + 1].mean(0)
            out["last"][index] = last
            out["step_mean"][index] = step_mean
            out["path_mean"][index] = hidden[steps_start:end + 1].mean(0)
            out["last+step_mean"][index] = torch.cat([last, step_mean])
    return out


def node_scores(runner: TopLayers, entries: Sequence[dict[str, Any]], count: int) -> list[float | None]:
    """tanh(w . h) at each entry node's last token (None for rows on no entry)."""
    import torch

    scores: list[float | None] = [None] * count
    for entry, hidden in entry_hidden(runner, entries):
        values = torch.tanh(hidden @ runner.w)
        for index, _, _, end in entry["nodes"]:
            scores[index] = float(values[end])
    return scores


# ---------------------------------------------------------------- sections


def load_states(bench, work: Path, name: str, model: str, trees: list[Any], table: list[dict[str, Any]], top: int,
                log, group: int = 32) -> list[dict[str, Any]]:
    """path_states of the nodes with an outcome, per `group` trees in WORK/top_states/<name>_<first>.pt
    (bench_value_data.per_group_files)."""

    def rows(first: int, stop: int) -> list[int]:
        return [i for i, e in enumerate(table) if first <= e["tree"] < stop and e["label"] is not None]

    def compute(first: int, stop: int) -> dict[str, Any]:
        wanted = rows(first, stop)
        return {"top": top, "rows": wanted,
                "entries": path_states(bench.load_backbone(model), trees, table, wanted, top) if wanted else []}

    saved = bench.per_group_files(
        work, "top_states", name, len(trees), lambda saved, first, stop: saved["top"] == top and saved["rows"] == rows(first, stop),
        compute, lambda saved: f"{len(saved['rows'])} nodes on {len(saved['entries'])} paths", log, group)
    return [entry for payload in saved for entry in payload["entries"]]


def head_scores(table: Sequence[dict[str, Any]], features, w) -> list[float | None]:
    """tanh(w . x) of each node with an outcome (None elsewhere)."""
    import torch

    return [None if e["label"] is None else float(torch.tanh(features[i] @ w)) for i, e in enumerate(table)]


def pooled_section(bench, train, heldout, also: dict[str, dict[str, Any]], sizes: Sequence[int], runner: TopLayers,
                   results: dict[str, Any], log) -> None:
    import torch

    train_x = pooled_features(runner, train["entries"], len(train["table"]))
    heldout_x = pooled_features(runner, heldout["entries"], len(heldout["table"]))
    also_x = {name: pooled_features(runner, other["entries"], len(other["table"])) for name, other in also.items()}
    targets = bench.targets_of(train["table"], "outcome")
    first_scores: dict[str, list[float | None]] = {}  # the smallest size's `last` head, per further held-out set
    for size in sorted(sizes):
        block = results.setdefault("pooled", {}).setdefault(str(size), {})
        rows = [i for i, e in enumerate(train["table"]) if e["tree"] < size and e["label"] is not None]
        for name in POOLINGS:
            started = time.monotonic()
            w, l2, fit = bench.fit_probe(train_x[name], targets, train["table"], rows)
            scores = head_scores(heldout["table"], heldout_x[name], w)
            block[name] = {"features": int(train_x[name].shape[1]), "train_nodes": len(fit), "l2": l2,
                           "seconds": round(time.monotonic() - started, 1),
                           "heldout": bench.quality(heldout["table"], scores, probability=False),
                           "minus_self_eval": bench.auc_difference(heldout["table"], scores),
                           "also": {}}
            for set_name, other in also.items():
                also_scores = head_scores(other["table"], also_x[set_name][name], w)
                if name == "last" and set_name not in first_scores:
                    first_scores[set_name] = also_scores
                block[name]["also"][set_name] = {
                    **bench.quality(other["table"], also_scores, probability=False),
                    "minus_first_last": bench.auc_difference(other["table"], also_scores, reference=first_scores[set_name])}
            log(f"pooled {name}, {size} trees: AUC {block[name]['heldout']['auc']} {block[name]['heldout']['auc_ci95']} (l2 {l2})")


def top_section(bench, train, heldout, also: dict[str, dict[str, Any]], backbone, stored_top: int, top: int, fit_trees: int,
                epochs: int, learning_rate: float, batch_size: int, seed: int, results: dict[str, Any], log) -> None:
    """Train the last `top` layers (of the `stored_top` the states enter) + norm + head on the first `fit_trees` train trees' nodes; per epoch the
    validation AUC (the other train trees) and the held-out quality; the epoch chosen by validation."""
    import torch

    torch.manual_seed(seed)
    table = train["table"]
    targets = bench.targets_of(table, "outcome")
    fit_entries = [e for e in train["entries"] if table[e["nodes"][0][0]]["tree"] < fit_trees]
    val_entries = [e for e in train["entries"] if table[e["nodes"][0][0]]["tree"] >= fit_trees]
    val_table = [table[i] for e in val_entries for i, *_ in e["nodes"]]
    runner = TopLayers(backbone, stored_top, torch.zeros(backbone.config.hidden_size), trained=top)
    # the head starts from the frozen fit on the same nodes (the shipped value model)
    x = pooled_features(runner, fit_entries, len(table))["last"]
    rows = [i for e in fit_entries for i, *_ in e["nodes"] if targets[i] is not None]
    w, l2, _ = bench.fit_probe(x, targets, table, rows)
    with torch.no_grad():
        runner.w.copy_(w)
    optimizer = torch.optim.AdamW(runner.parameters(), lr=learning_rate, weight_decay=0.0)
    key = f"top{top}_lr{learning_rate:g}"
    record = {"top": top, "learning_rate": learning_rate, "fit_trees": fit_trees, "fit_nodes": len(rows),
              "fit_paths": len(fit_entries), "validation_trees": len(train["trees"]) - fit_trees,
              "validation_nodes": len(val_table), "l2": l2, "batch_size": batch_size, "epochs": []}

    def evaluate(epoch: int, seconds: float, loss: float | None) -> None:
        runner.train(False)
        scores = node_scores(runner, val_entries, len(table))
        val_scores = [scores[i] for e in val_entries for i, *_ in e["nodes"]]
        held = node_scores(runner, heldout["entries"], len(heldout["table"]))
        entry = {"epoch": epoch, "seconds": round(seconds, 1), "train_loss": loss,
                 "validation": bench.quality(val_table, val_scores, probability=False),
                 "heldout": bench.quality(heldout["table"], held, probability=False),
                 "minus_self_eval": bench.auc_difference(heldout["table"], held),
                 "also": {name: bench.quality(other["table"], node_scores(runner, other["entries"], len(other["table"])),
                                              probability=False) for name, other in also.items()}}
        record["epochs"].append(entry)
        log(f"{key} epoch {epoch}: validation AUC {entry['validation']['auc']}, held-out AUC {entry['heldout']['auc']} "
            f"{entry['heldout']['auc_ci95']}, loss {loss}, {seconds:.0f} s")

    evaluate(0, 0.0, None)
    rng = random.Random(seed)
    for epoch in range(1, epochs + 1):
        started = time.monotonic()
        runner.train(True)
        order = sorted(fit_entries, key=lambda e: len(e["states"]))
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        rng.shuffle(batches)
        losses = []
        for chunk in batches:
            picks = [(row, index, end) for row, e in enumerate(chunk) for index, _, _, end in e["nodes"]
                     if targets[index] is not None]
            if not picks:
                continue
            with torch.autocast("cpu", dtype=torch.bfloat16):
                hidden = runner.hidden(padded(chunk))
            chosen = hidden[[r for r, _, _ in picks], [e for _, _, e in picks]].float()
            y = torch.tensor([targets[i] for _, i, _ in picks])
            loss = ((torch.tanh(chosen @ runner.w) - y) ** 2).mean() + l2 * (runner.w ** 2).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(runner.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
        evaluate(epoch, time.monotonic() - started, round(sum(losses) / len(losses), 4))
    best = max(record["epochs"], key=lambda e: ((e["validation"] or {}).get("auc") or -1, -e["epoch"]))
    record["chosen_epoch"] = best["epoch"]
    results.setdefault("top", {})[key] = record


def report(results: dict[str, Any]) -> str:
    def cell(q, d=None):
        ci = q.get("auc_ci95") or ["-", "-"]
        text = f"{q['auc']} [{ci[0]}, {ci[1]}]"
        if d is not None:
            dci = d.get("ci95") or ["-", "-"]
            text += f" | {d['difference']:+.3f} [{dci[0]}, {dci[1]}]"
        return text

    lines = ["# Value model: pooled step features and trained top layers", "",
             f"Written by `scripts/probe_value_top_layers.py` ({results['command']}), commit {results['commit']}; "
             f"{results['machine']}. Trees of `{results['work']}` (scripts/bench_value_data.py: policy 0's searches; "
             f"{results['train_trees']} train trees from {', '.join(results['train_searches'])}, {results['heldout_trees']} "
             f"held-out trees of test problems). Target: the outcome share below a node (2 s - 1); AUC against the "
             f"subtree outcome on the {results['heldout_nodes']} held-out step nodes that have one, with a 95 % bootstrap "
             f"interval over held-out trees and the paired difference to the self-evaluation on the same nodes.", ""]
    also = results.get("also_heldout") or {}
    for name, info in also.items():
        lines += [f"Also held out, `{name}`: the {info['nodes']} step nodes with an outcome of the {info['trees']} trees "
                  f"in {info['folder']} (problems no train tree saw), AUC with its 95 % bootstrap interval in the last "
                  f"column(s); in the pooled tables also its paired difference (bootstrap over those trees) to the "
                  f"`last` head of the smallest training size.", ""]
    also_head = "".join(f" {name} AUC [95 % CI] |" for name in also)
    also_rule = "---|" * len(also)

    def also_cells(record):
        out = ""
        for name in also:
            q = record.get("also", {}).get(name)
            d = (q or {}).get("minus_first_last")
            out += f" {cell(q) if q else '-'}"
            if d and d.get("difference") is not None and d["difference"] != 0:
                dci = d.get("ci95") or ["-", "-"]
                out += f"; {d['difference']:+.3f} [{dci[0]}, {dci[1]}]"
            out += " |"
        return out

    for size, block in sorted(results.get("pooled", {}).items(), key=lambda kv: int(kv[0])):
        lines += [f"## Frozen policy, linear head on pooled features, first {size} train trees", "",
                  f"| features | dims | train nodes | l2 | held-out AUC [95 % CI] | minus self-eval [paired CI] | Brier |{also_head}",
                  f"|---|---|---|---|---|---|---|{also_rule}"]
        for name in POOLINGS:
            if name in block:
                r = block[name]
                lines.append(f"| {name} | {r['features']} | {r['train_nodes']} | {r['l2']} | "
                             f"{cell(r['heldout'], r['minus_self_eval'])} | {r['heldout']['brier']} |{also_cells(r)}")
        lines.append("")
    for key, record in results.get("top", {}).items():
        lines += [f"## Last {record['top']} decoder layer(s) + norm + head trained, lr {record['learning_rate']:g}", "",
                  f"Fitted on the first {record['fit_trees']} train trees ({record['fit_nodes']} nodes on "
                  f"{record['fit_paths']} paths, batches of {record['batch_size']} paths, AdamW, bf16 autocast, the head "
                  f"started from the frozen fit with l2 {record['l2']}, kept in the loss); validation: the other "
                  f"{record['validation_trees']} train trees ({record['validation_nodes']} nodes). Epoch 0 = the frozen "
                  f"model. **Chosen by validation: epoch {record['chosen_epoch']}.**", "",
                  f"| epoch | seconds | train loss | validation AUC | held-out AUC [95 % CI] | minus self-eval [paired CI] | Brier |{also_head}",
                  f"|---|---|---|---|---|---|---|{also_rule}"]
        for e in record["epochs"]:
            mark = " (chosen)" if e["epoch"] == record["chosen_epoch"] else ""
            lines.append(f"| {e['epoch']}{mark} | {e['seconds']} | {e['train_loss'] if e['train_loss'] is not None else '-'} | "
                         f"{(e['validation'] or {}).get('auc')} | {cell(e['heldout'], e['minus_self_eval'])} | {e['heldout']['brier']} |{also_cells(e)}")
        lines.append("")
    if results.get("notes"):
        lines += ["## Notes", "", results["notes"], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="runs/value_data", help="bench_value_data's folder (trees); results go here")
    parser.add_argument("--model", default="smollm2-135m", help="the trees' policy (the value model's backbone)")
    parser.add_argument("--train-searches", default="train_trees", help="as bench_value_data: train tree folders under WORK, in order")
    parser.add_argument("--top", type=int, default=2, help="states stored for the last TOP layers; trains 1..TOP of them")
    parser.add_argument("--sizes", default="448", help="pooled probes: training sizes (the first N train trees)")
    parser.add_argument("--fit-trees", type=int, default=384, help="top layers: fitted on the first N train trees, the rest validate")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning-rates", default="3e-5", help="comma list; one run per (layers, lr)")
    parser.add_argument("--batch-size", type=int, default=16, help="paths per optimiser step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--also-heldout", default="", help="comma list of further search folders (trees.jsonl) of problems no "
                        "train tree saw, each scored as one more held-out set (e.g. bench_value's mcts_default trees)")
    parser.add_argument("--sections", default="pooled,top", help="pooled, top")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report from WORK/value_top_layers.json")
    parser.add_argument("--publish", action="store_true", help="write benchmarks/value_top_layers.md + .json instead of WORK's")
    args = parser.parse_args(argv)
    work = Path(args.work)
    results_path = work / "value_top_layers.json"
    results: dict[str, Any] = json.loads(results_path.read_text(encoding="utf-8")) if results_path.exists() else {}
    bench = bench_value_data()

    def log(message: str) -> None:
        print(f"[probe_value_top_layers] {message}", flush=True)

    if not args.report_only:
        searches, train_trees, heldout_trees = bench.load_tree_sets(work, args.train_searches)
        if args.fit_trees >= len(train_trees):
            raise UserError(f"--fit-trees {args.fit_trees}: {', '.join(searches)} under {work} hold {len(train_trees)} trees; "
                            "some must be left to validate on")
        before = results.get("train_searches", searches)
        if searches[: len(before)] != before:
            results = {}  # other trees: nothing measured belongs to them
        # (folders appended: the first N trees stay the first, so every record stands; each top record
        # names its own fit and validation trees)
        heldout_table = bench.node_table(heldout_trees)
        results.update({"command": " ".join(["scripts/probe_value_top_layers.py", *(argv if argv is not None else sys.argv[1:])]),
                        "commit": source_commit(REPO), "machine": bench.machine(), "work": str(work), "model": args.model,
                        "train_searches": searches, "train_trees": len(train_trees), "heldout_trees": len(heldout_trees),
                        "heldout_nodes": sum(e["label"] is not None for e in heldout_table)})
        train_table = bench.node_table(train_trees)
        heldout = {"trees": heldout_trees, "table": heldout_table,
                   "entries": load_states(bench, work, "heldout", args.model, heldout_trees, heldout_table, args.top, log)}
        train = {"trees": train_trees, "table": train_table,
                 "entries": load_states(bench, work, "train", args.model, train_trees, train_table, args.top, log)}
        also, results["also_heldout"] = {}, {}
        for folder in [f.strip() for f in args.also_heldout.split(",") if f.strip()]:
            trees = bench.load_trees(Path(folder) / "trees.jsonl")
            table = bench.node_table(trees)
            name = "_".join(Path(folder).parts[-2:])
            also[name] = {"trees": trees, "table": table,
                          "entries": load_states(bench, work, f"also_{name}", args.model, trees, table, args.top, log)}
            results["also_heldout"][name] = {"folder": folder, "trees": len(trees),
                                             "nodes": sum(e["label"] is not None for e in table)}
        import torch

        _, backbone, _ = bench.load_backbone(args.model)
        sections = {s.strip() for s in args.sections.split(",") if s.strip()}
        if "pooled" in sections:
            runner = TopLayers(backbone, args.top, torch.zeros(backbone.config.hidden_size))
            pooled_section(bench, train, heldout, also, [int(s) for s in args.sizes.split(",") if s.strip()], runner, results, log)
            atomic_write_json(results_path, results)
        if "top" in sections:
            for top in range(1, args.top + 1):
                for learning_rate in [float(s) for s in args.learning_rates.split(",") if s.strip()]:
                    if f"top{top}_lr{learning_rate:g}" in results.get("top", {}):
                        continue
                    top_section(bench, train, heldout, also, backbone, args.top, top, args.fit_trees, args.epochs, learning_rate,
                                args.batch_size, args.seed, results, log)
                    atomic_write_json(results_path, results)
        log("all done")
    if not results:
        raise UserError(f"{results_path}: nothing measured yet; run without --report-only first")
    notes = work / "TOP_LAYERS.md"
    if notes.exists():
        results["notes"] = notes.read_text(encoding="utf-8").strip()
    bench.write_report(results, report(results), work, "value_top_layers", args.publish, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
