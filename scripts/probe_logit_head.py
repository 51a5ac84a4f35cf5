"""Can the policy's own next-token logits carry the value head? A probe on bench_value_data's features.

The frozen value model is a linear head on the policy's last hidden state h at a step's last
token: v = tanh(w . h). SmolLM2 ties its output layer to its embeddings E, so the logit of token k
there is e_k . h, and vLLM can return the logprobs of chosen token ids at every generated position
(`SamplingParams.logprob_token_ids`, at most 128 ids). The logprob of token k one position after the
step's last token is e_k . h - logsumexp(E h); centred over the K chosen ids the logsumexp cancels, so
    v = tanh(a . (c_k)),  c_k = logit_k - mean_j logit_j   (K - 1 free directions of h)
would be a value head read off the generation call itself: no second engine, no extra forward pass
(the one thing that could take value-guided search to flat sampling's tokens/s on this CPU,
benchmarks/value.md). This script measures what restricting the head to K token directions costs
in ranking quality, before any engine work: on WORK/features_{train,heldout}.pt of
scripts/bench_value_data.py (h at each step node of the train and held-out trees), the head on h
against heads on K centred logits, K in --ks, the ids chosen
- `random`: K ids drawn uniformly from the vocabulary (seeded);
- `pursuit`: K ids picked greedily (orthogonal matching pursuit, train features only) so that the
  centred embeddings e_k - mean span the full head w fitted on h.
Target: the verified outcome; l2 by 4-fold cross-validation over train trees (as bench_value_data).
No generation runs here (features exist); about a minute.

    .venv/bin/python scripts/probe_logit_head.py --work runs/value_data --trees 256
    .venv/bin/python scripts/probe_logit_head.py --work runs/value_data --trees 256 --publish   # benchmarks/logit_head.{md,json}
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mcts_po.io_utils import UserError, atomic_write_json, atomic_write_text  # noqa: E402
from mcts_po.precision import source_commit  # noqa: E402


def bench_value_data():
    """scripts/bench_value_data.py as a module (its targets, head fit, l2 choice and AUC intervals)."""
    spec = importlib.util.spec_from_file_location("bench_value_data", REPO / "scripts" / "bench_value_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def embeddings(model: str):
    """The policy's input embeddings E (= its output layer when tied), float32, and whether they are tied."""
    from transformers import AutoModelForCausalLM

    from mcts_po.models import resolve_model

    lm = AutoModelForCausalLM.from_pretrained(resolve_model(model))
    tied = lm.get_output_embeddings().weight.data_ptr() == lm.get_input_embeddings().weight.data_ptr()
    return lm.get_input_embeddings().weight.detach().float(), tied


def pursuit_ids(E, w, k: int) -> list[int]:
    """K token ids whose centred embeddings, by orthogonal matching pursuit, best span the head w."""
    import torch

    centred = E - E.mean(0, keepdim=True)
    norms = centred.norm(dim=1).clamp(min=1e-6)
    chosen: list[int] = []
    residual = w.clone()
    for _ in range(k):
        scores = (centred @ residual).abs() / norms
        if chosen:
            scores[chosen] = -1.0
        chosen.append(int(scores.argmax()))
        basis = centred[chosen].T  # [H, k]
        coefficients = torch.linalg.lstsq(basis, w.unsqueeze(1)).solution
        residual = w - (basis @ coefficients).squeeze(1)
    return chosen


def centred_logits(h, E, ids: list[int]):
    """logit_k - mean over the ids (what K logprobs give once their common logsumexp is removed)."""
    logits = h @ E[ids].T
    return logits - logits.mean(1, keepdim=True)


def probe(bench, name: str, train, heldout, rows: list[int], targets, log) -> dict[str, Any]:
    """Fit (l2 by CV) and score on the held-out nodes; features standardised by the train rows' scale."""
    import torch

    x, hx = train["x"], heldout["x"]
    scale = x[rows].std(0).clamp(min=1e-6)
    x, hx = x / scale, hx / scale
    started = time.monotonic()
    w, l2, _ = bench.fit_probe(x, targets, train["table"], rows)
    scores = torch.tanh(hx @ w).tolist()
    record = {"features": int(x.shape[1]), "l2": l2, "seconds": round(time.monotonic() - started, 1),
              "heldout": bench.quality(heldout["table"], scores, probability=False),
              "minus_self_eval": bench.auc_difference(heldout["table"], scores)}
    log(f"{name}: AUC {record['heldout']['auc']} {record['heldout']['auc_ci95']} (l2 {l2}, {record['features']} features)")
    return record


def report(results: dict[str, Any]) -> str:
    lines = ["# A value head read off the policy's logits: what K token directions cost", "",
             f"Written by `scripts/probe_logit_head.py` ({results['command']}), commit {results['commit']}; {results['machine']}. "
             f"Features of `{results['work']}` (scripts/bench_value_data.py: the frozen policy's last hidden state h at each step "
             f"node), first {results['trees']} train trees, target the verified outcome, l2 by 4-fold CV over train trees; "
             f"held-out AUC against the subtree outcome with a 95 % bootstrap interval over held-out trees. "
             f"Output layer tied to the embeddings: {results['tied']}.", "",
             "| head on | K token ids | features | held-out nodes | AUC [95 % CI] | minus self-eval [paired CI] | Brier |",
             "|---|---|---|---|---|---|---|"]
    for key, record in results["probes"].items():
        q, d = record["heldout"], record.get("minus_self_eval") or {}
        ci = q.get("auc_ci95") or ["-", "-"]
        dci = d.get("ci95") or ["-", "-"]
        diff = f"{d['difference']:+.3f} [{dci[0]}, {dci[1]}]" if d.get("difference") is not None else "-"
        choice, k = (key, "-") if key == "hidden" else key.split("_")
        what = "h (the shipped frozen head)" if key == "hidden" else f"centred logits, ids by {choice}"
        lines.append(f"| {what} | {k} | {record['features']} | {q['nodes']} ({q['good']} good) | {q['auc']} [{ci[0]}, {ci[1]}] | {diff} | {q['brier']} |")
    lines += ["", reading(results), ""]
    return "\n".join(lines)


def reading(results: dict[str, Any]) -> str:
    """What the table says, from its own numbers."""
    probes = results["probes"]
    full = probes["hidden"]["heldout"]["auc"]
    pursuit = {int(k.split("_")[1]): r["heldout"]["auc"] for k, r in probes.items() if k.startswith("pursuit_")}
    random_ = {int(k.split("_")[1]): r["heldout"]["auc"] for k, r in probes.items() if k.startswith("random_")}
    if not pursuit:
        return ""
    close = [k for k in sorted(pursuit) if pursuit[k] >= full - 0.01]
    return (f"The head on h scores {full}. Ids chosen by pursuit score {', '.join(f'{pursuit[k]} at K = {k}' for k in sorted(pursuit))}"
            + (f"; from K = {close[0]} on within 0.01 of the full head" if close else "")
            + f". Random ids score {', '.join(f'{random_[k]} (K = {k})' for k in sorted(random_))}: which tokens are read matters, "
            "and the pursuit must be fitted with the head. Ranking quality is not what stops a value read off the "
            "generation call's logprobs; what it would take is in docs/value_search.md.")


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="runs/value_data", help="bench_value_data's folder (features_*.pt)")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--trees", type=int, default=256, help="train on the first N train trees")
    parser.add_argument("--ks", default="16,32,64,128", help="numbers of token ids (vLLM allows at most 128)")
    parser.add_argument("--seed", type=int, default=0, help="the random ids' seed")
    parser.add_argument("--publish", action="store_true", help="write benchmarks/logit_head.md + .json")
    args = parser.parse_args(argv)
    work = Path(args.work)
    for name in ("features_train.pt", "features_heldout.pt"):
        if not (work / name).exists():
            raise UserError(f"{work / name}: missing; run scripts/bench_value_data.py --work {work} first")
    bench = bench_value_data()

    def log(message: str) -> None:
        print(f"[probe_logit_head] {message}", flush=True)

    train, heldout = torch.load(work / "features_train.pt"), torch.load(work / "features_heldout.pt")
    rows = [i for i, e in enumerate(train["table"]) if e["tree"] < args.trees]
    if not rows or max(train["table"][i]["tree"] for i in rows) + 1 < args.trees:
        raise UserError(f"{work / 'features_train.pt'} holds fewer than {args.trees} train trees")
    targets = bench.targets_of(train["table"], "outcome")
    E, tied = embeddings(args.model)
    h, hh = train["features"].float(), heldout["features"].float()
    results: dict[str, Any] = {"command": " ".join(["scripts/probe_logit_head.py", *(argv if argv is not None else sys.argv[1:])]),
                               "commit": source_commit(REPO), "machine": bench.machine(), "work": str(work),
                               "trees": args.trees, "train_nodes": len(rows), "tied": tied, "probes": {}}
    results["probes"]["hidden"] = probe(bench, "hidden", {"x": h, "table": train["table"]},
                                        {"x": hh, "table": heldout["table"]}, rows, targets, log)
    # the full head's direction in h space, for the pursuit (fitted on train rows only, unscaled h)
    fit = [i for i in rows if targets[i] is not None]
    w_full = bench.fit_head(h[fit], [targets[i] for i in fit], results["probes"]["hidden"]["l2"])
    generator = torch.Generator().manual_seed(args.seed)
    for k in [int(s) for s in args.ks.split(",") if s.strip()]:
        for choice in ("random", "pursuit"):
            ids = (torch.randperm(E.shape[0], generator=generator)[:k].tolist() if choice == "random"
                   else pursuit_ids(E, w_full, k))
            record = probe(bench, f"{choice}_{k}", {"x": centred_logits(h, E, ids), "table": train["table"]},
                           {"x": centred_logits(hh, E, ids), "table": heldout["table"]}, rows, targets, log)
            record["token_ids"] = ids
            results["probes"][f"{choice}_{k}"] = record
    target = REPO / "benchmarks" / "logit_head" if args.publish else work / "logit_head"
    atomic_write_json(target.with_suffix(".json"), results)
    atomic_write_text(target.with_suffix(".md"), report(results))
    log(f"report: {target.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
